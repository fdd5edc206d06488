"""Frames/s of batched PSNR, SSIM and LPIPS (videxp.metrics) vs the reference repos' per-frame loops."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing
from videxp.metrics import PSNR, SSIM, FrameMetric  # noqa: E402
from videxp.metrics.lpips import LPIPS, load_backbone  # noqa: E402
from videxp.weights import registry as weights  # noqa: E402

# name -> (videos, frames, channels, height, width)
SETS: dict[str, tuple[int, int, int, int, int]] = {
    "kth64": (32, 30, 3, 64, 64),
    "res256": (8, 16, 3, 256, 256),
}


def make_videos(shape: tuple[int, int, int, int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth float32 videos [V, T, C, H, W] in [0, 1] and noisy copies (σ ~ U(0.01, 0.2) per frame), as
    torch tensors: what JH's README feeds its functions."""
    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.standard_normal(shape), sigma=(0, 0, 0, 3, 3))
    base = (base - base.min()) / (base.max() - base.min())
    noise = rng.uniform(0.01, 0.2, shape[:2] + (1, 1, 1))
    pred = np.clip(base + noise * rng.standard_normal(shape), 0.0, 1.0)
    return torch.from_numpy(pred.astype(np.float32)), torch.from_numpy(base.astype(np.float32))


# The reference side: JH's `calculate_psnr` / `calculate_ssim` loops as they run (commit 45f3c29), fed torch
# tensors: per video, per frame `.numpy()`; PSNR in the input's dtype with numpy, SSIM per channel in float64
# with cv2.filter2D and the full 11x11 window. Re-typed from the reference's logic (summary dicts omitted).


def _jh_loop(videos1: torch.Tensor, videos2: torch.Tensor, score: Callable[..., float]) -> np.ndarray:
    """JH's loop shape: per video, per frame `.numpy()` of both tensors, `score(img1, img2)`; [V, T]."""
    out = np.empty(videos1.shape[:2])
    for i in range(videos1.shape[0]):
        video1, video2 = videos1[i], videos2[i]
        for j in range(len(video1)):
            out[i, j] = score(video1[j].numpy(), video2[j].numpy())
    return out


def _jh_psnr_frame(img1: np.ndarray, img2: np.ndarray) -> float:
    """JH's `img_psnr`: MSE over (C, H, W) in the input dtype, 100 dB below MSE 1e-10."""
    mse = np.mean((img1 / 1.0 - img2 / 1.0) ** 2)
    return 100 if mse < 1e-10 else 20 * math.log10(1 / math.sqrt(mse))


def ref_psnr(videos1: torch.Tensor, videos2: torch.Tensor) -> np.ndarray:
    """JH `calculate_psnr`'s loop."""
    return _jh_loop(videos1, videos2, _jh_psnr_frame)


_JH_KERNEL = cv2.getGaussianKernel(11, 1.5)
_JH_WINDOW = np.outer(_JH_KERNEL, _JH_KERNEL.transpose())


def _jh_ssim_plane(img1: np.ndarray, img2: np.ndarray) -> float:
    """JH's `ssim` on one plane [H, W]: float64, cv2.filter2D with the 11x11 window, crop [5:-5, 5:-5]."""
    c1, c2 = 0.01**2, 0.03**2
    img1, img2 = img1.astype(np.float64), img2.astype(np.float64)
    mu1 = cv2.filter2D(img1, -1, _JH_WINDOW)[5:-5, 5:-5]
    mu2 = cv2.filter2D(img2, -1, _JH_WINDOW)[5:-5, 5:-5]
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = cv2.filter2D(img1**2, -1, _JH_WINDOW)[5:-5, 5:-5] - mu1_sq
    sigma2_sq = cv2.filter2D(img2**2, -1, _JH_WINDOW)[5:-5, 5:-5] - mu2_sq
    sigma12 = cv2.filter2D(img1 * img2, -1, _JH_WINDOW)[5:-5, 5:-5] - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    return ssim_map.mean()


def ref_ssim(videos1: torch.Tensor, videos2: torch.Tensor) -> np.ndarray:
    """JH `calculate_ssim`'s loop: per frame, per channel, mean over the channels."""
    return _jh_loop(
        videos1,
        videos2,
        lambda a, b: np.array([_jh_ssim_plane(a[k], b[k]) for k in range(a.shape[0])]).mean(),
    )


def random_alexnet_home(folder: str) -> dict[str, torch.Tensor]:
    """Seeded random torchvision AlexNet saved in `folder`/hub/checkpoints and pinned in the registry."""
    import torchvision

    os.environ["TORCH_HOME"] = folder
    os.environ["VIDEXP_OFFLINE"] = "1"
    os.environ["VIDEXP_CACHE"] = os.path.join(folder, "cache")
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = Path(folder) / "hub" / "checkpoints" / weights.WEIGHTS["alexnet"].filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    spec = dataclasses.replace(weights.WEIGHTS["alexnet"], sha256=weights.sha256_file(path))
    weights.WEIGHTS["alexnet"] = spec
    return state


