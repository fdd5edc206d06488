"""videxp-evaluate on folders of uint8 mp4 videos: decoding vs scoring time, peak memory vs video count."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from videxp.video import write_video  # noqa: E402

# the child runs videxp-evaluate as a user would and prints its own peak resident memory at exit
CHILD = (
    "import resource, runpy, sys\n"
    "sys.argv = ['videxp-evaluate', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('videxp.evaluate', run_name='__main__')\n"
    "finally:\n"
    "    print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
)


def write_pairs(folder: Path, count: int, frames: int, size: int, seed: int = 0) -> None:
    """`count` pairs real/<i>.mp4, fake/<i>.mp4: a moving gradient and a noisy copy, uint8 [T, H, W, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        shift = rng.integers(0, size, 2)
        t = np.arange(frames)[:, None, None]
        base = (
            np.sin((xx[None] + shift[0] + 2 * t) / 6.0) + np.cos((yy[None] + shift[1] + t) / 9.0)
        ) * 60 + 128
        real = np.repeat(base[..., None], 3, axis=-1).clip(0, 255).astype(np.uint8)  # [T, H, W, 3]
        fake = (real + rng.normal(0, 12, real.shape)).clip(0, 255).astype(np.uint8)
        write_video(folder / "real" / f"{i:05d}.mp4", real)
        write_video(folder / "fake" / f"{i:05d}.mp4", fake)


def evaluate(folder: Path, out: Path, metrics: str) -> dict:
    """Run videxp-evaluate on the folder's pairs in a child process; its timing split and peak memory."""
    args = [
        f"real_dir={folder / 'real'}",
        f"fake_dir={folder / 'fake'}",
        f"metric=[{metrics}]",
        f"hydra.run.dir={out}",
        "logger=[]",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if proc.returncode:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    rss = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("maxrss_kb")))
    report = json.loads((out / "metrics.json").read_text())
    return {"timing": report["timing_s"], "maxrss_mb": rss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--metrics", default="psnr,ssim")
    args = parser.parse_args()
    print(
        f"videxp-evaluate metric=[{args.metrics}] on pairs of uint8 mp4, {args.frames} frames at {args.size}²"
    )
    print(f"{'videos':>7} {'decode s':>9} {'score s':>8} {'score/decode':>13} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            folder = Path(tmp) / f"n{count}"
            write_pairs(folder, count, args.frames, args.size)
            res = evaluate(folder, Path(tmp) / f"out{count}", args.metrics)
            t = res["timing"]
            print(
                f"{count:>7} {t['decode']:>9.2f} {t['score']:>8.2f} {t['score'] / t['decode']:>13.2f} "
                f"{res['maxrss_mb']:>12.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
