"""FVD bench: pipeline vs bare I3D videos/s, videos/s from mp4 folders, peak RSS vs N (stand-in detector)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing
from videxp.metrics.detector import Detector, random_i3d  # noqa: E402
from videxp.metrics.fvd import FVD  # noqa: E402
from videxp.video import to_float, write_video  # noqa: E402

B, T, SIZE = 8, 16, 64  # clips per batch, frames, frame size of the synthetic clips
RSS_NS = (64, 256, 1024)
PIPELINE_TARGET = 0.10  # pipeline at most 10% slower than the bare forward
RSS_TARGET = 0.10  # peak RSS at N=1024 at most 10% above N=64


def synthetic(n: int, seed: int) -> np.ndarray:
    """Decoded-like uint8 clips [n, T, SIZE, SIZE, 3]: smooth moving gradients plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE  # [SIZE, SIZE]
    t = np.arange(T)[:, None, None, None] / T  # [T, 1, 1, 1]
    base = rng.uniform(0.2, 0.8, (n, 1, 1, 1, 1, 3))
    phase = rng.uniform(0, 6.3, (n, 1, 1, 1, 1, 1))
    wave = 0.3 * np.sin(3 * xx[..., None] + 2 * yy[..., None] + 4 * t + phase)  # [n, 1, T, S, S, 1]
    x = (base + wave)[:, 0] + 0.05 * rng.standard_normal((n, T, SIZE, SIZE, 3))
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def unit(clips: np.ndarray) -> torch.Tensor:
    """uint8 [n, T, H, W, 3] → float [n, T, 3, H, W] in [0, 1] (as `score_folders` feeds FVD)."""
    return to_float(clips).add_(1.0).mul_(0.5)


def make_fvd(det: Detector) -> FVD:
    return FVD(detector=det, use_cache=False, batch_size=B, num_real=1 << 20, num_fake=1 << 20)


# ----------------------------------------------------------------------------- throughput


