"""Shared helpers for diffusers-based generators: dtypes, devices, offline-aware loading, frame conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from videxp.weights import is_offline

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
CPU_OFFLOAD = ("none", "model", "sequential")  # accepted values of `apply_memory_options(cpu_offload=...)`


class ModelNotAvailable(FileNotFoundError):
    """Pretrained files are not on this machine and may not (or could not) be downloaded."""


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """ "bf16"/"bfloat16", "fp16"/"float16", "fp32"/"float32" (or a torch.dtype) as a torch.dtype."""
    if isinstance(name, torch.dtype):
        return name
    key = str(name).strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype as its short name for manifests, e.g. torch.bfloat16 -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """`None` or "auto" means CUDA when available, else CPU; anything else is passed to torch.device."""
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder files are looked up in (`HF_HUB_CACHE` / `HF_HOME`)."""
    from huggingface_hub import constants  # deferred: huggingface_hub is a heavy import

    return str(constants.HF_HUB_CACHE)


def _missing_message(pretrained: str, subfolder: str | None, revision: str | None, reason: str) -> str:
    where = f"subfolder {subfolder!r}" if subfolder else "the repository root"
    fetch = (
        f"the local folder {pretrained} must hold the component's files"
        if Path(pretrained).expanduser().exists()
        else f"fetch it with `huggingface-cli download {pretrained}"
        + (f" --revision {revision}" if revision else "")
        + "` (or `hf download ...`) on a machine with network access, or pass a local folder as "
        "model.pretrained"
    )
    return (
        f"pretrained model {pretrained!r} ({where}, revision {revision or 'main'}) is not available: "
        f"{reason}. "
        f"Hugging Face cache directory: {hf_cache_dir()}; {fetch}."
    )


def load_component(
    cls: Any,
    pretrained: str,
    subfolder: str | None,
    dtype: torch.dtype | str | None,
    *,
    revision: str | None = None,
    **kw: Any,
) -> Any:
    """`cls.from_pretrained(pretrained, subfolder=..., revision=..., dtype)` with a clear error when missing.

    `pretrained` is a hub id or a local folder. Offline (`HF_HUB_OFFLINE` / `VIDEXP_OFFLINE`) only the
    local folder or the hub cache is read (`local_files_only=True`). Missing files raise
    `ModelNotAvailable` naming the id, subfolder, revision and cache folder. `dtype` is None for
    components without weights (tokenizers, processors, schedulers).
    """
    offline = is_offline()
    kwargs: dict[str, Any] = dict(kw)
    if subfolder:
        kwargs["subfolder"] = subfolder
    if revision:
        kwargs["revision"] = revision
    if offline:
        kwargs["local_files_only"] = True
    if dtype is not None:
        dtype = parse_dtype(dtype)
        try:
            from transformers import PreTrainedModel  # deferred: transformers is a heavy import

            is_transformers = isinstance(cls, type) and issubclass(cls, PreTrainedModel)
        except ImportError:  # pragma: no cover - transformers is a dependency of the diffusers extras
            is_transformers = False
        kwargs["dtype" if is_transformers else "torch_dtype"] = dtype  # transformers 5 renamed torch_dtype
    local = Path(pretrained).expanduser()
    if local.exists() and not local.is_dir():
        reason = "it is a file, not a folder"
        raise ModelNotAvailable(_missing_message(pretrained, subfolder, revision, reason))
    if local.is_dir() and subfolder and not (local / subfolder).is_dir():
        raise ModelNotAvailable(
            _missing_message(pretrained, subfolder, revision, f"{local / subfolder} does not exist")
        )
    from huggingface_hub import errors as hf_errors  # deferred: huggingface_hub is a heavy import

    try:
        return cls.from_pretrained(str(local) if local.is_dir() else pretrained, **kwargs)
    except (OSError, hf_errors.HfHubHTTPError, hf_errors.HFValidationError) as e:
        why = "offline mode, not in the cache" if offline else "could not be loaded"
        reason = f"{why} ({type(e).__name__}: {e})"
        raise ModelNotAvailable(_missing_message(pretrained, subfolder, revision, reason)) from e


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
