"""Finaliser bench: FVD from merged shard statistics vs recomputing from every sample file (random I3D)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing
from videxp.metrics.detector import random_i3d  # noqa: E402
from videxp.metrics.frechet import FeatureStats, frechet_from_stats  # noqa: E402
from videxp.metrics.fvd import FVD  # noqa: E402
from videxp.utils.io import write_npy  # noqa: E402
from videxp.video import read_video, to_float  # noqa: E402

T, SIZE, B = 10, 64, 8  # frames, frame size of the synthetic samples, clips per detector call
TARGET = 10.0  # merged finalisation at least 10x cheaper than recomputing


def synthetic(n: int, seed: int) -> np.ndarray:
    """uint8 clips [n, T, SIZE, SIZE, 3]: moving gradients plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE  # [SIZE, SIZE]
    t = np.arange(T)[None, :, None, None, None] / T  # [1, T, 1, 1, 1]
    phase = rng.uniform(0, 6.3, (n, 1, 1, 1, 1))
    x = 0.5 + 0.3 * np.sin(3 * xx[..., None] + 2 * yy[..., None] + 4 * t + phase)  # [n, T, S, S, 1]
    x = np.broadcast_to(x, (n, T, SIZE, SIZE, 3)) + 0.05 * rng.standard_normal((n, T, SIZE, SIZE, 3))
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def unit(clips: np.ndarray) -> torch.Tensor:
    """uint8 [n, T, H, W, 3] → float [n, T, 3, H, W] in [0, 1]."""
    return to_float(clips).add_(1.0).mul_(0.5)


def fvd_metric(det) -> FVD:
    return FVD(detector=det, use_cache=False, batch_size=B, num_real=1 << 20, num_fake=1 << 20, num_frames=T)


def fake_stats(fvd: FVD, files: list[Path], first: int) -> FeatureStats:
    """Generated-side statistics of sample files (read from disk, as a shard or a recompute does)."""
    for i in range(0, len(files), B):
        clips = np.stack([read_video(p) for p in files[i : i + B]])  # [b, T, H, W, 3]
        ids = list(range(first + i, first + i + len(clips)))
        fvd.update_fake(unit(clips), video_index=ids, sample_index=[0] * len(ids))
    return fvd.fake_stats[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--videos", type=int, default=8, help="generated samples in all")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the merged finalisation")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    warnings.simplefilter("ignore")
    det = random_i3d(batch_size=B)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i, clip in enumerate(synthetic(args.videos, seed=1)):
            files.append(tmp / f"sample_{i:04d}-0.npy")
            write_npy(files[-1], clip)
        real = fvd_metric(det)
        real.update_real(unit(synthetic(args.videos, seed=2)), video_index=list(range(args.videos)))
        real.real_stats.save(tmp / "real.npz")  # the finaliser's cached reference statistics

        # per shard (on the shard's machine, not part of finalisation): features -> saved FeatureStats
        t0 = time.perf_counter()
        bounds = np.linspace(0, args.videos, args.shards + 1).astype(int)
        for k in range(args.shards):
            lo, hi = bounds[k], bounds[k + 1]
            fake_stats(fvd_metric(det), files[lo:hi], lo).save(tmp / f"shard-{k}.npz")
        shard_s = time.perf_counter() - t0

        # finalise from merged shard statistics (reference from the cache)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            merged = FeatureStats()
            for k in range(args.shards):
                merged.merge(FeatureStats.load(tmp / f"shard-{k}.npz"))
            value_merged = frechet_from_stats(merged, FeatureStats.load(tmp / "real.npz"))
            times.append(time.perf_counter() - t0)
        merged_s = min(times)

        # finalise by recomputing from every sample file (reference from the cache)
        t0 = time.perf_counter()
        stats = fake_stats(fvd_metric(det), files, 0)
        value_full = frechet_from_stats(stats, FeatureStats.load(tmp / "real.npz"))
        full_s = time.perf_counter() - t0

    ratio = full_s / merged_s
    print(
        f"samples: {args.videos} clips of {T}x{SIZE}x{SIZE}, {args.shards} shards, random-weight I3D on CPU"
    )
    print(f"shard-side feature passes (all shards, once): {shard_s:.2f} s")
    print(f"finalise from merged shard stats:  {merged_s * 1e3:9.1f} ms  FVD {value_merged:.6f}")
    print(f"finalise by recomputing all files: {full_s * 1e3:9.1f} ms  FVD {value_full:.6f}")
    print(
        f"speed-up: {ratio:.1f}x (target >= {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'}); "
        f"|ΔFVD| = {abs(value_merged - value_full):.2e}"
    )


if __name__ == "__main__":
    main()
