"""hydra/launcher=slurm|local: SLURM parameters reach submitit; a local submitit sweep runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest.mock import MagicMock, patch

import numpy as np
import submitit
from conftest import CONF_DIR, ROOT
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from hydra.types import HydraContext, RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from videxp.launcher import PinningMixin
from videxp.scoring import comparison
from videxp.video import write_video


def noop_task(cfg: DictConfig) -> None:
    """A picklable task function (submitit pickles the launcher with it)."""


def multirun_launcher(overrides: list[str], config_name: str = "train"):
    """(launcher, master config) as `<entry> -m <overrides>` builds them, without submitting anything."""
    setup_globals()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    cfg: DictConfig = loader.load_configuration(config_name, overrides, run_mode=RunMode.MULTIRUN)
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    context = HydraContext(config_loader=loader, callbacks=Callbacks())
    launcher.setup(hydra_context=context, task_function=noop_task, config=cfg)
    return launcher, cfg


def submit(launcher, job_overrides: list[list[str]]) -> MagicMock:
    """Run `launcher.launch` against a mocked submitit.AutoExecutor; return the mock."""
    with patch.object(submitit, "AutoExecutor", MagicMock()) as executor_cls:
        launcher.launch(job_overrides, 0)
    return executor_cls


def test_slurm_preset_passes_cluster_and_trainer_resources(tmp_path):
    launcher, cfg = multirun_launcher(
        [
            "hydra/launcher=slurm",
            "cluster=example",
            "trainer.devices=2",
            "++trainer.num_nodes=3",
            f"hydra.sweep.dir={tmp_path}",
        ]
    )
    # Hydra's plugin scan re-executes hydra_plugins modules, so compare class names, not class objects
    assert isinstance(launcher, PinningMixin) and type(launcher).__name__ == "SlurmLauncher"
    executor_cls = submit(launcher, [["seed=1"], ["seed=2"]])
    assert executor_cls.call_args.kwargs == {
        "cluster": "slurm",
        "folder": f"{tmp_path}/.submitit/%j",
        "slurm_max_num_timeout": 5,  # cluster/example.yaml
    }
    params = executor_cls.return_value.update_parameters.call_args.kwargs
    expected = {
        "slurm_partition": "gpu",
        "slurm_account": "my-lab",
        "slurm_qos": "normal",
        "gpus_per_node": 2,  # cluster default: = trainer.devices
        "tasks_per_node": 2,  # = trainer.devices
        "nodes": 3,  # = trainer.num_nodes
        "cpus_per_task": 6,
        "mem_gb": 64,
        "timeout_min": 2880,
        "slurm_array_parallelism": 16,
        "slurm_signal_delay_s": 120,
        "slurm_setup": list(cfg.cluster.setup),
        "name": "train",
    }
    assert {k: params[k] for k in expected} == expected
    assert "module load cuda/12.4" in params["slurm_setup"]
    jobs = executor_cls.return_value.map_array.call_args.args[1]
    assert [j[0] for j in jobs] == ["seed=1", "seed=2"]


def test_default_cluster_leaves_site_flags_out(tmp_path):
    launcher, _ = multirun_launcher(["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}"])
    executor_cls = submit(launcher, [[]])
    params = executor_cls.return_value.update_parameters.call_args.kwargs
    assert params["slurm_partition"] is None and params["slurm_account"] is None
    assert params["tasks_per_node"] == 1 and params["nodes"] == 1 and params["slurm_setup"] == []
    assert executor_cls.call_args.kwargs["slurm_max_num_timeout"] == 3


def test_local_preset_uses_the_pinning_local_launcher(tmp_path):
    launcher, _ = multirun_launcher(["hydra/launcher=local", f"hydra.sweep.dir={tmp_path}"], "evaluate")
    assert isinstance(launcher, PinningMixin) and type(launcher).__name__ == "LocalLauncher"
    executor_cls = submit(launcher, [[]])
    assert executor_cls.call_args.kwargs["cluster"] == "local"
    assert executor_cls.return_value.update_parameters.call_args.kwargs["tasks_per_node"] == 1


def _video_folders(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for name in ("real", "fake"):
        for i in range(2):
            write_video(root / name / f"clip_{i}.npy", rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    return root / "real", root / "fake"


def test_local_submitit_sweep_runs_and_compares(tmp_path):
    real, fake = _video_folders(tmp_path)
    env = {**os.environ, "VIDEXP_CACHE": str(tmp_path / "cache"), "VIDEXP_OFFLINE": "1"}
    # hydra_plugins/ of this checkout, also where the package install does not ship it
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "videxp.evaluate",
        "-m",
        "hydra/launcher=local",
        f"real_dir={real}",
        f"fake_dir={fake}",
        "metric=[psnr]",
        "run_name=sweep",
        "evaluate.last_frame=2,4",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "multirun" / "evaluate" / "sweep"
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1"]
    assert list((sweep / ".submitit").iterdir()), "jobs went through submitit"
    overrides = (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "run_name=sweep" in overrides  # pinned (here: the value given on the command line)
    # a multirun folder: one row per job, named by its overrides
    comp = comparison.compare_runs([sweep], out=tmp_path / "cmp")
    assert len(comp["runs"]) == 2, comp["runs"]
    assert len(set(comp["metrics"]["psnr"]["values"])) == 2
