"""Requeue and resume: a pinned run_name survives resubmission; a killed run resumes to the exact step."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

# Light imports only at the top: the training subprocess below imports this module for HoldOnce.
ROOT = Path(__file__).resolve().parents[2]


def test_override_helpers():
    from videxp.launcher import override_key, quote

    assert override_key("++a.b=1") == "a.b" and override_key("~x") == "x"
    assert quote("2024-01-02_03-04-05") == "2024-01-02_03-04-05"
    assert quote("my run, v2") == "'my run, v2'" and quote("it's") == "'it\\'s'"


def test_requeued_job_reuses_the_pinned_run_name(tmp_path):
    from conftest import CONF_DIR
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from test_launchers import multirun_launcher, submit

    from videxp.launcher import override_key

    # microseconds: a job composed again later (a requeue) would get another run_name without pinning
    stamp = "run_name=${now:%H-%M-%S-%f}"
    launcher, _ = multirun_launcher(["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}", stamp])
    executor_cls = submit(launcher, [["seed=1", stamp], ["seed=2", stamp]])
    _, overrides, *_ = executor_cls.return_value.map_array.call_args.args
    pinned = [o for o in overrides[0] if override_key(o) == "run_name"]
    assert len(pinned) == 1 and "${" not in pinned[0], overrides[0]
    assert [o for o in overrides[1] if override_key(o) == "run_name"] == pinned  # one run_name per sweep
    run_name = pinned[0].split("=", 1)[1]

    # preemption/timeout: submitit pickles launcher.checkpoint(...)'s resubmission and runs it later
    job_args = (list(overrides[0]), "hydra.sweep.dir", 0, "job_id_for_0", {})
    resubmission = pickle.loads(pickle.dumps(launcher.checkpoint(*job_args)))
    assert resubmission.args[0] == job_args[0]
    time.sleep(0.01)
    requeued = resubmission.function
    job_cfg = requeued.hydra_context.config_loader.load_sweep_config(requeued.config, resubmission.args[0])
    assert job_cfg.run_name == run_name
    # even composed from scratch (no resolver cache from the submitting process) the folder name is the same
    fresh = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    again = fresh.load_configuration("train", resubmission.args[0], run_mode=RunMode.RUN)
    assert again.run_name == run_name
    unpinned = fresh.load_configuration("train", ["seed=1", stamp], run_mode=RunMode.RUN)
    assert unpinned.run_name != run_name  # what a requeue would have done without pinning


def _last_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


class HoldOnce(L.Callback):
    """Loaded by the training subprocess below: when $VIDEXP_TEST_HOLD names a file, one step past the resume
    point (last.ckpt then holds exactly that step), write the step into the file and wait to be killed."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = trainer.global_step

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        marker = os.environ.get("VIDEXP_TEST_HOLD")
        if marker and trainer.global_step == self.start + 1:
            Path(marker).write_text(str(trainer.global_step))
            deadline = time.time() + 60
            while time.time() < deadline and not trainer.received_sigterm:
                time.sleep(0.05)


def test_killed_training_resumes_from_last_ckpt_to_the_exact_step(tmp_path):
    from conftest import TINY

    max_steps = 4
    cmd = [
        sys.executable,
        "-m",
        "videxp.train",
        *TINY,
        "run_name=fixed",
        "logger=csv",
        f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=1000",  # no validation: only training steps
        "trainer.log_every_n_steps=1",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        "+callbacks.hold._target_=test_requeue.HoldOnce",
    ]
    here = Path(__file__).resolve().parent  # this module (HoldOnce) and the conftest it imports
    env = {
        **os.environ,
        "VIDEXP_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(here), str(ROOT / "tests")]),
    }
    ckpt = tmp_path / "outputs" / "train" / "fixed" / "checkpoints" / "last.ckpt"
    marker = tmp_path / "held"
    for sig in (signal.SIGTERM, signal.SIGKILL):  # a preemption notice, then a hard kill
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env={**env, "VIDEXP_TEST_HOLD": str(marker)}, stdout=subprocess.DEVNULL
        )
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None and time.time() < deadline, "training ended before it was held"
            time.sleep(0.05)
        held = int(marker.read_text())
        proc.send_signal(sig)
        proc.wait(timeout=60)  # Lightning turns SIGTERM into a clean exit after the current step
        step = _last_step(ckpt)
        assert held <= step <= held + 1 and step < max_steps  # SIGTERM may finish the step in progress
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "resuming from" in out.stderr + out.stdout
    assert f"(step {max_steps})" in out.stdout
    assert _last_step(ckpt) == max_steps
    csvs = sorted((tmp_path / "outputs" / "train" / "fixed" / "csv").glob("version_*/metrics.csv"))
    assert len(csvs) == 3 and "lr-AdamW" in csvs[-1].read_text().splitlines()[0]  # LearningRateMonitor


def test_submitit_owns_requeue_and_checkpoints_follow_steps_and_wall_time(tmp_path, monkeypatch):
    from datetime import timedelta

    from conftest import TINY, compose_cfg
    from hydra.utils import instantiate
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from videxp import train

    cfg = compose_cfg("train", TINY, tmp_path)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert train._plugins(cfg) == {}
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # exported by submitit's sbatch script
    (env,) = train._plugins(cfg)["plugins"]
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    by_steps, by_time = instantiate(cfg.callbacks.last_checkpoint), instantiate(cfg.callbacks.time_checkpoint)
    assert by_steps._every_n_train_steps == 500 and by_time._train_time_interval == timedelta(minutes=30)
    for ckpt in (by_steps, by_time):  # both refresh the one checkpoints/last.ckpt a rerun resumes from
        assert ckpt.save_last and ckpt.dirpath == str(tmp_path / "checkpoints")
        assert ckpt._enable_version_counter is False