def make_ref_lpips(state: dict[str, torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], np.ndarray]:
    """JH's LPIPS loop: `lpips.LPIPS(net="alex", spatial=True)`, one frame per call, x·2−1, map mean."""
    import lpips as lpips_pkg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_pkg.LPIPS(net="alex", spatial=True, pnet_rand=True, verbose=False)
    load_backbone(model.net, state, "random alexnet")
    model.eval().requires_grad_(False)

    @torch.no_grad()
    def ref_lpips(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        v, t = pred.shape[:2]
        out = np.empty((v, t))
        for i in range(v):
            for j in range(t):
                a = pred[i, j][None].float() * 2 - 1  # [1, C, H, W]
                b = target[i, j][None].float() * 2 - 1
                out[i, j] = float(model(a, b).mean())
        return out

    return ref_lpips


def as_uint8(video: torch.Tensor) -> torch.Tensor:
    """float [0, 1] -> uint8 (rounded): the frames as a decoder hands them over."""
    return video.mul(255).round_().to(torch.uint8)


def read_bandwidth(nbytes: int) -> float:
    """GB/s of one streaming read pass (`torch.aminmax`, all threads) over `nbytes` of float32."""
    x = torch.rand(nbytes // 4)
    seconds, _ = best_time(5, lambda: torch.aminmax(x))
    return nbytes / seconds / 1e9


def lpips_gflop_per_frame(metric: LPIPS, height: int, width: int) -> float:
    """GFLOP of one LPIPS frame pair (both trunks, heads), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    pair = torch.zeros(2, 1, 3, height, width)
    with FlopCounterMode(display=False) as counter:
        metric.score_frames(*pair)
    return counter.get_total_flops() / 1e9


def matmul_gflops(size: int = 2048) -> float:
    """GFLOP/s of a float32 [size, size] matmul (all threads): the machine's practical compute rate."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    seconds, _ = best_time(5, torch.mm, a, b)
    return 2 * size**3 / seconds / 1e9


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
    parser.add_argument(
        "--metrics", nargs="+", default=["psnr", "ssim", "lpips"], choices=["psnr", "ssim", "lpips"]
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cv2 {cv2.__version__} threads "
        f"{cv2.getNumThreads()}, batched metrics on {device}; reference: JH loops (numpy, cv2 float64, lpips)"
    )
    columns = [("set", "<8"), ("metric", "<8"), ("frames", ">6"), ("ours f/s", ">10"), ("JH f/s", ">9")]
    columns += [("ratio", ">7"), ("|ours-JH|", ">9"), ("|ours-f64|", ">10")]
    header = " ".join(f"{name:{fmt}}" for name, fmt in columns)
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as home:
        state = random_alexnet_home(home)
        # (row label, metric family, metric); "+c" = compile=True (torch.compile'd kernel); "u8" = ours
        # fed the uint8 frames (as decoded) while JH is fed the float32 tensors of the same values
        metrics: list[tuple[str, str, FrameMetric]] = [
            ("psnr", "psnr", PSNR()),
            ("psnr+c", "psnr", PSNR(compile=True)),
            ("psnr u8", "psnr", PSNR()),
            ("ssim", "ssim", SSIM()),
            ("ssim64", "ssim", SSIM(dtype=torch.float64)),
            ("ssim+c", "ssim", SSIM(compile=True)),
            ("ssim u8", "ssim", SSIM()),
            ("lpips", "lpips", LPIPS()),
            ("lpips u8", "lpips", LPIPS()),
        ]
        refs = {"psnr": ref_psnr, "ssim": ref_ssim, "lpips": make_ref_lpips(state)}
        for set_name in args.sets:
            shape = SETS[set_name]
            pred_cpu, target_cpu = make_videos(shape)  # float32 [V, T, C, H, W]: the reference's input
            pred_u8, target_u8 = as_uint8(pred_cpu), as_uint8(target_cpu)
            n_frames = shape[0] * shape[1]
            # family -> JH seconds; (family, uint8?) -> JH values, float64 values of the same inputs
            seconds: dict[str, float] = {}
            values: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = {}
            for label, family, metric in metrics:
                if family not in args.metrics:
                    continue
                u8 = label.endswith("u8")
                ref_pred, ref_target = (pred_u8 / 255, target_u8 / 255) if u8 else (pred_cpu, target_cpu)
                if family not in seconds:  # the loops' time does not depend on the values
                    seconds[family], _ = best_time(args.repeats, refs[family], ref_pred, ref_target)
                if (family, u8) not in values:
                    values[family, u8] = (
                        refs[family](ref_pred, ref_target),
                        refs[family](ref_pred.double(), ref_target.double()),  # the float64 values
                    )
                t_ref, (v_ref, exact) = seconds[family], values[family, u8]
                pred, target = (pred_u8, target_u8) if u8 else (pred_cpu, target_cpu)
                pred, target = pred.to(device), target.to(device)
                ours(metric, pred, target)  # warm-up (kernels, CUDA context, compilation)
                t_ours, v_ours = best_time(args.repeats, ours, metric, pred, target)
                print(
                    f"{set_name:<8} {label:<8} {n_frames:>6} {n_frames / t_ours:>10.1f} "
                    f"{n_frames / t_ref:>9.1f} {t_ref / t_ours:>6.2f}x {np.abs(v_ours - v_ref).max():>9.1e} "
                    f"{np.abs(v_ours - exact).max():>10.1e}",
                    flush=True,
                )
                if label == "psnr":  # memory-bound: input bytes read per second vs the machine's read rate
                    nbytes = 2 * pred_cpu.numel() * pred_cpu.element_size()
                    print(
                        f"{'':<8} psnr reads its float32 input at {nbytes / t_ours / 1e9:.1f} GB/s; one "
                        f"streaming read pass of the same size runs at {read_bandwidth(nbytes):.1f} GB/s"
                    )
                if label == "lpips":  # compute-bound: the trunks' FLOP rate vs a large matmul's
                    gflop = lpips_gflop_per_frame(metric, *shape[-2:]) * n_frames
                    print(
                        f"{'':<8} lpips: {gflop / n_frames:.2f} GFLOP per frame; videxp runs at "
                        f"{gflop / t_ours:.0f} GFLOP/s, JH at {gflop / t_ref:.0f}; a 2048² float32 matmul "
                        f"runs at {matmul_gflops():.0f} GFLOP/s"
                    )


if __name__ == "__main__":
    main()
