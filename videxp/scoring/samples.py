"""Scoring a samples folder of videxp-sample against the reference clips of its dataset: the one loop."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from videxp.data.description import datamodule_from_description
from videxp.errors import ConfigError
from videxp.inference.loop import MANIFEST
from videxp.metrics.base import DistributionMetric, Metric
from videxp.metrics.baselines import Baselines, baselines_for
from videxp.metrics.report import format_table, write_report
from videxp.scoring.selection import clip_frames, reference_identity, scored_frames
from videxp.utils.provenance import provenance
from videxp.video import read_video, to_float, to_unit


def load_manifest(eval_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a samples folder; FileNotFoundError / ValueError naming it when absent or empty."""
    path = Path(eval_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{eval_dir} has no {MANIFEST}; point eval_dir at a samples/ folder of videxp-sample"
        )
    manifest = json.loads(path.read_text())
    if not manifest.get("samples"):
        raise ValueError(f"{path} lists no samples")
    return manifest


def reference_dataset(header: Mapping[str, Any], origin: str | os.PathLike) -> Any:
    """The dataset split a samples manifest (read from `origin`) was sampled from; its items hold the
    reference clips. The manifest's `dataset` is data: it is mapped onto videxp's data classes, never
    instantiated (`data.description`)."""
    if "dataset" not in header or "split" not in header:
        raise ConfigError(f"{origin}: no `dataset` / `split` entry; point at a manifest of videxp-sample")
    return datamodule_from_description(header["dataset"], origin).dataset(header["split"], evaluation=True)


def reference_clip(dataset: Any, video: int, T: int) -> torch.Tensor:
    """Frames [0, T) of dataset item `video` in [0, 1]: [T, C, H, W]."""
    return to_unit(dataset[video]["video"][:T])


def update_metrics(
    metrics: Mapping[str, Metric],
    pred: torch.Tensor,
    real: torch.Tensor | None,
    frames: range,
    video_index: Sequence[int],
    sample_index: Sequence[int],
    *,
    reference_side: bool = True,
) -> None:
    """Feed one batch of whole clips pred / real [B, T, C, H, W] in [0, 1] to every metric, on the frames
    each one scores. Distribution metrics take the reference side too only with `reference_side`."""
    T = pred.shape[1]
    for metric in metrics.values():
        fed = clip_frames(metric, frames, T)
        index = {"video_index": video_index, "sample_index": sample_index, "frame_index": list(fed)}
        p = pred[:, fed.start : fed.stop]  # [B, F, C, H, W]
        if isinstance(metric, DistributionMetric) and not reference_side:
            metric.update_fake(p, **index)
        else:
            metric.update(p, real[:, fed.start : fed.stop], **index)


def score_entries(
    samples_dir: Path,
    entries: Sequence[Mapping[str, Any]],
    dataset: Any,
    metrics: Mapping[str, Metric],
    frames: range,
    T: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    *,
    reference_side: bool = True,
    baselines: Baselines | None = None,
) -> None:
    """Score the samples `entries` ({file, video, sample}; samples of one video consecutive) with `metrics`.

    Frame metrics get (sample, reference clip) pairs; distribution metrics get the generated side, and
    the reference side too with `reference_side` (a sharded run feeds the references once, when it
    finalises). `baselines` are scored on the reference clips of the same videos.
    """
    needs_real = reference_side or baselines is not None
    needs_real = needs_real or any(not isinstance(m, DistributionMetric) for m in metrics.values())
    reference: dict[int, torch.Tensor] = {}  # the last video's clip, decoded once for all its samples
    for i in range(0, len(entries), batch_size):
        group = entries[i : i + batch_size]
        preds, reals = [], []
        for e in group:
            path = samples_dir / e["file"]
            video = read_video(path)  # [T, H, W, C] uint8
            if video.shape[0] != T:
                raise ValueError(f"{path}: {video.shape[0]} frames, the manifest says video_length={T}")
            preds.append(to_float(video))
            if needs_real:
                if e["video"] not in reference:
                    reference = {e["video"]: reference_clip(dataset, e["video"], T)}
                real = reference[e["video"]]  # [T, C, H, W]
                if tuple(video.shape[1:3]) != tuple(real.shape[2:]):
                    raise ValueError(
                        f"{path}: shape {video.shape} does not match the reference clip {tuple(real.shape)}"
                    )
                reals.append(real)
        pred = to_unit(torch.stack(preds)).to(device)  # [B, T, C, H, W] in [0, 1]
        real = torch.stack(reals).to(device) if reals else None  # [B, T, C, H, W] in [0, 1]
        videos, samples = [e["video"] for e in group], [e["sample"] for e in group]
        if baselines is not None:
            baselines.update(real, videos, frames)
        update_metrics(metrics, pred, real, frames, videos, samples, reference_side=reference_side)


def score_baselines(
    baselines: Baselines, dataset: Any, videos: Sequence[int], frames: range, T: int, batch_size: int
) -> dict[str, Any]:
    """Score `baselines` on the reference clips of `videos`; returns its `compute()`."""
    for i in range(0, len(videos), batch_size):
        group = list(videos[i : i + batch_size])
        real = torch.stack([reference_clip(dataset, v, T) for v in group])  # [B, T, C, H, W] in [0, 1]
        baselines.update(real, group, frames)
    return baselines.compute()


def samples_extra(
    samples_dir: Path, frames: range, header: Mapping[str, Any], num_files: int
) -> dict[str, Any]:
    """The metrics.json fields that say what was scored: folder, frames, file count, inference, checkpoint."""
    return {
        "eval_dir": str(Path(samples_dir).resolve()),
        "scored_frames": [frames.start, frames.stop],
        "num_files": num_files,
        "inference": header["inference"],
        "checkpoint": header.get("checkpoint"),
    }


def score_samples(
    eval_dir: str | os.PathLike,
    metrics: Mapping[str, Metric],
    settings: DictConfig,
    out_dir: str | os.PathLike,
    device: torch.device | str = "cpu",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, dict]:
    """Score a samples folder against the reference clips of its dataset; write metrics.json (with the
    baselines) into `out_dir`, print the table, return {metric: result}. `extra` goes into metrics.json."""
    eval_dir, out_dir = Path(eval_dir), Path(out_dir)
    manifest = load_manifest(eval_dir)
    frames = scored_frames(settings, manifest)
    dataset = reference_dataset(manifest, eval_dir / MANIFEST)
    T = int(manifest["inference"]["video_length"])
    baselines = baselines_for(settings, metrics, int(manifest["inference"]["obs_length"]))
    videos = [int(e["video"]) for e in manifest["samples"]]
    for metric in metrics.values():
        if isinstance(metric, DistributionMetric):
            metric.set_reference_identity(reference_identity(manifest, videos, frames, metric))
    score_entries(
        eval_dir,
        manifest["samples"],
        dataset,
        metrics,
        frames,
        T,
        int(settings.batch_size),
        device,
        baselines=baselines,
    )
    results = {name: m.compute() for name, m in metrics.items()}
    base = baselines.compute() if baselines is not None else None
    extra = {**samples_extra(eval_dir, frames, manifest, len(manifest["samples"])), **(extra or {})}
    write_report(
        out_dir, results, metrics=metrics, provenance=provenance(device), extra=extra, baselines=base
    )
    print(format_table(results, base))
    print(f"metrics: {out_dir / 'metrics.json'}")
    return results
