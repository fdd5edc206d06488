"""One table of GPU figures: FVD-2048, PSNR/SSIM/LPIPS, FDM training, STDiT3/Wan2.1/FramePack transformers.

Needs torch (CUDA build), torchvision for the LPIPS rows, and videxp's own modules from this checkout; no
Hydra, OmegaConf, PyAV or Lightning. Everything else a section imports is listed in WHEELS below and can
travel with the script as a folder of wheels:

    make bench-gpu-wheels                           # here: WHEELS pinned to .venv, downloaded into wheels/
    python bench/gpu_suite.py --wheelhouse wheels/  # on the GPU machine (or: make bench-gpu)

`--wheelhouse DIR` installs, with `pip install --no-index --no-deps --find-links DIR`, exactly the WHEELS
entries whose module is not importable, then starts the script again. For another Python or platform on the
GPU machine: make bench-gpu-wheels WHEEL_FLAGS='--python-version 3.12 --platform manylinux_2_28_x86_64'.
Results go to docs/performance.md. A section that fails (a missing module, say) prints one `failed` row and
the others still run; the exit status is then 1.

Rows (full sizes: meant for under 8 minutes on one H100/H200; `--tiny` shrinks every size for a CPU run):
- fvd: 2048 + 2048 uint8 clips [N, 16, 224, 224, 3] generated on the GPU and held in pinned host memory,
  then videxp's FVD end to end (host-to-device copy, StyleGAN-V protocol checks and quantisation, a
  random-weight videxp I3D, float64 statistics, Fréchet distance): fp32 (TF32 off, videxp's default),
  TF32, and bf16 autocast, with the absolute FVD difference from fp32.
- frames: PSNR, SSIM, LPIPS (random AlexNet backbone) frames/s through the metrics' full update path, on
  frames already on the GPU, at 64² and 256².
- fdm: paper64 UNet training steps/s under bf16 autocast with AdamW: videxp's step (FDM's training batch,
  GaussianDiffusion loss and the EMA update, as FDMModule.training_step; no Lightning) against a bare loop
  (plain epsilon MSE on a fixed batch), each eager and with torch.compile (one compiled net shared).
- stdit3 / wan / framepack: STDiT3-XL/2 forward+backward at 49x360x640 (bf16 weights, as Open-Sora trains;
  with and without gradient checkpointing); Wan2.1-I2V-14B and FramePack (HunyuanVideo) transformer forwards
  at the W1 image-to-video benchmark size (81 frames at 480x832, bf16 weights). Random weights: parameters
  are built on the meta device and materialised on the GPU (buffers keep their constructed values).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.metadata
import importlib.util
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

# pip distribution -> module: what the sections import beyond torch's own install (TORCH_INSTALL). The
# wheelhouse holds exactly these (tests/test_gpu_suite.py runs the suite with every other module blocked).
WHEELS: dict[str, str] = {
    "numpy": "numpy",  # videxp.metrics, videxp.utils, FDM's diffusion schedule
    "tqdm": "tqdm",  # videxp.weights.registry, FDM's diffusion
    "pyyaml": "yaml",  # the FVD protocol presets (videxp/conf/metric/fvd.yaml)
    "pillow": "PIL",  # videxp.models.diffusers_common (imported with STDiT3) and diffusers
    "safetensors": "safetensors",  # videxp.weights.files (imported with STDiT3) and diffusers
    "scipy": "scipy",  # lpips imports scipy.ndimage
    "lpips": "lpips",  # the LPIPS rows (its v0.1 linear heads ship inside the wheel)
    "diffusers": "diffusers",  # the Wan2.1 and FramePack transformers
    "packaging": "packaging",  # diffusers
    "huggingface-hub": "huggingface_hub",  # diffusers
    "httpx2": "httpx2",  # huggingface_hub
    "httpcore2": "httpcore2",  # httpx2
    "h11": "h11",  # httpcore2
    "truststore": "truststore",  # httpx2, httpcore2
    "idna": "idna",  # httpx2, requests
    "requests": "requests",  # diffusers
    "urllib3": "urllib3",  # requests
    "certifi": "certifi",  # requests
    "charset-normalizer": "charset_normalizer",  # requests (warns without it)
}
# Modules a CUDA torch install brings itself (torch's own requirements, and torchvision next to it).
TORCH_INSTALL = (
    "torch",
    "torchgen",
    "functorch",
    "torchvision",
    "triton",
    "nvidia",
    "cuda",
    "filelock",
    "typing_extensions",
    "sympy",
    "mpmath",
    "networkx",
    "jinja2",
    "markupsafe",
    "fsspec",
    "setuptools",
    "pkg_resources",
)
SECTIONS = ("fvd", "frames", "fdm", "stdit3", "wan", "framepack", "larp")
COLUMNS = ("section", "case", "size", "seconds", "throughput", "peak GiB", "notes")


@dataclass(frozen=True)
class Sizes:
    """Every size the sections use; FULL is the benchmark, TINY the CPU smoke run."""

    fvd_clips: int  # clips per side
    fvd_frames: int
    fvd_side: int  # generated frame side (FVD resizes to 224)
    fvd_batch: int
    frame_sets: dict[str, tuple[int, int, int]]  # label -> (videos, frames, side)
    fdm_size: str  # videxp.models.fdm.unet.SIZES key
    fdm_image: int
    fdm_batch: int
    fdm_frames: int  # K = max_frames per training row
    fdm_video: int  # frames per training video
    fdm_warmup: int  # untimed steps per variant (the first compiled one compiles)
    fdm_steps: int  # timed steps per variant
    stdit_size: str  # videxp.models.opensora.stdit3.STDIT3_PRESETS key
    stdit_pixels: tuple[int, int, int]  # T, H, W
    wan_size: str  # full | tiny (videxp.models.wan.components)
    wan_pixels: tuple[int, int, int]
    framepack_size: str  # full | tiny (videxp.models.framepack.components)
    framepack_pixels: tuple[int, int, int]  # requested video frames, H, W
    framepack_window: int  # latent_window_size
    larp_tokenizer: str  # videxp.models.larp.tokenizer.TOKENIZER_PRESETS key
    larp_ar: str  # videxp.models.larp.ar.AR_PRESETS key
    larp_batch: int
    repeats: int  # timed calls per row (after one warm-up)


FULL = Sizes(
    fvd_clips=2048,
    fvd_frames=16,
    fvd_side=224,
    fvd_batch=32,
    frame_sets={"64²": (256, 16, 64), "256²": (64, 16, 256)},
    fdm_size="paper64",
    fdm_image=64,
    fdm_batch=8,
    fdm_frames=20,
    fdm_video=64,
    fdm_warmup=3,
    fdm_steps=20,
    stdit_size="xl",
    stdit_pixels=(49, 360, 640),  # Open-Sora v1.3 360p "9:16", 49 frames
    wan_size="full",
    wan_pixels=(81, 480, 832),  # W1: 81 frames at 480x832
    framepack_size="full",
    framepack_pixels=(81, 480, 832),
    framepack_window=9,
    larp_tokenizer="larp_l_long",  # W4: LARP-L-long tokenizer, 16x128x128 -> 1024 tokens
    larp_ar="llama-abs-LP",  # W4: LARP-L-long-AR (632M)
    larp_batch=16,
    repeats=3,
)
TINY = Sizes(
    fvd_clips=2,
    fvd_frames=9,  # the I3D's minimum
    fvd_side=32,
    fvd_batch=1,
    frame_sets={"64²": (2, 2, 64), "256²": (1, 1, 256)},
    fdm_size="tiny",
    fdm_image=16,
    fdm_batch=2,
    fdm_frames=4,
    fdm_video=8,
    fdm_warmup=1,
    fdm_steps=2,
    stdit_size="tiny",
    stdit_pixels=(17, 32, 32),
    wan_size="tiny",
    wan_pixels=(5, 32, 32),
    framepack_size="tiny",
    framepack_pixels=(9, 32, 32),
    framepack_window=3,
    larp_tokenizer="tiny",
    larp_ar="tiny",
    larp_batch=2,
    repeats=1,
)


@dataclass
class Row:
    """One table row; `seconds` per call (per step for fdm, per run for fvd)."""

    section: str
    case: str
    size: str = ""
    seconds: float | None = None
    throughput: str = ""
    peak_gib: float | None = None
    notes: str = ""

    def line(self) -> str:
        secs = "" if self.seconds is None else f"{self.seconds:.4g}"
        peak = "" if self.peak_gib is None else f"{self.peak_gib:.2f}"
        cells = (self.section, self.case, self.size, secs, self.throughput, peak, self.notes)
        return "| " + " | ".join(cells) + " |"


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    compile_backend: str
    tmp: Path


# ----------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak memory torch allocated on the GPU since `reset_peak` (None on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `repeats` calls of fn after `warmup` calls, synchronised with the device."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def autocast(device: torch.device, enabled: bool = True) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (no memory, no init work); buffers are
    built for real, so values computed at construction (RoPE tables, position embeddings) survive."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


@torch.no_grad()
def materialise(model: nn.Module, device: torch.device, dtype: torch.dtype, std: float = 0.02) -> nn.Module:
    """Meta parameters -> tensors on `device` (as `Module.to_empty`, then an init): matrices and kernels
    N(0, std), biases 0, other vectors (norm gains, ...) 1. Floating parameters take `dtype`, except those
    under a diffusers model's `_keep_in_fp32_modules`, which stay float32 as `from_pretrained` keeps them.
    Buffers move to `device` unchanged."""
    keep_fp32 = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    g = torch.Generator(device).manual_seed(0)
    made: dict[int, nn.Parameter] = {}  # shared parameters stay shared
    for prefix, module in model.named_modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) not in made:
                want = torch.float32 if keep_fp32 & set(f"{prefix}.{name}".split(".")) else dtype
                data = torch.empty(p.shape, device=device, dtype=want if p.is_floating_point() else p.dtype)
                if data.ndim >= 2:
                    data.normal_(0.0, std, generator=g)
                else:
                    data.fill_(0.0 if name.endswith("bias") else 1.0)
                made[id(p)] = nn.Parameter(data, requires_grad=p.requires_grad)
            module._parameters[name] = made[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = b.to(device)
    return model


def param_count(model: nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{n / 1e9:.2f}B params" if n >= 1e8 else f"{n / 1e6:.2f}M params"


def smooth_frames(n: int, frames: int, side: int, noise: float, g: torch.Generator) -> torch.Tensor:
    """Random smooth videos [n, frames, 3, side, side] in [0, 1] on g's device (+ Gaussian noise)."""
    coarse = torch.rand((n, 3, max(frames // 4, 1), 8, 8), generator=g, device=g.device)  # [n, 3, T/4, 8, 8]
    x = F.interpolate(
        coarse, size=(frames, side, side), mode="trilinear", align_corners=False
    )  # [n, 3, T, S, S]
    if noise:
        x = x + noise * torch.randn(x.shape, generator=g, device=g.device)
    return x.clamp_(0.0, 1.0).permute(0, 2, 1, 3, 4)  # [n, T, 3, S, S]


# ----------------------------------------------------------------------------- fvd
def make_clips(n: int, frames: int, side: int, noise: float, seed: int, device: torch.device) -> torch.Tensor:
    """uint8 clips [n, frames, side, side, 3] in host memory (pinned with CUDA), generated on `device`."""
    out = torch.empty((n, frames, side, side, 3), dtype=torch.uint8, pin_memory=device.type == "cuda")
    g = torch.Generator(device).manual_seed(seed)
    for start in range(0, n, 64):
        m = min(64, n - start)
        x = smooth_frames(m, frames, side, noise, g)  # [m, T, 3, S, S]
        out[start : start + m] = (x * 255).round_().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu()
    return out


@contextlib.contextmanager
def fvd_precision(mode: str, device: torch.device) -> Iterator[None]:
    """fp32: videxp's Detector as it is (TF32 off); tf32: its guard lifted, TF32 on; bf16: autocast."""
    from videxp.metrics import detector as detector_module

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    guard = detector_module._no_tf32
    try:
        if mode == "tf32":
            detector_module._no_tf32 = contextlib.nullcontext
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with autocast(device, enabled=mode == "bf16"):
            yield
    finally:
        detector_module._no_tf32 = guard
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def fvd_value(real: torch.Tensor, fake: torch.Tensor, detector: object, ctx: Context) -> float:
    """videxp FVD (StyleGAN-V protocol, N clips a side) of uint8 clips [N, T, H, W, 3] in host memory."""
    from videxp.metrics.fvd import FVD

    n, t = real.shape[:2]
    fvd = FVD(
        detector=detector,
        device=str(ctx.device),
        batch_size=ctx.sizes.fvd_batch,
        use_cache=False,
        num_real=n,
        num_fake=n,
        num_frames=t,
    )
    for start in range(0, n, ctx.sizes.fvd_batch):
        index = list(range(start, min(start + ctx.sizes.fvd_batch, n)))
        for clips, update in ((real, "real"), (fake, "fake")):
            batch = clips[index[0] : index[-1] + 1].to(ctx.device, non_blocking=True)  # [b, T, H, W, 3]
            x = batch.permute(0, 1, 4, 2, 3).float().div_(255)  # [b, T, 3, H, W] in [0, 1]
            if update == "real":
                fvd.update_real(x, video_index=index)
            else:
                fvd.update_fake(x, video_index=index, sample_index=[0] * len(index))
    return float(fvd.compute()["value"])


def section_fvd(ctx: Context) -> Iterator[Row]:
    from videxp.metrics.detector import random_i3d

    s = ctx.sizes
    real = make_clips(s.fvd_clips, s.fvd_frames, s.fvd_side, 0.0, 1, ctx.device)  # [N, T, S, S, 3] uint8
    fake = make_clips(s.fvd_clips, s.fvd_frames, s.fvd_side, 0.1, 2, ctx.device)
    detector = random_i3d(seed=0, device=ctx.device, batch_size=s.fvd_batch)
    size = f"{s.fvd_clips}+{s.fvd_clips} x {s.fvd_frames}x{s.fvd_side}² uint8"
    modes = ("fp32", "tf32", "bf16") if ctx.device.type == "cuda" else ("fp32", "bf16")
    reference = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FVD's notes on N below the feature dimension
        for mode in modes:
            reset_peak(ctx.device)
            with fvd_precision(mode, ctx.device):
                warm = min(s.fvd_batch, s.fvd_clips)
                fvd_value(real[:warm], fake[:warm], detector, ctx)  # warm-up: kernels, allocator
                sync(ctx.device)
                start = time.perf_counter()
                value = fvd_value(real, fake, detector, ctx)
                sync(ctx.device)
                seconds = time.perf_counter() - start
            reference = value if reference is None else reference
            notes = f"FVD {value:.4g}" + (
                "" if mode == "fp32" else f"; abs. diff. vs fp32 {abs(value - reference):.3g}"
            )
            yield Row(
                "fvd",
                mode,
                size,
                seconds,
                f"{2 * s.fvd_clips / seconds:.1f} clips/s",
                peak_gib(ctx.device),
                notes,
            )
    if ctx.device.type != "cuda":
        yield Row("fvd", "tf32", size, notes="skipped: TF32 is a CUDA setting")


# ----------------------------------------------------------------------------- frame metrics
def frame_metric_seconds(metric: object, pred: torch.Tensor, target: torch.Tensor, ctx: Context) -> float:
    """Median seconds of the metric's full update path (reset, update) over videos [V, T, C, H, W]."""
    videos = pred.shape[0]

    def update() -> None:
        metric.reset()
        metric.update(pred, target, video_index=list(range(videos)), sample_index=[0] * videos)

    return median_seconds(update, ctx.device, ctx.sizes.repeats)


def section_frames(ctx: Context) -> Iterator[Row]:
    import torchvision

    from videxp.metrics.lpips import LPIPS
    from videxp.metrics.psnr import PSNR
    from videxp.metrics.ssim import SSIM

    backbone = ctx.tmp / "alexnet-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)  # random AlexNet trunk
    # SSIM: its default backend; on CPU (tiny runs) "shift", the one that default picks on CUDA for float32
    ssim = SSIM() if ctx.device.type == "cuda" else SSIM(backend="shift")
    psnr = PSNR() if ctx.device.type == "cuda" else PSNR(backend="torch")  # CPU: torch only, as SSIM
    metrics = {"psnr": psnr, "ssim": ssim, "lpips": LPIPS(backbone_path=backbone)}
    g = torch.Generator(ctx.device).manual_seed(0)
    for label, (videos, frames, side) in ctx.sizes.frame_sets.items():
        target = smooth_frames(videos, frames, side, 0.0, g)  # [V, T, 3, S, S] in [0, 1]
        noise = torch.randn(target.shape, generator=g, device=ctx.device)
        pred = (target + 0.05 * noise).clamp_(0.0, 1.0)
        n = videos * frames
        for name, metric in metrics.items():
            reset_peak(ctx.device)
            seconds = frame_metric_seconds(metric, pred, target, ctx)
            rate = f"{n / seconds:.0f} frames/s"
            yield Row("frames", f"{name} {label}", f"{n} frames fp32", seconds, rate, peak_gib(ctx.device))


# ----------------------------------------------------------------------------- fdm training
def fdm_loss(
    net: Callable, diffusion: object, videos: torch.Tensor, g: torch.Generator, max_frames: int
) -> torch.Tensor:
    """FDMModule._loss for an unconditional net with training_masks="fdm" (FDM's rows, padding from another
    video), without Lightning: the same draws from `g` in the same order. videos [B, T, C, H, W]."""
    from videxp.models.fdm.batching import build_training_batch

    device = videos.device
    tb = build_training_batch(videos, max_frames, g, True)  # frames [B, K, C, H, W], masks [B, K]
    t = diffusion.sample_timesteps(videos.shape[0], g).to(device)  # [B]
    noise = torch.randn(tb.frames.shape, generator=g, dtype=tb.frames.dtype).to(device)  # [B, K, C, H, W]

    def model_fn(x_t: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
        return net(
            x_t,
            x0=tb.frames,
            timesteps=t_model,
            frame_indices=tb.frame_indices.to(device),
            obs_mask=tb.obs_mask,
            latent_mask=tb.latent_mask,
            y=None,
        )

    return diffusion.training_losses(model_fn, tb.frames, t, noise, tb.obs_mask, 1.0 - tb.obs_mask).mean()


def section_fdm(ctx: Context) -> Iterator[Row]:
    from videxp.models.fdm.diffusion import GaussianDiffusion
    from videxp.models.fdm.unet import SIZES, FDMUNet
    from videxp.utils.seeding import derive_seed, torch_generator

    s, device = ctx.sizes, ctx.device
    torch.manual_seed(0)
    net = FDMUNet.from_fdm_config({"image_size": s.fdm_image, **SIZES[s.fdm_size]}).to(device).train()
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
    diffusion = GaussianDiffusion()  # FDM: 1000 linear steps, eps prediction
    g = torch.Generator(device).manual_seed(0)
    videos = (
        smooth_frames(s.fdm_batch, s.fdm_video, s.fdm_image, 0.0, g).mul_(2).sub_(1)
    )  # [B, T, 3, S, S] in [-1, 1]
    frames = videos[:, : s.fdm_frames].contiguous()  # [B, K, 3, S, S] the bare loop's fixed batch
    B, K = frames.shape[:2]
    obs, latent = torch.zeros(B, K, device=device), torch.ones(B, K, device=device)  # every frame generated
    indices = torch.arange(K, device=device).repeat(B, 1)  # [B, K]
    abar = torch.tensor(diffusion.base.alphas_cumprod, dtype=torch.float32, device=device)  # [N]
    compiled = torch.compile(net, backend=ctx.compile_backend)
    counter = iter(range(10**9))

    def videxp_step(model: Callable) -> None:
        step = next(counter)
        with autocast(device):  # Lightning's bf16-mixed: autocast around training_step
            loss = fdm_loss(model, diffusion, videos, torch_generator(derive_seed(0, step)), K)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # FDMModule.on_train_batch_end
            torch._foreach_lerp_(ema, list(net.parameters()), 1.0 - 0.9999)

    def bare_step(model: Callable) -> None:
        t = torch.randint(0, diffusion.num_timesteps, (B,), device=device)  # [B]
        noise = torch.randn_like(frames)
        a = abar[t].view(B, 1, 1, 1, 1)
        x_t = a.sqrt() * frames + (1 - a).sqrt() * noise  # [B, K, 3, S, S]
        with autocast(device):
            t_model = t.float() * (1000.0 / diffusion.num_timesteps)
            eps = model(
                x_t,
                x0=frames,
                timesteps=t_model,
                frame_indices=indices,
                obs_mask=obs,
                latent_mask=latent,
                y=None,
            )
        loss = F.mse_loss(eps.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    size = f"{s.fdm_size}, B={B} x K={K} of T={s.fdm_video}, {s.fdm_image}² bf16-mixed"
    rates = {}
    for case, step, model in (
        ("bare loop", bare_step, net),
        ("videxp step", videxp_step, net),
        ("bare loop + compile", bare_step, compiled),  # compiles the net (forward and backward) ...
        ("videxp step + compile", videxp_step, compiled),  # ... which this row reuses
    ):
        reset_peak(device)
        start = time.perf_counter()
        for _ in range(s.fdm_warmup):  # warm-up (and compilation)
            step(model)
        sync(device)
        warm = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(s.fdm_steps):
            step(model)
        sync(device)
        seconds = (time.perf_counter() - start) / s.fdm_steps
        rates[case] = 1.0 / seconds
        bare = rates.get(case.replace("videxp step", "bare loop"))
        notes = f"warm-up {warm:.1f} s" + (
            f", {rates[case] / bare:.2f}x bare" if "videxp" in case and bare else ""
        )
        yield Row("fdm", case, size, seconds, f"{rates[case]:.2f} steps/s", peak_gib(device), notes)


# ----------------------------------------------------------------------------- large transformers
def section_stdit3(ctx: Context) -> Iterator[Row]:
    from videxp.models.opensora.stdit3 import STDiT3, stdit3_config
    from videxp.models.opensora.vae import latent_frames

    device = ctx.device
    cfg = stdit3_config(ctx.sizes.stdit_size)
    with meta_parameters():
        model = STDiT3(cfg)
    model = materialise(
        model, device, torch.bfloat16
    ).train()  # bf16 weights, as Open-Sora trains (dtype=bf16)
    T, H, W = ctx.sizes.stdit_pixels
    lat = (latent_frames(T), H // 8, W // 8)  # Open-Sora v1.3 VAE: 4x8x8, 17-frame micro chunks
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn((1, cfg.in_channels, *lat), generator=g, device=device)  # [1, C, T', H', W']
    y = torch.randn(
        (1, 1, cfg.model_max_length, cfg.caption_channels), generator=g, device=device
    )  # T5 tokens
    timestep = torch.full((1,), 500.0, device=device)
    tokens = lat[0] * math.ceil(lat[1] / 2) * math.ceil(lat[2] / 2)
    size = f"{T}x{H}x{W} -> latents {lat[0]}x{lat[1]}x{lat[2]}, {tokens} tokens"

    def step() -> None:
        out = model(x, timestep, y, height=H, width=W, fps=24.0)  # [1, 2C, T', H', W'] float32
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    for checkpointing in (False, True):
        model.enable_gradient_checkpointing(checkpointing)
        case = "fwd+bwd bf16" + (" + grad ckpt" if checkpointing else "")
        reset_peak(device)
        try:
            seconds = median_seconds(step, device, ctx.sizes.repeats)
        except torch.cuda.OutOfMemoryError:  # without checkpointing on an 80 GB card, say; go on
            model.zero_grad(set_to_none=True)
            yield Row("stdit3", case, size, notes=f"out of memory; {param_count(model)}")
            continue
        rate = f"{1 / seconds:.2f} it/s"
        yield Row("stdit3", case, size, seconds, rate, peak_gib(device), param_count(model))


def wan_inputs(ctx: Context, config: dict) -> dict[str, torch.Tensor]:
    """One WanImageToVideoPipeline transformer call: latents + mask + condition latents, 512 text tokens,
    257 CLIP image tokens."""
    T, H, W = ctx.sizes.wan_pixels
    g = torch.Generator(ctx.device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g, device=ctx.device).to(torch.bfloat16)

    lat = ((T - 1) // 4 + 1, H // 8, W // 8)  # Wan VAE: 4x8x8, causal
    return {
        "hidden_states": randn(1, config["in_channels"], *lat),  # [1, 16 + 4 + 16, T', H', W']
        "timestep": torch.full((1,), 500, device=ctx.device, dtype=torch.long),
        "encoder_hidden_states": randn(1, 512, config["text_dim"]),  # UMT5 tokens (padded to 512)
        "encoder_hidden_states_image": randn(1, 257, config["image_dim"]),  # CLIP penultimate states
    }


def framepack_inputs(ctx: Context, config: dict) -> dict[str, torch.Tensor]:
    """The first transformer call of HunyuanVideoFramepackPipeline's inverted anti-drifting sampling: one
    latent window, the start-image + 1x history latents, 2x and 4x compressed history, 256 text tokens,
    729 SigLIP image tokens."""
    frames, H, W = ctx.sizes.framepack_pixels
    lws = ctx.sizes.framepack_window
    sections = max(1, math.ceil(frames / ((lws - 1) * 4 + 1)))
    padding = (sections - 1 if sections <= 4 else 3) * lws  # latent_paddings[0]
    history = (1, 2, 16)
    idx = torch.arange(1 + padding + lws + sum(history), device=ctx.device)
    prefix, _, latents_idx, idx_1x, idx_2x, idx_4x = idx.split([1, padding, lws, *history])
    g = torch.Generator(ctx.device).manual_seed(0)
    c, h, w = config["in_channels"], H // 8, W // 8

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g, device=ctx.device).to(torch.bfloat16)

    return {
        "hidden_states": randn(1, c, lws, h, w),  # [1, C, lws, H', W']
        "timestep": torch.full((1,), 1000.0, device=ctx.device),
        "encoder_hidden_states": randn(
            1, 256, config["text_embed_dim"]
        ),  # Llama states (max_sequence_length)
        "encoder_attention_mask": torch.ones(1, 256, dtype=torch.bool, device=ctx.device),
        "pooled_projections": randn(1, config["pooled_projection_dim"]),  # CLIP-L pooled
        "image_embeds": randn(1, 729, config["image_proj_dim"]),  # SigLIP so400m/14 at 384²
        "indices_latents": latents_idx,
        "guidance": torch.full((1,), 10.0 * 1000.0, device=ctx.device, dtype=torch.bfloat16),
        "latents_clean": randn(1, c, 2, h, w),  # start image + 1x history
        "indices_latents_clean": torch.cat([prefix, idx_1x]),
        "latents_history_2x": randn(1, c, 2, h, w),
        "indices_latents_history_2x": idx_2x,
        "latents_history_4x": randn(1, c, 16, h, w),
        "indices_latents_history_4x": idx_4x,
    }


def forward_rows(
    section: str, model: nn.Module, inputs: dict, size: str, calls: int, ctx: Context
) -> Iterator[Row]:
    """Seconds and peak memory of one bf16 forward, and the transformer time of one W1 video (`calls`)."""
    model.eval().requires_grad_(False)
    reset_peak(ctx.device)
    with torch.inference_mode():
        seconds = median_seconds(lambda: model(**inputs, return_dict=False), ctx.device, ctx.sizes.repeats)
    notes = f"{param_count(model)}; {calls} calls per W1 video = {calls * seconds:.0f} s"
    yield Row(section, "fwd bf16", size, seconds, f"{1 / seconds:.2f} it/s", peak_gib(ctx.device), notes)


def section_wan(ctx: Context) -> Iterator[Row]:
    from diffusers import WanTransformer3DModel

    from videxp.models.wan import components

    config = (
        components.full_transformer_config()
        if ctx.sizes.wan_size == "full"
        else components.tiny_transformer_config()
    )
    with meta_parameters():
        model = WanTransformer3DModel(**config)
    model = materialise(model, ctx.device, torch.bfloat16)
    inputs = wan_inputs(ctx, config)
    T, H, W = ctx.sizes.wan_pixels
    lat = inputs["hidden_states"].shape[2:]
    tokens = lat[0] * (lat[1] // 2) * (lat[2] // 2)
    size = f"{T}x{H}x{W} -> latents {lat[0]}x{lat[1]}x{lat[2]}, {tokens} tokens"
    yield from forward_rows("wan", model, inputs, size, 40, ctx)  # W1: 20 steps x 2 (text CFG)


def section_framepack(ctx: Context) -> Iterator[Row]:
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    from videxp.models.framepack import components

    full = ctx.sizes.framepack_size == "full"
    config = components.full_transformer_config() if full else components.tiny_transformer_config()
    with meta_parameters():
        model = HunyuanVideoFramepackTransformer3DModel(**config)
    model = materialise(model, ctx.device, torch.bfloat16)
    inputs = framepack_inputs(ctx, config)
    frames, H, W = ctx.sizes.framepack_pixels
    lws = ctx.sizes.framepack_window
    sections = max(1, math.ceil(frames / ((lws - 1) * 4 + 1)))
    h, w = H // 8, W // 8
    tokens = lws * (h // 2) * (w // 2)
    size = f"{frames}x{H}x{W}: window {lws}x{h}x{w} ({tokens} tokens) + history 1/2/16"
    yield from forward_rows("framepack", model, inputs, size, 20 * sections, ctx)  # W1: 20 steps per section


def section_larp(ctx: Context) -> Iterator[Row]:
    """W4's LARP at batch larp_batch: AR teacher-forced forward and KV-cache sampling in bf16, tokenizer
    encode (VQ in fp32, as LARP forces) and decode under bf16 autocast."""
    from videxp.models.larp.ar import LARPAR, larp_ar_config
    from videxp.models.larp.tokenizer import LARPTokenizer, larp_tokenizer_config

    device, B = ctx.device, ctx.sizes.larp_batch
    with meta_parameters():
        tokenizer = LARPTokenizer(**larp_tokenizer_config(ctx.sizes.larp_tokenizer), build_prior=False)
    tokenizer = materialise(tokenizer, device, torch.float32).eval().requires_grad_(False)
    tokenizer.set_vq_eval_deterministic(True)
    T, S, N = tokenizer.frame_num, tokenizer.input_size, tokenizer.bottleneck_token_num
    ar_cfg = larp_ar_config(ctx.sizes.larp_ar, vocab_size=tokenizer.codebook_size, max_seq_len=N)
    ar = materialise(LARPAR(ar_cfg), device, torch.bfloat16).eval().requires_grad_(False)
    g = torch.Generator(device).manual_seed(0)
    video = torch.rand((B, 3, T, S, S), generator=g, device=device)  # [B, 3, T, S, S] in [0, 1]
    c = torch.arange(B, device=device) % ar.num_classes  # [B] class ids
    ids = torch.randint(0, tokenizer.codebook_size, (B, N), generator=g, device=device)  # [B, N]
    size = f"batch {B}, {T}x{S}x{S} = {N} tokens"
    with torch.inference_mode():
        seconds = median_seconds(lambda: ar(idx=ids[:, :-1], cond_idx=c), device, ctx.sizes.repeats)
        yield Row("larp", "AR fwd bf16", size, seconds, f"{B * N / seconds:.0f} tokens/s", peak_gib(device),
                  param_count(ar))  # fmt: skip
        reset_peak(device)
        gens = [torch.Generator(device).manual_seed(i) for i in range(B)]
        seconds = median_seconds(lambda: ar.sample(c, cfg_scale=1.25, generators=gens), device, 1)
        yield Row("larp", "AR sample bf16, CFG 1.25", size, seconds, f"{B * N / seconds:.0f} tokens/s",
                  peak_gib(device), "KV cache; doubled batch")  # fmt: skip
        for case, fn in (
            ("tokenizer encode", lambda: tokenizer.encode(video)),
            ("tokenizer decode", lambda: tokenizer.decode_from_bottleneck(ids)),
        ):
            reset_peak(device)
            with autocast(device):
                seconds = median_seconds(fn, device, ctx.sizes.repeats)
            yield Row("larp", f"{case}, autocast bf16", size, seconds, f"{B / seconds:.2f} videos/s",
                      peak_gib(device), param_count(tokenizer))  # fmt: skip


SECTION_FUNCS: dict[str, Callable[[Context], Iterator[Row]]] = {
    "fvd": section_fvd,
    "frames": section_frames,
    "fdm": section_fdm,
    "stdit3": section_stdit3,
    "wan": section_wan,
    "framepack": section_framepack,
    "larp": section_larp,
}


# ----------------------------------------------------------------------------- environment and wheels
def environment_rows(device: torch.device) -> list[Row]:
    today = datetime.date.today().isoformat()
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        memory = f"{p.total_memory / 2**30:.0f} GiB"
        gpu = Row("env", "GPU", p.name, notes=f"{memory}, {p.multi_processor_count} SMs, {today}")
        build = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        gpu = Row(
            "env", "GPU", "none (CPU run)", notes=f"{platform.processor() or platform.machine()}, {today}"
        )
        build = f"{torch.get_num_threads()} CPU threads"
    torch_row = Row("env", "torch", torch.__version__, notes=f"{build}, Python {platform.python_version()}")
    return [gpu, torch_row]


def missing_wheels() -> list[str]:
    """WHEELS distributions whose module is not importable here."""
    return [dist for dist, module in WHEELS.items() if importlib.util.find_spec(module) is None]


def install_command(wheelhouse: Path, dists: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-index",
        "--no-deps",
        "--find-links",
        str(wheelhouse),
        *dists,
    ]


def install_missing(wheelhouse: Path) -> None:
    """Install the missing WHEELS from `wheelhouse`, then start this script again: torch looks for numpy
    once, when it is imported, so the new packages are only seen by a fresh interpreter."""
    dists = missing_wheels()
    if not dists:
        print(f"wheelhouse {wheelhouse}: nothing to install", file=sys.stderr)
        return
    if os.environ.get("VIDEXP_GPU_SUITE_INSTALLED"):
        raise SystemExit(f"wheelhouse {wheelhouse}: {' '.join(dists)} still missing after the install")
    print(f"wheelhouse {wheelhouse}: installing {' '.join(dists)}", file=sys.stderr, flush=True)
    subprocess.run(install_command(wheelhouse, dists), check=True, stdout=sys.stderr)  # stdout: the table
    os.environ["VIDEXP_GPU_SUITE_INSTALLED"] = "1"
    sys.stdout.flush()
    os.execv(sys.executable, sys.orig_argv)


def pinned_wheels() -> list[str]:
    """`dist==version` of every WHEELS entry as installed here (what make bench-gpu-wheels downloads)."""
    return [f"{dist}=={importlib.metadata.version(dist)}" for dist in WHEELS]


def failure_note(e: BaseException) -> str:
    if isinstance(e, ModuleNotFoundError) and e.name:
        top = e.name.partition(".")[0]
        dist = next((d for d, m in WHEELS.items() if m == top), None)
        if dist is not None:
            return (
                f"missing module {top!r} (pip {dist}: run with --wheelhouse DIR, see make bench-gpu-wheels)"
            )
        if top == "torchvision":
            return (
                f"missing module 'torchvision' (install the torchvision built for torch {torch.__version__})"
            )
        return f"missing module {top!r}"
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "error: CUDA out of memory"
    first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
    return f"error: {type(e).__name__}: {first}"


def run(sections: list[str], ctx: Context) -> bool:
    """Print the table row by row; True when every section ran."""
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in environment_rows(ctx.device):
        print(row.line(), flush=True)
    ok = True
    for name in sections:
        start = time.perf_counter()
        try:
            for row in SECTION_FUNCS[name](ctx):
                print(row.line(), flush=True)
        except Exception as e:  # one failing section must not cost the others their rows
            ok = False
            traceback.print_exc(file=sys.stderr)
            print(Row(name, "failed", notes=failure_note(e)).line(), flush=True)
        finally:
            reset_peak(ctx.device)
            print(f"section {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes everywhere (CPU smoke run)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--wheelhouse", type=Path, help="install the missing WHEELS from this folder first")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the fdm rows")
    parser.add_argument("--list-wheels", action="store_true", help="print WHEELS pinned to this environment")
    args = parser.parse_args()
    if args.list_wheels:
        print("\n".join(pinned_wheels()))
        return
    if args.wheelhouse is not None:
        install_missing(args.wheelhouse)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    sizes = TINY if args.tiny else FULL
    with tempfile.TemporaryDirectory() as tmp:
        ok = run(args.sections, Context(device, sizes, args.compile_backend, Path(tmp)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
