"""videxp-sample: complete test videos with a model and an inference strategy, written to disk."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from videxp.inference.loop import run_sampling
from videxp.inference.shards import rank_from_env, resolve_shard
from videxp.models.loading import build_generator, device_from
from videxp.utils.provenance import provenance

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Sample per `cfg.sample`; returns the loop's summary (paths, counts, manifest)."""
    if cfg.get("benchmark") is not None:  # experiment=i2v_benchmark: starting frames -> one video each
        from videxp.benchmark.generate import run_benchmark_sample

        return run_benchmark_sample(cfg)
    if cfg.get("naive_finetune") is not None:  # experiment=naive_finetune: base vs per-video fine-tuned
        from videxp.finetune.naive import run_naive_finetune

        return run_naive_finetune(cfg)
    s = cfg.sample
    shard, num_shards = resolve_shard(s.num_shards, s.shard, s.distributed)
    rank, world = rank_from_env(s.distributed)
    if world > 1 and str(cfg.device) == "auto" and torch.cuda.is_available():
        device = torch.device("cuda", rank % torch.cuda.device_count())  # one GPU per rank
    else:
        device = device_from(cfg.device)
    if cfg.ckpt_path is None:
        torch.manual_seed(cfg.seed)  # random weights: identical in every shard / process
    datamodule = instantiate(cfg.dataset)
    dataset = datamodule.dataset(cfg.sample.split)
    generator, loaded = build_generator(cfg.model, cfg.ckpt_path, device)
    inference = OmegaConf.to_container(cfg.inference, resolve=True)
    manifest = {
        "format": "videxp.samples/1",
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "split": cfg.sample.split,
        "checkpoint": loaded.get("checkpoint"),
        "checkpoint_step": loaded.get("step"),
        "seed_rule": "derive_seed(seed, video, sample, step)",
        "provenance": provenance(device),
    }
    summary = run_sampling(
        generator,
        dataset,
        inference=inference,
        out_dir=s.out_dir,
        num_samples=s.num_samples,
        batch_size=s.batch_size,
        start_index=s.start_index,
        stop_index=s.stop_index,
        seed=cfg.seed,
        video_format=s.video_format,
        fps=s.fps,
        grid_videos=s.grid_videos,
        manifest=manifest,
        num_samples_total=s.num_samples_total,
        num_shards=num_shards,
        shard=shard,
        schedule_png=s.schedule_png,
    )
    print(f"samples: {summary['samples_dir']} ({summary['written']} new, {summary['skipped']} done before)")
    if s.finalise:
        summary["finalise"] = finalise_shard(cfg, summary, dataset, device)
    return summary


def finalise_shard(cfg: DictConfig, summary: dict, dataset, device) -> dict:
    """Save this shard's partial metric state, then finalise the run if every shard is done."""
    from videxp.metrics.finalise import build_metrics, finalise, save_partial
    from videxp.weights import WeightsMissingError

    samples_dir, plan, part = Path(summary["samples_dir"]), summary["plan"], summary["part"]
    try:
        metrics = build_metrics(cfg)
    except Exception as e:  # noqa: BLE001 - only missing weights are tolerated, see below
        cause = e
        while cause is not None and not isinstance(cause, WeightsMissingError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        log.warning("metrics not computed (samples are complete): %s", cause)
        print(f"metrics: skipped, {str(cause).splitlines()[0]} (score later with videxp-evaluate)")
        return {"status": "skipped", "reason": str(cause)}
    save_partial(cfg, samples_dir, plan, part, dataset, device, metrics=metrics)
    status = finalise(cfg, samples_dir, plan, part, dataset, device)
    if status["status"] == "waiting":
        print(f"metrics: waiting for shard(s) {status['missing']} of {plan.num_shards}")
    elif status["status"] == "busy":
        print("metrics: another process is finalising this run")
    else:
        print(f"metrics: {Path(cfg.sample.out_dir) / 'metrics.json'} ({status['status']})")
    return status


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
