"""Scoring two video folders: list videos by relative stem, pair them, and feed them in bounded batches."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from videxp.metrics.base import DistributionMetric, FrameMetric, Metric
from videxp.metrics.report import format_table, write_report
from videxp.scoring.selection import folder_frames
from videxp.utils.io import write_json
from videxp.utils.provenance import provenance
from videxp.video import CONTAINER_SUFFIXES, FRAME_SUFFIXES, VideoError, read_video, to_float
from videxp.video.walk import entries, walk

VIDEO_SUFFIXES = (*CONTAINER_SUFFIXES, ".gif", ".npy")
MAX_LISTED = 5  # ids named per side in a mismatch error


def _is_frame_folder(path: Path) -> bool:
    return any(p.suffix.lower() in FRAME_SUFFIXES for p in entries(path)[1])


def list_videos(folder: str | os.PathLike) -> dict[str, Path]:
    """{id: path} of every video under `folder`, sorted by id.

    Videos are files ending in .mp4/.avi/.mkv/.webm/.mov/.gif/.npy and folders that directly hold
    .png/.jpg frames (not searched further). The search is recursive and follows symlinks, each real
    folder once (a symlink cycle cannot multiply videos); hidden entries are skipped. The id is the path
    relative to `folder` without its suffix, with `/` separators (`cat/clip_001`).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such video folder")
    found: dict[str, Path] = {}

    def add(p: Path, vid: str) -> None:
        if vid in found:
            raise VideoError(f"{root}: two videos share the id {vid!r}: {found[vid].name} and {p.name}")
        found[vid] = p

    for _, dirs, files in walk(root):
        frame_folders = [d for d in dirs if _is_frame_folder(d)]
        for d in frame_folders:  # a video: not searched further
            add(d, d.relative_to(root).as_posix())
        dirs[:] = [d for d in dirs if d not in frame_folders]
        for f in files:
            if f.suffix.lower() in VIDEO_SUFFIXES:
                add(f, f.relative_to(root).with_suffix("").as_posix())
    if not found:
        raise VideoError(
            f"{root}: no videos found (looked for {', '.join(VIDEO_SUFFIXES)} files and frame folders)"
        )
    return dict(sorted(found.items()))


