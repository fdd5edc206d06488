"""Interpolant model: training steps/s from pixels vs cached latents; sampling frames/s, RK4-100 vs EM-100.

Training: the KTH geometry (64x64 frames, 40-frame clips, batch 8) with the paper autoencoder (taming
f8_small) and the `tiny` flow transformer (CPU; `--size paper` on a GPU). "pixels" picks the three frames
per row and encodes them with the frozen autoencoder every step, as RIVER does; "latents" reads them from
a cached latent clip (`model.latent_cache`). Both include forward, backward and the AdamW step; no data
loading (see bench_datasets.py for that).
Sampling: 2 observed -> 4 generated frames per video, batch 4, 100 grid points: RIVER's linear interpolant
with RK4 (99 steps x 4 calls) vs PFI's Föllmer interpolant with Euler-Maruyama (100 calls).
Run: .venv/bin/python bench/bench_interpolant.py [--device cuda] [--size paper]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import ROOT  # noqa: F401 - puts the checkout on sys.path

from videxp.inference.loop import complete_videos, resolve_inference
from videxp.models.interpolant.module import InterpolantModule
from videxp.utils.seeding import derive_seed, torch_generator

BATCH, FRAMES, SIZE = 8, 40, 64


def build(size: str, interpolant: str, device: torch.device, steps: int = 100) -> InterpolantModule:
    torch.manual_seed(0)
    module = InterpolantModule(
        image_size=SIZE,
        autoencoder={"kind": "vqgan", "preset": "f8_small"},
        size=size,
        interpolant=interpolant,
        sampling={"steps": steps},
    )
    module.ae_ready.fill_(1)  # random weights are fine for timing
    return module.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_rate(module: InterpolantModule, batch: dict, steps: int, device: torch.device) -> float:
    """Optimizer steps/s of the module's own loss on one fixed batch."""
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    for step in range(steps + 2):
        if step == 2:  # warm-up done
            sync(device)
            t0 = time.perf_counter()
        loss = module._loss(batch, torch_generator(derive_seed(0, step)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return steps / (time.perf_counter() - t0)


@torch.no_grad()
def sample_rate(module: InterpolantModule, device: torch.device, videos: int = 4) -> float:
    """Generated frames/s of autoreg next-frame sampling (2 observed -> 4 generated)."""
    generator = module.eval().generator()
    clips = torch.rand(videos, 6, 3, SIZE, SIZE, device=device) * 2 - 1
    request = {"name": "autoreg", "video_length": 6, "obs_length": 2, "step_size": 1}
    params = resolve_inference(request, generator)
    complete_videos(generator, clips[:, :3], {**params, "video_length": 3}, 0, range(videos), 0)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    complete_videos(generator, clips, params, 0, list(range(videos)), 0)
    sync(device)
    return videos * 4 / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="tiny", help="flow transformer preset: test | tiny | paper")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per mode")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    print(
        f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}; flow {args.size}, "
        f"autoencoder f8_small, {SIZE}x{SIZE}"
    )
    module = build(args.size, "linear", device)
    video = torch.rand(BATCH, FRAMES, 3, SIZE, SIZE, device=device) * 2 - 1  # [B, T, 3, H, W]
    latents = module.encode_frames(video)  # [B, T, 4, 8, 8]
    pixels = train_rate(module, {"video": video}, args.steps, device)
    cached = train_rate(module, {"latents": latents}, args.steps, device)
    print(f"training, batch {BATCH} x {FRAMES} frames: pixels {pixels:6.2f} steps/s, cached latents "
          f"{cached:6.2f} steps/s = {cached / pixels:4.1f}x")  # fmt: skip
    for name, interpolant, method in (("RK4-100", "linear", "rk4"), ("EM-100", "follmer", "em")):
        module = build(args.size, interpolant, device)
        module.sampling["method"] = method
        print(f"sampling {name:8s} ({interpolant}): {sample_rate(module, device):6.2f} frames/s")


if __name__ == "__main__":
    main()
