"""The model-agnostic sampling loop: batches of videos, a strategy's index steps, a generator, files."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from videxp.inference.generator import Generator
from videxp.inference.strategies import build_strategy
from videxp.utils.io import write_json, write_npy
from videxp.utils.seeding import derive_seed
from videxp.video import to_uint8, write_grid, write_video

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# manifest entries that must agree before new samples join an existing folder
_IDENTITY_KEYS = ("dataset", "split", "inference", "model", "checkpoint", "seed")


def resolve_inference(params: dict[str, Any], generator: Generator) -> dict[str, Any]:
    """Fill `max_frames` from the generator; a requested value may only lower the generator's limit."""
    params = dict(params)
    limit = generator.capabilities.max_frames
    requested = params.get("max_frames")
    if requested is None:
        params["max_frames"] = limit
    elif int(requested) > limit:
        raise ValueError(f"inference.max_frames={requested} exceeds the generator's limit of {limit} frames")
    supported = generator.capabilities.strategies
    if supported is not None and params["name"] not in supported:
        raise ValueError(
            f"{type(generator).__name__} supports inference={list(supported)}, not {params['name']!r}"
        )
    return params


def complete_videos(
    generator: Generator,
    videos: torch.Tensor,  # [B, T, C, H, W] in [-1, 1]: real videos; only the observed prefix is read
    params: dict[str, Any],
    seed: int,
    video_indices: Sequence[int],
    sample_index: int,
    cond: dict[str, Any] | None = None,
) -> torch.Tensor:  # [B, T, C, H, W]: the observed prefix copied, every other frame generated
    """Run one inference strategy to completion for a batch of videos."""
    T, n_obs = int(params["video_length"]), int(params["obs_length"])
    if videos.shape[1] < T:
        raise ValueError(f"videos have {videos.shape[1]} frames; inference.video_length is {T}")
    out = torch.zeros_like(videos[:, :T])
    out[:, :n_obs] = videos[:, :n_obs]
    strategy = build_strategy(
        params["name"],
        video_length=T,
        obs_length=n_obs,
        max_frames=int(params["max_frames"]),
        step_size=int(params["step_size"]),
    )
    for step, (observed, target) in enumerate(strategy):
        seeds = [derive_seed(seed, v, sample_index, step) for v in video_indices]
        frames = generator.generate(out[:, observed], observed, target, cond or {}, seeds)
        if frames.shape != (out.shape[0], len(target), *out.shape[2:]):
            raise ValueError(f"generator returned {tuple(frames.shape)} for {len(target)} target frames")
        if not torch.isfinite(frames).all():
            raise ValueError(
                f"generator produced NaN/inf for videos {list(video_indices)}, step {step}: {target}"
            )
        out[:, target] = frames.to(out)
    return out


