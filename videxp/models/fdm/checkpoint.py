"""Read and write FDM's checkpoint files `{"state_dict", "config", "step"}` (FDM-new `train_util.py`)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from videxp.models.fdm.unet import FDMUNet
from videxp.utils.io import atomic_path
from videxp.weights import state_check

_SHOW = 5  # how many offending keys an error message lists


def read_fdm_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", trusted: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, int | None]:
    """Return (state_dict, config or None, step or None) from an FDM `.pt` file or a bare state dict.

    Loads with `weights_only=True`; a file that needs full unpickling is refused unless `trusted`.
    A leading `module.` (DDP) on every key is stripped.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not trusted:
            raise ValueError(
                f"{path.name}: cannot be read with torch.load(weights_only=True) ({err}); "
                "pass trusted=True only if you trust the file"
            ) from err
        obj = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path.name}: expected a dict, got {type(obj).__name__}")
    if "state_dict" in obj:
        state, config, step = obj["state_dict"], obj.get("config"), obj.get("step")
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, config, step = obj, None, None  # a bare state dict
    else:
        raise ValueError(
            f"{path.name}: neither FDM's {{'state_dict', 'config', 'step'}} nor a bare state dict "
            f"(keys: {sorted(map(str, obj))[:_SHOW]})"
        )
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if config is not None:
        config = dict(config)
    return state, config, None if step is None else int(step)


def load_state_strict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict", assign: bool = False
) -> None:
    """Strict load into the FDM network with an error naming `source` and the offending keys."""
    state_check.load_state_strict(model, state, source, "the FDM network", assign=assign)


def load_fdm_checkpoint(
    path: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    trusted: bool = False,
) -> tuple[FDMUNet, dict[str, Any], int | None]:
    """Build `FDMUNet.from_fdm_config` from the file's config (or `config`, required for a bare state
    dict; it overrides the file's) and load the weights strictly. Returns (model, config, step);
    step is None when the file has none."""
    path = Path(path)
    state, file_config, step = read_fdm_file(path, map_location, trusted)
    config = dict(config) if config is not None else file_config
    if config is None:
        raise ValueError(f"{path.name}: a bare state dict has no config; pass config=")
    with torch.device("meta"):  # no init work: the file's tensors become the parameters
        model = FDMUNet.from_fdm_config(config)
    load_state_strict(model, state, source=path.name, assign=True)
    return model, config, step


def save_fdm_checkpoint(
    path: str | os.PathLike, model: nn.Module, config: Mapping[str, Any], step: int
) -> None:
    """Write `{"state_dict", "config", "step"}` (CPU tensors) atomically, readable by FDM's scripts.

    `config` must rebuild `model` through `FDMUNet.from_fdm_config` (checked on the meta device);
    it is stored as plain Python types so `weights_only=True` loading works.
    """
    config = _plain(config)
    with torch.device("meta"):
        probe = FDMUNet.from_fdm_config(config)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    load_state_strict(probe, state, source=f"model saved to {Path(path).name} with this config", assign=True)
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "config": config, "step": int(step)}, tmp)


def _plain(obj: Any) -> Any:
    """Mappings -> dict, sequences -> list, scalars kept (e.g. OmegaConf containers -> plain Python)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
