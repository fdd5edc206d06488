"""Frames/s of batched PSNR and SSIM (videxp.metrics) vs per-frame float64 numpy / scikit-image loops."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing
from videxp.metrics import PSNR, SSIM, FrameMetric  # noqa: E402

# name -> (videos, frames, channels, height, width)
SETS: dict[str, tuple[int, int, int, int, int]] = {
    "kth64": (16, 30, 3, 64, 64),
    "res256": (4, 30, 3, 256, 256),
}


def make_videos(shape: tuple[int, int, int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth float64 videos [V, T, C, H, W] in [0, 1] and noisy copies (σ ~ U(0.01, 0.2) per frame)."""
    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.standard_normal(shape), sigma=(0, 0, 0, 3, 3))
    base = (base - base.min()) / (base.max() - base.min())
    noise = rng.uniform(0.01, 0.2, shape[:2] + (1, 1, 1))
    pred = np.clip(base + noise * rng.standard_normal(shape), 0.0, 1.0)
    return pred, base


def ref_psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """JH-style per-frame loop: MSE over (C, H, W), 100 dB for identical frames."""
    v, t = pred.shape[:2]
    out = np.empty((v, t))
    for i in range(v):
        for j in range(t):
            mse = np.mean((pred[i, j] - target[i, j]) ** 2)
            out[i, j] = 100.0 if mse < 1e-10 else 10 * math.log10(1.0 / mse)
    return out


def ref_ssim(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-frame scikit-image loop with the Wang et al. settings (= JH cv2 code)."""
    v, t = pred.shape[:2]
    out = np.empty((v, t))
    for i in range(v):
        for j in range(t):
            out[i, j] = structural_similarity(
                pred[i, j],
                target[i, j],
                channel_axis=0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
            )
    return out


def ours(metric: FrameMetric, pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Full update path (validation, scoring, bookkeeping); returns [V, T] values."""
    metric.reset()
    metric.update(pred, target, video_index=list(range(pred.shape[0])), sample_index=[0] * pred.shape[0])
    if pred.device.type == "cuda":
        torch.cuda.synchronize()
    return metric.as_array()[:, 0, :]


def best_time(repeats: int, fn: Callable[..., np.ndarray], *args: object) -> tuple[float, np.ndarray]:
    """Fastest of `repeats` runs of fn(*args) in seconds, and the last result."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--device", default="cpu", help="device for the batched metrics (reference loops: CPU)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batched metrics on {device}")
    columns = [("set", "<8"), ("metric", "<6"), ("frames", ">6"), ("ours f/s", ">10"), ("loop f/s", ">10")]
    columns += [("ratio", ">7"), ("max|diff|", ">10")]
    header = " ".join(f"{name:{fmt}}" for name, fmt in columns)
    print(header)
    print("-" * len(header))
    for set_name in args.sets:
        shape = SETS[set_name]
        pred_np, target_np = make_videos(shape)
        pred = torch.from_numpy(pred_np).to(device)
        target = torch.from_numpy(target_np).to(device)
        n_frames = shape[0] * shape[1]
        for metric_name, metric, ref in (("psnr", PSNR(), ref_psnr), ("ssim", SSIM(), ref_ssim)):
            ours(metric, pred[:1], target[:1])  # warm-up (kernels, CUDA context)
            t_ours, v_ours = best_time(args.repeats, ours, metric, pred, target)
            t_ref, v_ref = best_time(args.repeats, ref, pred_np, target_np)
            diff = float(np.abs(v_ours - v_ref).max())
            print(
                f"{set_name:<8} {metric_name:<6} {n_frames:>6} {n_frames / t_ours:>10.1f} "
                f"{n_frames / t_ref:>10.1f} {t_ref / t_ours:>6.2f}x {diff:>10.2e}"
            )


if __name__ == "__main__":
    main()
