"""Shared helpers for diffusers-based generators: dtypes, devices, memory options, frame conversion."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CPU_OFFLOAD = ("none", "model", "sequential")  # accepted values of `apply_memory_options(cpu_offload=...)`


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """`None` or "auto" means CUDA when available, else CPU; anything else is passed to torch.device."""
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def apply_memory_options(
    pipe: Any,
    *,
    cpu_offload: str = "none",
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    device: torch.device | str | None = None,
) -> Any:
    """Offload (`none` moves the whole pipeline to `device`; `model` / `sequential` use diffusers' hooks
    with `device` as the execution device) and VAE tiling/slicing. Returns the pipeline."""
    if cpu_offload not in CPU_OFFLOAD:
        raise ValueError(f"cpu_offload must be one of {CPU_OFFLOAD}, got {cpu_offload!r}")
    device = resolve_device(device)
    if cpu_offload == "none":
        pipe.to(device)
    elif device.type == "cpu":
        raise ValueError(f"cpu_offload={cpu_offload!r} needs an accelerator device; got device={device}")
    elif cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    vae = getattr(pipe, "vae", None)
    if vae_tiling or vae_slicing:
        if vae is None:
            raise ValueError(f"{type(pipe).__name__} has no vae; cannot enable VAE tiling/slicing")
        if vae_tiling:
            vae.enable_tiling()
        if vae_slicing:
            vae.enable_slicing()
    return pipe


def frames_to_pil(frames: torch.Tensor) -> list[Image.Image]:
    """[B, C, H, W] in [-1, 1] (C = 3 or 1) -> B RGB PIL images."""
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"expected frames [B, C, H, W] with C in (1, 3), got {tuple(frames.shape)}")
    x = ((frames.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [B, C, H, W]
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grey -> RGB
    return [Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()) for img in x]


def pipeline_video_to_tensor(video: Any) -> torch.Tensor:
    """A pipeline's `.frames` -> [B, T, C, H, W] float32 in [-1, 1].

    Accepts `output_type="pt"` ([B, T, C, H, W] in [0, 1]), `output_type="np"` ([B, T, H, W, C] in
    [0, 1], array or list of arrays) and lists of lists of PIL images (`output_type="pil"`).
    """
    if isinstance(video, list | tuple):
        if not video:
            raise ValueError("pipeline returned no videos")
        if isinstance(video[0], list | tuple) and video[0] and isinstance(video[0][0], Image.Image):
            arr = np.stack([np.stack([np.asarray(im.convert("RGB")) for im in v]) for v in video])
            return torch.from_numpy(arr).permute(0, 1, 4, 2, 3).float() / 127.5 - 1  # [B, T, C, H, W]
        video = np.stack([np.asarray(v) for v in video]) if isinstance(video[0], np.ndarray) else video
        if isinstance(video, list | tuple):
            video = torch.stack([torch.as_tensor(v) for v in video])
    if isinstance(video, np.ndarray):
        if video.ndim != 5:
            raise ValueError(f"expected an np video [B, T, H, W, C], got shape {video.shape}")
        video = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 1, 4, 2, 3)  # [B, T, C, H, W]
    if not isinstance(video, torch.Tensor) or video.ndim != 5:
        raise ValueError(f"expected a video [B, T, C, H, W], got {type(video).__name__}")
    return video.float().clamp(0, 1) * 2 - 1  # [B, T, C, H, W] in [-1, 1]


def resize_frames(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, T, C, H, W] -> [B, T, C, *size], bilinear with antialiasing; unchanged when already that size."""
    if x.ndim != 5:
        raise ValueError(f"expected [B, T, C, H, W], got {tuple(x.shape)}")
    B, T, C, H, W = x.shape
    if tuple(size) == (H, W):
        return x
    flat = x.reshape(B * T, C, H, W).float()  # [B*T, C, H, W]
    y = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return y.reshape(B, T, C, *size).to(x.dtype)


def merge_settings(given: dict[str, Any] | None, defaults: dict[str, Any], key: str) -> dict[str, Any]:
    """`defaults` updated with `given`; a key `defaults` does not know is an error naming `model.<key>`."""
    unknown = set(given or {}) - set(defaults)
    if unknown:
        raise ValueError(f"model.{key}: unknown keys {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **(given or {})}


def check_frame_size(sampling: dict[str, Any]) -> None:
    """ValueError unless sampling height / width are null or positive multiples of 16."""
    for key in ("height", "width"):
        if sampling[key] is not None and (int(sampling[key]) <= 0 or int(sampling[key]) % 16):
            raise ValueError(f"model.sampling.{key}={sampling[key]} must be a positive multiple of 16")


def row_prompts(cond: dict[str, Any], rows: int, default: str | None) -> list[str]:
    """One prompt per row: cond["prompt"][b] where non-empty, else `default`; an error if neither."""
    given = cond.get("prompt")
    if given is not None and len(given) != rows:
        raise ValueError(f"cond['prompt'] has {len(given)} entries for {rows} rows")
    out = []
    for b in range(rows):
        text = given[b] if given is not None and given[b] else default
        if not text:
            raise ValueError(
                f"row {b} has no prompt: the dataset gives none (cond['prompt']) and "
                "model.sampling.prompt is not set"
            )
        out.append(str(text))
    return out