def batch_blocks(start: int, stop: int, batch_size: int) -> list[range]:
    """Contiguous blocks of video indices aligned to multiples of `batch_size` (so shards split cleanly)."""
    if batch_size < 1 or start < 0 or stop < start:
        raise ValueError(f"bad range/batch: start={start} stop={stop} batch_size={batch_size}")
    blocks, lo = [], start
    while lo < stop:
        hi = min((lo // batch_size + 1) * batch_size, stop)
        blocks.append(range(lo, hi))
        lo = hi
    return blocks


def sample_name(video: int, sample: int) -> str:
    """FDM's file stem: sample_<video:04d>-<k>."""
    return f"sample_{video:04d}-{sample}"


def _complete(path: Path, shape: tuple[int, ...]) -> bool:
    if not path.is_file():
        return False
    try:
        return np.load(path, mmap_mode="r").shape == shape
    except (ValueError, OSError):
        return False


def check_manifest(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """The existing manifest (if any) after checking that it describes the same sampling settings."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    new = json.loads(json.dumps({k: new.get(k) for k in _IDENTITY_KEYS}, default=str))  # tuples -> lists
    differ = [k for k in _IDENTITY_KEYS if old.get(k) != new[k]]
    if differ:
        raise ValueError(
            f"{path} holds samples made with different {', '.join(differ)}; "
            "use another sample.out_dir (or delete the old samples)"
        )
    return old


def run_sampling(
    generator: Generator,
    dataset: Dataset,
    *,
    inference: dict[str, Any],
    out_dir: str | Path,
    num_samples: int = 1,
    batch_size: int = 4,
    start_index: int = 0,
    stop_index: int | None = None,
    seed: int = 0,
    video_format: str = "gif",
    fps: float = 8.0,
    grid_videos: int = 4,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate `num_samples` completions of videos [start_index, stop_index) of `dataset`.

    Writes samples/sample_<video:04d>-<k>.npy (uint8 [T, H, W, C], observed prefix included),
    videos/<same>.<video_format>, a ground truth vs samples grid, and samples/manifest.json.
    Complete samples already on disk are skipped, so an interrupted run continues where it stopped.
    """
    out_dir = Path(out_dir)
    samples_dir, videos_dir = out_dir / "samples", out_dir / "videos"
    stop = len(dataset) if stop_index is None else min(int(stop_index), len(dataset))
    if not 0 <= start_index < stop:
        raise ValueError(f"empty video range [{start_index}, {stop}) of a split with {len(dataset)} videos")
    params = resolve_inference(inference, generator)
    manifest = {**(manifest or {}), "inference": params, "seed": seed, "num_samples": num_samples}
    old = check_manifest(samples_dir / MANIFEST, manifest)
    entries = {e["file"]: e for e in old.get("samples", [])}

    T = int(params["video_length"])
    blocks = batch_blocks(start_index, stop, batch_size)
    written = skipped = 0
    for block in tqdm(blocks, desc="sampling", unit="batch"):
        items = [dataset[i] for i in block]
        videos = torch.stack([it["video"] for it in items])  # [B, T, C, H, W]
        shape = (T, videos.shape[3], videos.shape[4], videos.shape[2])
        cond = {k: [it[k] for it in items] for k in ("label", "prompt") if k in items[0]}
        for k in range(num_samples):
            paths = [samples_dir / f"{sample_name(v, k)}.npy" for v in block]
            if all(_complete(p, shape) for p in paths):
                skipped += len(paths)
            else:
                out = complete_videos(generator, videos, params, seed, list(block), k, cond)
                for v, path, video in zip(block, paths, to_uint8(out.cpu()), strict=True):  # [T, H, W, C]
                    write_npy(path, video)
                    if video_format != "none":
                        write_video(videos_dir / f"{sample_name(v, k)}.{video_format}", video, fps=fps)
                written += len(paths)
            for v, path, it in zip(block, paths, items, strict=True):
                entries[path.name] = {"file": path.name, "video": v, "sample": k, "video_id": it["video_id"]}
    manifest["samples"] = sorted(entries.values(), key=lambda e: (e["video"], e["sample"]))
    write_json(samples_dir / MANIFEST, manifest)
    if grid_videos and video_format != "none":
        _write_grid(
            dataset,
            samples_dir,
            videos_dir,
            range(start_index, min(stop, start_index + grid_videos)),
            num_samples,
            T,
            video_format,
            fps,
        )
    log.info("sampling done: %d written, %d already complete, in %s", written, skipped, samples_dir)
    return {"written": written, "skipped": skipped, "samples_dir": str(samples_dir), "manifest": manifest}


def _write_grid(
    dataset,
    samples_dir: Path,
    videos_dir: Path,
    videos: range,
    num_samples: int,
    T: int,
    video_format: str,
    fps: float,
) -> Path:
    """Rows = videos; columns = ground truth, then each sample."""
    rows = []
    for v in videos:
        real = to_uint8(dataset[v]["video"][:T])  # [T, H, W, C]
        rows.append([real] + [np.load(samples_dir / f"{sample_name(v, k)}.npy") for k in range(num_samples)])
    path = videos_dir / f"grid_{videos.start:04d}-{videos.stop - 1:04d}.{video_format}"
    write_grid(path, rows, fps=fps)
    return path