def pair_folders(real_dir: str | os.PathLike, fake_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """[(id, real path, fake path)] for two folders holding the same ids; ValueError naming the mismatch."""
    real, fake = list_videos(real_dir), list_videos(fake_dir)
    only_real = sorted(set(real) - set(fake))
    only_fake = sorted(set(fake) - set(real))
    if only_real or only_fake:

        def few(ids: list[str]) -> str:
            more = f" (+{len(ids) - MAX_LISTED} more)" if len(ids) > MAX_LISTED else ""
            return (", ".join(ids[:MAX_LISTED]) or "-") + more

        raise ValueError(
            f"frame metrics pair videos by id, but the folders differ: {len(only_real)} only in "
            f"{real_dir}: {few(only_real)}; {len(only_fake)} only in {fake_dir}: {few(only_fake)}"
        )
    return [(vid, real[vid], fake[vid]) for vid in real]


def folder_identity(folder: str | os.PathLike, videos: dict[str, Path]) -> dict:
    """A reference-set identity for caching: resolved folder, ids, and each file's size and mtime."""

    def stamp(p: Path) -> list[int]:
        files = entries(p, hidden=True)[1] if p.is_dir() else [p]
        st = [f.stat() for f in files]
        return [sum(s.st_size for s in st), max(s.st_mtime_ns for s in st)]

    return {
        "folder": str(Path(folder).resolve()),
        "videos": {vid: stamp(p) for vid, p in videos.items()},
    }


class _ClipBatcher:
    """Buffers decoded clips of one side of `run_folders` and feeds them as batches of one shape.

    Clips (uint8 [T, H, W, 3]) are grouped by shape; at most `size` are held in all (memory stays bounded
    whatever the folder size): when the buffer is full the largest group is fed. The first clip of each
    new shape is fed alone, so a shape error (e.g. too few frames for the protocol) names just its file.
    """

    def __init__(self, feed: Callable[[torch.Tensor, list[int]], None], size: int, side: str) -> None:
        if size < 1:
            raise ValueError(f"evaluate.batch_size must be >= 1, got {size}")
        self.feed, self.size, self.side = feed, size, side
        self.groups: dict[tuple[int, ...], list[tuple[np.ndarray, int, Path]]] = {}
        self.shapes: set[tuple[int, ...]] = set()

    def add(self, clip: np.ndarray, index: int, path: Path) -> None:
        """Queue one clip uint8 [T, H, W, 3] (video index, file); feeds a batch when one is due."""
        shape = tuple(clip.shape)
        self.groups.setdefault(shape, []).append((clip, index, path))
        if shape not in self.shapes:  # probe: a new shape goes alone
            self.shapes.add(shape)
            self._flush(shape)
        elif sum(len(g) for g in self.groups.values()) >= self.size:
            self._flush(max(self.groups, key=lambda k: len(self.groups[k])))

    def flush_all(self) -> None:
        """Feed every queued clip."""
        for shape in list(self.groups):
            self._flush(shape)

    def _flush(self, shape: tuple[int, ...]) -> None:
        items = self.groups.pop(shape, [])
        if not items:
            return
        batch = to_float(np.stack([c for c, _, _ in items]))  # [B, T, C, H, W] in [-1, 1]
        batch.add_(1.0).mul_(0.5)  # [0, 1] in place (= to_unit without another copy)
        try:
            self.feed(batch, [i for _, i, _ in items])
        except ValueError as e:
            if len(items) == 1:
                raise
            files = ", ".join(str(p) for _, _, p in items)
            raise ValueError(f"{e} (while scoring {self.side} batch of {len(items)}: {files})") from e


def score_folders(
    real_dir: str | os.PathLike,
    fake_dir: str | os.PathLike,
    metrics: Mapping[str, Metric],
    settings: DictConfig,
    out_dir: str | os.PathLike,
    device: torch.device | str = "cpu",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, dict]:
    """Score the videos of `fake_dir` against those of `real_dir`; write metrics.json into `out_dir`, print
    the table, return {metric: result}. `extra` keys go into metrics.json as they are.

    Frame metrics (PSNR, SSIM, ...) need both folders to hold the same ids (relative stems) with frames of
    equal size, and equal lengths unless `evaluate.last_frame` is set (then frames [first_frame, last_frame)
    of each pair are scored, which both must hold); distribution metrics (FVD) take the two sets
    separately, so counts may differ. With FVD a flat `fvd.json` (workflow W1 fields) is written beside
    `metrics.json`.
    """
    real_dir, fake_dir, out_dir = Path(real_dir), Path(fake_dir), Path(out_dir)
    dist = {n: m for n, m in metrics.items() if isinstance(m, DistributionMetric)}
    paired = {n: m for n, m in metrics.items() if n not in dist}
    reals, fakes = list_videos(real_dir), list_videos(fake_dir)
    real_ids = {vid: i for i, vid in enumerate(reals)}
    fake_ids = {vid: i for i, vid in enumerate(fakes)}
    for metric in dist.values():
        metric.set_reference_identity(folder_identity(real_dir, reals))
        metric.video_labels["reference"].update({i: str(reals[v]) for v, i in real_ids.items()})  # for errors
        metric.video_labels["generated"].update({i: str(fakes[v]) for v, i in fake_ids.items()})

    def feed_real(batch: torch.Tensor, ids: list[int]) -> None:
        """Reference clips [B, T, C, H, W] in [0, 1] → every distribution metric."""
        batch = batch.to(device)
        for metric in dist.values():
            metric.update_real(batch, video_index=ids)

    def feed_fake(batch: torch.Tensor, ids: list[int]) -> None:
        """Generated clips [B, T, C, H, W] in [0, 1] → every distribution metric."""
        batch = batch.to(device)
        for metric in dist.values():
            metric.update_fake(batch, video_index=ids, sample_index=[0] * len(ids))

    size = int(settings.batch_size)
    real_batches = _ClipBatcher(feed_real, size, "reference")
    fake_batches = _ClipBatcher(feed_fake, size, "generated")

    scored: set[tuple[int, int]] = set()
    timing = {"decode": 0.0, "score": 0.0}  # seconds spent reading files vs converting and scoring

    def decode(path: Path) -> np.ndarray:
        start = time.perf_counter()
        frames = read_video(path)  # [T, H, W, 3] uint8
        timing["decode"] += time.perf_counter() - start
        return frames

    start = time.perf_counter()
    if paired:
        for vid, rpath, fpath in pair_folders(real_dir, fake_dir):
            real_u8, fake_u8 = decode(rpath), decode(fpath)  # [T, H, W, 3] uint8
            explicit = settings.last_frame is not None
            if real_u8.shape[1:] != fake_u8.shape[1:] or (real_u8.shape != fake_u8.shape and not explicit):
                raise ValueError(
                    f"paired videos differ in shape: {rpath} {real_u8.shape} vs {fpath} {fake_u8.shape} "
                    "(frame metrics need equal frame sizes, and equal lengths unless evaluate.last_frame is "
                    "set)"
                )
            # frame metrics take uint8 (as x / 255) and convert inside their kernels; other metrics get
            # float32 in [0, 1]
            real = torch.from_numpy(real_u8).movedim(-1, 1).contiguous()  # [T, C, H, W] uint8
            fake = torch.from_numpy(fake_u8).movedim(-1, 1).contiguous()
            frames = folder_frames(settings, min(real.shape[0], fake.shape[0]), rpath)
            scored.add((frames.start, frames.stop))
            for metric in paired.values():
                pred, target = fake[None, frames.start : frames.stop], real[None, frames.start : frames.stop]
                if not isinstance(metric, FrameMetric):
                    pred, target = pred.float().div_(255.0), target.float().div_(255.0)
                metric.update(
                    pred.to(device),  # [1, F, C, H, W]
                    target.to(device),
                    video_index=[real_ids[vid]],
                    sample_index=[0],
                    frame_index=list(frames),
                )
            if dist:
                real_batches.add(real_u8, real_ids[vid], rpath)
                fake_batches.add(fake_u8, fake_ids[vid], fpath)
    else:
        for vid, path in reals.items():
            real_batches.add(decode(path), real_ids[vid], path)
        for vid, path in fakes.items():
            fake_batches.add(decode(path), fake_ids[vid], path)
    real_batches.flush_all()
    fake_batches.flush_all()

    results = {name: m.compute() for name, m in metrics.items()}
    timing["score"] = time.perf_counter() - start - timing["decode"]
    extra = {
        "real_dir": str(real_dir.resolve()),
        "fake_dir": str(fake_dir.resolve()),
        "num_real_files": len(reals),
        "num_fake_files": len(fakes),
        "scored_frames": sorted(scored)[0] if len(scored) == 1 else [list(s) for s in sorted(scored)],
        # decode: reading and decoding the files; score: conversion, metric updates and compute (serial)
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        **(extra or {}),
    }
    write_report(out_dir, results, metrics=metrics, provenance=provenance(device), extra=extra)
    fvd_name = "fvd" if "fvd" in dist else next(iter(dist), None)
    if fvd_name is not None:  # workflow W1's flat fvd.json
        res = results[fvd_name]
        write_json(
            out_dir / "fvd.json",
            {
                "fvd": res["value"],
                "num_real_videos": res.get("num_real"),
                "num_generated_videos": res.get("num_fake"),
                "real_features_shape": res.get("real_features_shape"),
                "generated_features_shape": res.get("generated_features_shape"),
                "real_videos_dir": str(real_dir.resolve()),
                "generated_videos_dir": str(fake_dir.resolve()),
                "protocol": res.get("protocol"),
            },
        )
    print(format_table(results))
    print(f"time: decoding {timing['decode']:.2f} s, scoring {timing['score']:.2f} s")
    print(f"metrics: {out_dir / 'metrics.json'}")
    return results
