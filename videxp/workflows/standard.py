"""The standard workflow: sample test videos with one model and strategy (sharded, then scored once), and
evaluate a samples folder or two video folders."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from videxp.inference import STRATEGIES
from videxp.inference.loop import manifest_header, run_sampling
from videxp.inference.shards import rank_from_env, resolve_shard
from videxp.metrics.base import Metric
from videxp.metrics.lpips import LPIPS
from videxp.models.loading import RANDOM, build_generator, device_from
from videxp.scoring.finalise import finalise, save_partial
from videxp.scoring.folders import score_folders
from videxp.scoring.samples import score_samples
from videxp.scoring.selection import build_metrics, evaluate_settings
from videxp.weights.registry import WeightsMissingError
from videxp.workflows.base import Workflow

log = logging.getLogger(__name__)


class Standard(Workflow):
    """videxp-sample: complete the test videos of `cfg.dataset` (this shard's share), then score them;
    videxp-evaluate: score `eval_dir` against its dataset, or `fake_dir` against `real_dir`."""

    name = "standard"

    def sample(self, cfg: DictConfig) -> dict[str, Any]:
        """Sample per `cfg.sample`; returns the loop's summary (paths, counts, manifest, finaliser status)."""
        s = cfg.sample
        shard, num_shards = resolve_shard(s.num_shards, s.shard, s.distributed)
        rank, world = rank_from_env(s.distributed)
        if world > 1 and str(cfg.device) == "auto" and torch.cuda.is_available():
            device = torch.device("cuda", rank % torch.cuda.device_count())  # one GPU per rank
        else:
            device = device_from(cfg.device)
        if cfg.ckpt_path in (None, RANDOM):
            torch.manual_seed(
                cfg.seed
            )  # random weights (or random parts): identical in every shard / process
        datamodule = instantiate(cfg.dataset)
        dataset = datamodule.dataset(cfg.sample.split, evaluation=True)
        generator, loaded = build_generator(cfg.model, cfg.ckpt_path, device)
        inference = OmegaConf.to_container(cfg.inference, resolve=True)
        manifest = manifest_header(OmegaConf.to_container(cfg.dataset, resolve=True), s.split, loaded, device)
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
            embed=adaptive_embedder(inference),
        )
        print(
            f"samples: {summary['samples_dir']} ({summary['written']} new, {summary['skipped']} done before)"
        )
        if s.finalise:
            summary["finalise"] = finalise_shard(cfg, summary, dataset, device)
        return summary

    def evaluate(self, cfg: DictConfig, metrics: Mapping[str, Metric] | None = None) -> dict[str, dict]:
        """Evaluate with every metric in `cfg.metric` (or the given `metrics` objects); {name: result}.

        Exactly one input mode: `eval_dir=` (a samples folder of videxp-sample, scored against the dataset
        clips its manifest names) or `real_dir=` + `fake_dir=` (two video folders).
        """
        eval_dir, real_dir, fake_dir = cfg.get("eval_dir"), cfg.get("real_dir"), cfg.get("fake_dir")
        if (eval_dir is not None) == (real_dir is not None or fake_dir is not None):
            raise ValueError(
                "give exactly one input mode: eval_dir=<samples folder> or real_dir=<folder> "
                f"fake_dir=<folder> (got eval_dir={eval_dir}, real_dir={real_dir}, fake_dir={fake_dir})"
            )
        if eval_dir is None and (real_dir is None or fake_dir is None):
            raise ValueError(f"folder mode needs both real_dir and fake_dir (got {real_dir}, {fake_dir})")
        built = build_metrics(cfg, metrics)
        settings = evaluate_settings(cfg)
        device = device_from(cfg.device)
        if eval_dir is not None:
            return score_samples(eval_dir, built, settings, settings.out_dir, device)
        return score_folders(real_dir, fake_dir, built, settings, settings.out_dir, device)


def adaptive_embedder(inference: Mapping[str, Any]):
    """LPIPS-AlexNet's frame embedding for FDM's adaptive schemes (`inference=adaptive-*`), else None."""
    if not getattr(STRATEGIES.get(str(inference["name"])), "adaptive", False):
        return None
    return LPIPS(net="alex").embed  # FDM's LpipsEmbedder(net="alex"); weights via videxp.weights


def finalise_shard(cfg: DictConfig, summary: dict, dataset, device) -> dict:
    """Save this shard's partial metric state, then finalise the run if every shard is done."""
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
