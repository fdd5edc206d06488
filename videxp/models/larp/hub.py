"""LARP checkpoints in the released (PyTorchModelHubMixin) format: a folder or hub repository holding
config.json (the constructor keywords) and model.safetensors. Reading resolves hub ids through
videxp.weights (offline: the cache only; missing -> ModelNotAvailable naming the id); networks are built on
the meta device and take the file's tensors after a strict key / shape check whose error names the file
and the keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import save_file

from videxp.errors import CheckpointError
from videxp.weights.files import ModelNotAvailable, parse_dtype, read_state_dict, resolve_weight_file
from videxp.weights.state_check import state_mismatch

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "LARPCheckpointError",
    "build_strict",
    "check_config",
    "read_checkpoint",
    "write_checkpoint",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class LARPCheckpointError(CheckpointError):
    """A LARP checkpoint whose keys or shapes do not match the network its config.json describes."""


def read_checkpoint(
    path_or_id: str | Path, what: str, revision: str | None = None, config: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(config, state dict, source) of a hub id, a local folder or a weight file.

    The config is `config` when given, else the config.json beside the weights (in the folder or the hub
    snapshot). A hub id is downloaded, or read from the Hugging Face cache when offline; what cannot be
    found raises ModelNotAvailable naming `path_or_id`.
    """
    weights = resolve_weight_file(path_or_id, f"{what} weights", revision)
    if config is None:
        config_path = weights.parent / CONFIG_FILE
        if not config_path.is_file():
            raise ModelNotAvailable(
                f"{what} {str(path_or_id)!r}: no {CONFIG_FILE} beside {weights} (LARP checkpoints hold the "
                f"constructor keywords there); pass `config=` or fetch the whole repository"
            )
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LARPCheckpointError(f"{config_path}: not readable JSON ({e})") from e
    return dict(config), read_state_dict(weights), str(weights)


def check_config(config: Mapping[str, Any], allowed: Iterable[str], source: str, what: str) -> None:
    """LARPCheckpointError when `config` has keys that are not keywords of `what`'s constructor."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise LARPCheckpointError(f"{source}: config keys {unknown} are not keywords of {what}")


def build_strict(
    build: Callable[[], nn.Module],
    state: Mapping[str, torch.Tensor],
    source: str,
    what: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> Any:
    """build() on the meta device, then the file's tensors assigned after a strict check (LARPCheckpointError
    naming `source` and the missing / unexpected / mis-shaped keys); cast to `dtype`, on `device`, eval."""
    with torch.device("meta"):
        model = build()
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise LARPCheckpointError(f"{source} does not match {what}: {problem}")
    dt = parse_dtype(dtype) if dtype is not None else None
    state = {
        k: (v.to(device, dt) if dt is not None and v.is_floating_point() else v.to(device)).contiguous()
        for k, v in state.items()
    }
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def write_checkpoint(
    folder: str | Path, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]
) -> Path:
    """config.json + model.safetensors in `folder` (created), the layout LARP's from_pretrained reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return folder
