"""Multi-process training: metric merging over a gloo group, DDP training under Hydra, the FSDP config."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import TINY, compose_cfg
from hydra.utils import instantiate

from videxp.metrics import PSNR
from videxp.metrics.distributed import all_reduce_feature_stats, gather_frame_metric
from videxp.metrics.frechet import FeatureStats

WORLD = 2
VAL_VIDEOS = 3  # uneven shards over 2 ranks: videos [0, 2] and [1]


def _frames(video: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic (pred, target) pair [1, 4, 3, 8, 8] in [0, 1] for one video."""
    g = torch.Generator().manual_seed(video)
    return torch.rand(2, 1, 4, 3, 8, 8, generator=g, dtype=torch.float64).unbind(0)


def _features(rank: int) -> np.ndarray:
    """Rank `rank`'s feature vectors [5 + rank, 6] (uneven shards)."""
    return np.random.default_rng(rank).normal(size=(5 + rank, 6))


def _sample_metrics_values(world_size: int, rank: int) -> dict[str, float]:
    """What SampleMetrics logs at a validation end on `rank` of `world_size` (tiny FDM, fixed weights)."""
    over = [*TINY, f"callbacks.sample_metrics.num_videos={VAL_VIDEOS}"]
    over += ["model.sampling.timestep_respacing='2'"]
    cfg = compose_cfg("train", over, "unused")
    L.seed_everything(0)
    module = instantiate(cfg.model)
    callback = instantiate(cfg.callbacks.sample_metrics, log_video=False)
    trainer = SimpleNamespace(
        sanity_checking=False,
        datamodule=instantiate(cfg.dataset),
        global_rank=rank,
        world_size=world_size,
        is_global_zero=rank == 0,
    )
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    callback.on_validation_epoch_end(trainer, module)
    return logged


def _worker(rank: int, folder: str) -> None:
    """One rank: merge a FrameMetric and FeatureStats shard, run SampleMetrics' DDP path; pickle results."""
    torch.set_num_threads(1)  # one core per rank
    dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank, world_size=WORLD)
    try:
        metric = PSNR()
        for video in range(rank, VAL_VIDEOS, WORLD):
            pred, target = _frames(video)
            metric.update(pred, target, video_index=[video], sample_index=[0])
        merged = gather_frame_metric(metric)
        stats = all_reduce_feature_stats(FeatureStats().update(_features(rank)))
        out = {
            "psnr": merged.compute(),
            "local_videos": metric.compute()["num_videos"],  # the input is left alone
            "stats": (stats.count, stats.sum, stats.sum_sq),
            "logged": _sample_metrics_values(WORLD, rank),
        }
        with open(Path(folder) / f"rank{rank}.pkl", "wb") as f:
            pickle.dump(out, f)
    finally:
        dist.destroy_process_group()


def test_merge_helpers_and_sample_metrics_over_two_ranks(tmp_path):
    """Merged metrics on 2 gloo ranks equal the one-process values on the union, on every rank."""
    # fork: the ranks inherit the imported modules (spawn would re-import torch and videxp in each)
    mp.start_processes(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True, start_method="fork")
    results = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]

    single = PSNR()
    for video in range(VAL_VIDEOS):
        pred, target = _frames(video)
        single.update(pred, target, video_index=[video], sample_index=[0])
    expected = single.compute()
    one_pass = FeatureStats().update(np.concatenate([_features(r) for r in range(WORLD)]))
    logged_single = _sample_metrics_values(1, 0)
    assert set(logged_single) == {
        f"val/{m}{b}" for m in ("psnr", "ssim") for b in ("", "_repeat_last", "_blank")
    }  # the model, and the baselines on the same frames

    for rank, res in enumerate(results):
        assert res["psnr"]["value"] == expected["value"]
        assert res["psnr"]["num_videos"] == VAL_VIDEOS
        assert res["psnr"]["per_frame_mean"] == expected["per_frame_mean"]
        assert res["local_videos"] == len(range(rank, VAL_VIDEOS, WORLD))
        count, s, ss = res["stats"]
        assert count == one_pass.count
        np.testing.assert_allclose(s, one_pass.sum, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ss, one_pass.sum_sq, rtol=1e-12, atol=1e-12)
        assert res["logged"] == logged_single  # same value on every rank, equal to one process


def test_helpers_are_noops_without_a_process_group():
    assert not dist.is_initialized()
    metric = PSNR()
    pred, target = _frames(0)
    metric.update(pred, target, video_index=[0], sample_index=[0])
    assert gather_frame_metric(metric) is metric
    stats = FeatureStats().update(_features(0))
    assert all_reduce_feature_stats(stats) is stats and stats.count == 5


def _last_step(run: Path) -> int:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["global_step"]


def test_ddp_train_two_cpu_processes_then_resume_on_one(tmp_path):
    """`trainer=ddp` on 2 CPU processes (Lightning relaunches the Hydra command), then resume on 1."""
    common = [
        *TINY,
        "model.sampling.timestep_respacing='2'",
        "trainer.val_check_interval=4",
        "callbacks.last_checkpoint.every_n_train_steps=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core per rank

    # no run_name: rank 1's relaunched command must still land in rank 0's ${now:}-named run dir
    def train(*overrides: str) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [sys.executable, "-m", "videxp.train", *common, *overrides],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-4000:]
        return out

    out = train("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=4")
    runs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(runs) == 1, runs  # both ranks wrote into one run dir
    run = runs[0]
    assert _last_step(run) == 4
    assert (run / "checkpoints" / "best.ckpt").is_file()  # ModelCheckpoint(monitor=val/psnr) saw the metric
    metrics = (run / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val/psnr" in metrics and "val/ssim" in metrics
    assert out.stdout.count("(step 4)") == 2  # both ranks finished at the same step

    out = train(f"run_name={run.name}", "trainer=cpu", "trainer.max_steps=6")
    assert "(step 6)" in out.stdout
    assert _last_step(run) == 6


def test_fsdp_config_instantiates_a_strategy(tmp_path):
    """trainer=fsdp composes; its strategy node builds an FSDPStrategy wrapping the transformer blocks."""
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock
    from lightning.pytorch.strategies import FSDPStrategy

    from videxp.models.opensora.stdit3 import STDiT3Block

    checkpointing = "trainer.strategy.activation_checkpointing_policy=${trainer.strategy.auto_wrap_policy}"
    over = ["trainer=fsdp", checkpointing]
    cfg = compose_cfg("train", over, tmp_path)
    assert cfg.trainer.num_nodes == 1 and cfg.trainer.devices == 8
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert WanTransformerBlock in policy._module_classes and STDiT3Block in policy._module_classes
    checkpointed = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    assert checkpointed._module_classes == policy._module_classes
    assert strategy.sharding_strategy.name == "FULL_SHARD" and strategy._state_dict_type == "full"


def test_ddp_config_keys(tmp_path):
    """trainer=ddp keeps the keys the SLURM launcher reads (devices, num_nodes) and a DDPStrategy node."""
    from lightning.pytorch.strategies import DDPStrategy

    cfg = compose_cfg("train", ["trainer=ddp", "trainer.num_nodes=2"], tmp_path)
    assert cfg.trainer.devices == 4 and cfg.trainer.num_nodes == 2
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs == {"find_unused_parameters": False, "gradient_as_bucket_view": True}
    default = compose_cfg("train", [], tmp_path)
    assert default.trainer.num_nodes == 1 and default.trainer.strategy == "auto"