def bench_throughput(reps: int) -> dict[str, float]:
    """videos/s: whole FVD pipeline from uint8 clips vs the bare I3D forward on pre-resized floats."""
    det = random_i3d(batch_size=B)
    clips = synthetic(B, 0)  # [B, T, SIZE, SIZE, 3] uint8
    pre = torch.rand(B, 3, T, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1  # [B, 3, T, S, S]
    metric = make_fvd(det)
    det(pre)  # warm-up (allocator, oneDNN primitives)
    bare, pipe = [], []
    for k in range(reps):  # interleaved, so drifts in machine load hit both alike
        t0 = time.perf_counter()
        det(pre)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ids = list(range(k * B, (k + 1) * B))
        # frame selection, quantisation, resize to 224, I3D, statistics:
        metric.update_fake(unit(clips), video_index=ids, sample_index=[0] * B)
        pipe.append(time.perf_counter() - t0)
    bare_vps, pipe_vps = B / statistics.median(bare), B / statistics.median(pipe)
    return {"bare_vps": bare_vps, "pipe_vps": pipe_vps, "overhead": bare_vps / pipe_vps - 1.0}


def bench_files(n: int) -> dict[str, float]:
    """videos/s of `videxp-evaluate real_dir= fake_dir=` with FVD (random I3D) on n + n mp4 files."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from videxp import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for side, seed in (("real", 1), ("fake", 2)):
            (root / side).mkdir()
            for i, clip in enumerate(synthetic(n, seed)):
                write_video(root / side / f"clip_{i:03d}.mp4", clip, fps=8)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("evaluate", [f"real_dir={root / 'real'}", f"fake_dir={root / 'fake'}"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(root / "out")
            cfg.evaluate.batch_size = B
        metric = make_fvd(random_i3d(batch_size=B))
        t0 = time.perf_counter()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            evaluate.run(cfg, metrics={"fvd": metric})
        dt = time.perf_counter() - t0
    return {"files": 2 * n, "files_vps": 2 * n / dt}


# ----------------------------------------------------------------------------- memory


class PooledLinear(nn.Module):
    """Cheap stand-in detector: a fixed random linear projection of average-pooled pixels → 400-d."""

    def __init__(self, dim: int = 400, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(3 * 4 * 8 * 8, dim, generator=g) / 28.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 3, T, 224, 224] in [-1, 1] -> [B, D]
        return nn.functional.adaptive_avg_pool3d(x, (4, 8, 8)).flatten(1) @ self.proj  # [B, 768] @ [768, D]


def vm_hwm_kib() -> int:
    """This process's own RSS high-water mark (VmHWM, reset by exec unlike ru_maxrss); -1 if unknown."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def rss_child(n: int) -> None:
    """Stream n synthetic clips (n/2 reference + n/2 generated) through FVD; print peak RSS (KiB) as JSON."""
    det = Detector(PooledLinear(), name="pooled-linear-400", feature_dim=400, batch_size=B)
    metric = make_fvd(det)
    t0 = time.perf_counter()
    for start in range(0, n // 2, B):  # one batch per side in memory at a time
        ids = list(range(start, min(start + B, n // 2)))
        zeros = [0] * len(ids)
        metric.update_real(unit(synthetic(len(ids), 2 * start)), video_index=ids)
        metric.update_fake(unit(synthetic(len(ids), 2 * start + 1)), video_index=ids, sample_index=zeros)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # N < 400 is rank-deficient: expected here
        value = metric.compute()["value"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seconds = time.perf_counter() - t0
    print(json.dumps({"n": n, "peak_kib": peak, "hwm_kib": vm_hwm_kib(), "fvd": value, "seconds": seconds}))


def bench_rss() -> list[dict]:
    """Peak RSS per N, each in a fresh interpreter (run before the parent grows: on Linux ru_maxrss
    survives fork + exec, so a child started from a big parent would report the parent's size)."""
    rows = []
    for n in RSS_NS:
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(n)], check=True, capture_output=True, text=True
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=2, help="timed batches per side of the throughput test")
    parser.add_argument("--files", type=int, default=4, help="mp4 files per folder for the from-files figure")
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child is not None:
        rss_child(args.rss_child)
        return
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; clips {B}x{T}x{SIZE}x{SIZE}, batch {B}")

    rows = bench_rss()  # first, while this process is small
    tp = bench_throughput(args.reps)
    files = bench_files(args.files)
    print("\nFVD throughput (random-weight I3D, videos/s)")
    print(f"  bare I3D forward [B,3,16,224,224] float   {tp['bare_vps']:8.3f}")
    print(f"  FVD pipeline from uint8 clips             {tp['pipe_vps']:8.3f}")
    print(f"  pipeline overhead vs bare forward         {100 * tp['overhead']:+7.1f}%")
    print(f"  evaluate real_dir/fake_dir, {files['files']} mp4 files  {files['files_vps']:8.3f}")

    print("\nPeak RSS vs N (stand-in detector; N clips = N/2 reference + N/2 generated; fresh process each)")
    print(f"  {'N':>6} {'ru_maxrss MiB':>14} {'VmHWM MiB':>10} {'seconds':>8} {'FVD':>8}")
    for r in rows:
        print(
            f"  {r['n']:>6} {r['peak_kib'] / 1024:>14.1f} {r['hwm_kib'] / 1024:>10.1f} {r['seconds']:>8.1f} "
            f"{r['fvd']:>8.3f}"
        )
    growth = rows[-1]["peak_kib"] / rows[0]["peak_kib"] - 1.0
    print(f"  growth N={RSS_NS[0]} → N={RSS_NS[-1]}: {100 * growth:+.1f}%")

    print("\nTargets")
    ok_tp = tp["overhead"] <= PIPELINE_TARGET
    ok_rss = abs(growth) <= RSS_TARGET
    verdict = {True: "met", False: "NOT met"}
    print(f"  pipeline within {100 * PIPELINE_TARGET:.0f}% of the bare forward: {verdict[ok_tp]}")
    print(f"  peak RSS flat within {100 * RSS_TARGET:.0f}% from N=64 to N=1024: {verdict[ok_rss]}")


if __name__ == "__main__":
    main()
