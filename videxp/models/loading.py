"""Turn a model config plus an optional checkpoint into a ready generator for sampling."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from videxp.inference.generator import Generator

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str | Path) -> Path:
    """A training run folder means its checkpoints/last.ckpt; a file is taken as it is."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / "checkpoints" / "last.ckpt"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"{path} is a folder without checkpoints/last.ckpt; pass a checkpoint file"
            )
        return candidate
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def is_lightning_checkpoint(path: Path) -> bool:
    """Whether `path` holds a Lightning checkpoint (a dict with state_dict and hyper_parameters)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"{path}: cannot be read as a torch checkpoint ({e})") from e
    return isinstance(ckpt, dict) and "state_dict" in ckpt and "hyper_parameters" in ckpt


def device_from(spec: str | None) -> torch.device:
    """`auto` means CUDA when available, else CPU."""
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def build_module(model_cfg: DictConfig, ckpt_path: str | Path | None) -> tuple[Any, dict[str, Any]]:
    """Instantiate the model and load weights.

    A Lightning checkpoint rebuilds the module from its own saved hyper-parameters (the architecture
    it was trained with); the keys the class lists in `sampling_keys` are taken from the current
    config instead, so sampling settings can change at sample time. Any other file is handed to the
    module's `load_weights(path)` (FDM: its released `{"state_dict","config","step"}` files).
    """
    info: dict[str, Any] = {"checkpoint": None}
    if ckpt_path is None:
        return instantiate(model_cfg), info
    path = resolve_checkpoint(ckpt_path)
    info["checkpoint"] = str(path.resolve())
    cls = get_class(model_cfg._target_)
    if is_lightning_checkpoint(path):
        overrides = {
            k: OmegaConf.to_container(model_cfg[k], resolve=True)
            if OmegaConf.is_config(model_cfg[k])
            else model_cfg[k]
            for k in getattr(cls, "sampling_keys", ())
            if k in model_cfg
        }
        module = cls.load_from_checkpoint(path, map_location="cpu", **overrides)
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        info["step"] = ckpt.get("global_step")
        return module, info
    module = instantiate(model_cfg)
    if not hasattr(module, "load_weights"):
        raise ValueError(f"{path}: not a Lightning checkpoint, and {cls.__name__} reads no other format")
    info["step"] = module.load_weights(path)
    return module, info


def build_generator(
    model_cfg: DictConfig, ckpt_path: str | Path | None, device: torch.device
) -> tuple[Generator, dict[str, Any]]:
    """The generator for sampling, on `device`, with what was loaded recorded in the returned info."""
    module, info = build_module(model_cfg, ckpt_path)
    if isinstance(module, torch.nn.Module):
        module = module.to(device).eval()
    generator = module.generator() if hasattr(module, "generator") else module
    if not isinstance(generator, Generator):
        raise TypeError(f"{type(module).__name__} is neither a Generator nor has a generator() method")
    return generator, info
