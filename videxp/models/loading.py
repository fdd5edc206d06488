"""Turn a model config plus a checkpoint (or `random`, or weights the config names) into a ready generator."""

from __future__ import annotations

import inspect
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from videxp.callbacks.checkpoints import MODULE_KEY
from videxp.errors import CheckpointError
from videxp.inference.generator import Generator
from videxp.weights.registry import sha256_file

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
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass ckpt_path=<an existing file or run folder>"
        )
    return path


RANDOM = "random"  # ckpt_path=random: sample with random weights, on purpose (recorded in the manifest)


def read_checkpoint(path: str | Path) -> Any:
    """The content of a torch checkpoint file, tensors only (`weights_only=True`, memory-mapped when the
    file is a torch archive). CheckpointError naming the file when it is empty, not a torch file, cut
    short, or pickles Python objects besides tensors and plain data (never unpickled here)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes), not a checkpoint: it was never written completely; "
            "point ckpt_path at a finished checkpoint"
        )
    archive = zipfile.is_zipfile(path)  # torch.save's format; older torch files are plain pickles
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=archive)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))  # weights_only met a class or function
        if found is None:
            raise CheckpointError(_not_a_checkpoint(path, size, archive)) from None
        raise CheckpointError(
            f"{path} pickles Python objects besides tensors and plain data ({found.group(1)}); videxp "
            "loads weights only and never unpickles code from a file: export the weights (a state dict) "
            "and pass that file"
        ) from None
    except Exception:  # noqa: BLE001 - torch's own advice (mmap, weights_only) is not the fix here
        raise CheckpointError(_not_a_checkpoint(path, size, archive)) from None


def _not_a_checkpoint(path: Path, size: int, archive: bool) -> str:
    what = "a damaged torch archive" if archive else "neither a torch archive nor a torch pickle"
    return (
        f"{path} ({size} bytes) is not a checkpoint: {what} (cut short, or another kind of file); "
        "point ckpt_path at a .ckpt / .pt file written by torch"
    )


def is_lightning_checkpoint(path: Path) -> bool:
    """Whether `path` holds a Lightning checkpoint (a dict with state_dict and hyper_parameters)."""
    ckpt = read_checkpoint(path)
    return isinstance(ckpt, dict) and "state_dict" in ckpt and "hyper_parameters" in ckpt


def check_family(path: Path, ckpt: Mapping[str, Any], cls: type) -> None:
    """CheckpointError naming both classes when the Lightning checkpoint `ckpt` was saved from another
    module class than `cls`: by the class it records, else by hyper-parameters `cls` does not take."""
    target = f"{cls.__module__}.{cls.__qualname__}"
    saved = ckpt.get(MODULE_KEY)
    if saved is not None:
        if saved != target:
            raise CheckpointError(
                f"{path} was saved by {saved}, but model={target}; choose the model config of that "
                "family (model=...) or a checkpoint of this one"
            )
        return
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    foreign = sorted(set(ckpt.get("hyper_parameters") or {}) - set(params))
    if foreign:
        raise CheckpointError(
            f"{path} belongs to another model family than model={target}: its hyper-parameters "
            f"{foreign[:5]} are not parameters of {cls.__name__}; choose the model config the checkpoint "
            "was trained with (model=...) or a checkpoint of this family"
        )


def config_weights(cls: type, model_cfg: DictConfig | Mapping[str, Any]) -> str | None:
    """Where the weights come from without a checkpoint: what the class's `config_weights(cfg)` says
    (pretrained files its config names), or None when they would be random."""
    hook = getattr(cls, "config_weights", None)
    if hook is None:
        return None
    if OmegaConf.is_config(model_cfg):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    return hook(dict(model_cfg))


def device_from(spec: str | None) -> torch.device:
    """`auto` means CUDA when available, else CPU."""
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def build_module(model_cfg: DictConfig, ckpt_path: str | Path | None) -> tuple[Any, dict[str, Any]]:
    """Instantiate the model and load weights; returns (module, info for the manifest).

    A Lightning checkpoint rebuilds the module from its own saved hyper-parameters (the architecture
    it was trained with); the keys the class lists in `sampling_keys` are taken from the current
    config instead, so sampling settings can change at sample time. Any other file is handed to the
    module's `load_weights(path)` (FDM: its released `{"state_dict","config","step"}` files). Without a
    checkpoint the config must name the weights (`config_weights`: pretrained models); random weights
    only with `ckpt_path=random`. `info`: checkpoint (resolved path, `random` or None), its sha256 and
    step, and `weights` (where they came from).
    """
    cls = get_class(model_cfg._target_)
    if ckpt_path is None or str(ckpt_path) == RANDOM:
        source = RANDOM if ckpt_path is not None else config_weights(cls, model_cfg)
        if source is None:
            raise CheckpointError(
                f"no checkpoint given (ckpt_path=null) and model={model_cfg._target_} loads no weights of "
                "its own: sampling would use random weights. Pass ckpt_path=<training run folder or "
                "checkpoint file>, or ckpt_path=random to sample with random weights on purpose"
            )
        if source == RANDOM:
            log.warning("ckpt_path=random: %s samples with random weights", cls.__name__)
        info = {"checkpoint": RANDOM if source == RANDOM else None, "checkpoint_sha256": None}
        return instantiate(model_cfg), {**info, "weights": source}
    path = resolve_checkpoint(ckpt_path)
    info = {"checkpoint": str(path.resolve()), "checkpoint_sha256": sha256_file(path)}
    info["weights"] = "checkpoint"
    ckpt = read_checkpoint(path)
    if isinstance(ckpt, dict) and "state_dict" in ckpt and "hyper_parameters" in ckpt:
        check_family(path, ckpt, cls)
        overrides = {
            k: OmegaConf.to_container(model_cfg[k], resolve=True)
            if OmegaConf.is_config(model_cfg[k])
            else model_cfg[k]
            for k in getattr(cls, "sampling_keys", ())
            if k in model_cfg
        }
        info["step"] = ckpt.get("global_step")
        del ckpt
        module = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True, **overrides)
        return module, info
    del ckpt
    module = instantiate(model_cfg)
    if not hasattr(module, "load_weights"):
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint, and {cls.__name__} reads no other format; pass a "
            "checkpoints/last.ckpt of videxp-train (or its run folder)"
        )
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
