"""Read RIVER / taming / PFI weight files and load them into the autoencoders and the flow network."""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videxp.models.interpolant.autoencoder import LatentAutoencoder
from videxp.weights import registry as weights

log = logging.getLogger(__name__)

DDP_PREFIX = "module."  # DistributedDataParallel's prefix, stripped from every key that carries it
AUTOENCODER_PREFIXES = ("", "ae.", "ae.backbone.")  # bare, RIVER (taming AE), RIVER (CLEVRER VQVAE)
FLOW_PREFIXES = ("", "vector_field_regressor.")  # bare / PFI, RIVER's full model
WHICH = ("model", "ema")  # the two weight sets of a PFI checkpoint
# kind -> (module, class) of the autoencoders, imported only when built
AUTOENCODERS = {
    "vqgan": ("videxp.models.interpolant.vqgan", "TamingVQGAN"),  # taming f8_small (KTH, BAIR-64)
    "vqvae": ("videxp.models.interpolant.vqvae", "RiverVQVAE"),  # RIVER's own VQVAE (CLEVRER)
}
SHOW_KEYS = 5  # keys quoted in error messages


# ----------------------------------------------------------------------------- reading files
class _Stub:
    """Stand-in for a pickled object whose class cannot be imported (e.g. PFI's `Config`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _LenientUnpickler(pickle.Unpickler):
    """A regular unpickler that substitutes `_Stub` for classes whose module or name is missing."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            log.debug("unpickling %s.%s as a stub: it cannot be imported", module, name)
            return type(name, (_Stub,), {"__module__": module})


# torch.load(pickle_module=...) needs a module-like object with `Unpickler`, `load` and `__name__`
_LENIENT_PICKLE = types.ModuleType("videxp_lenient_pickle")
_LENIENT_PICKLE.Unpickler = _LenientUnpickler
_LENIENT_PICKLE.load = lambda f, **kw: _LenientUnpickler(f, **kw).load()


def _is_pickle_refusal(err: Exception) -> bool:
    """Whether torch.load(weights_only=True) failed because the file pickles non-tensor objects."""
    text = str(err)
    return "Weights only load failed" in text and ("GLOBAL" in text or "global" in text)


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    """torch.load with weights_only=True, or (trust_pickle) a full unpickle tolerant of missing classes."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure is reported with the file name
        if not _is_pickle_refusal(err):
            raise ValueError(
                f"{path}: cannot be read as a torch checkpoint ({type(err).__name__}: {err})"
            ) from err
        if not trust_pickle:
            found = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
            what = f"e.g. {found.group(1)}" if found else "see the chained error"
            raise ValueError(
                f"{path}: torch.load(weights_only=True) refused it: it pickles Python objects besides "
                f"tensors ({what}; PFI checkpoints pickle their `Config`). If you trust where the file "
                "comes from, pass trust_pickle=True to unpickle it in full (weights_only=False: "
                "unpickling may run code)"
            ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_LENIENT_PICKLE)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: cannot be unpickled ({type(err).__name__}: {err})") from err


def _tensor_dict(obj: Any) -> bool:
    """True for a non-empty mapping of str keys to tensors."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_state_dict(
    path: str | os.PathLike, *, which: str = "model", trust_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """The state dict inside a released weight file, on CPU.

    Formats: a Lightning / taming `.ckpt` (``["state_dict"]``, training-only keys such as ``loss.*``
    kept), RIVER's ``{"model": sd}`` (`vqvae.pth`, `model.pth`), PFI's ``{"model", "ema", "opt",
    "config", "step"}`` (`which` picks "model" or "ema"), or a bare state dict. Keys are returned as
    stored (``module.`` prefixes included; `select_prefixed` strips them). Files are read with
    ``weights_only=True``; one that pickles other objects (PFI's `Config`) needs `trust_pickle=True`,
    which unpickles it in full, standing in a stub for any class that cannot be imported.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    obj = _torch_load(path, trust_pickle)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected a dict of weights")
    if which == "ema":
        if "ema" not in obj:
            raise ValueError(
                f"{path}: which='ema' but the file has no 'ema' entry (top-level keys: {_keys(obj)})"
            )
        state, where = obj["ema"], "['ema']"
    elif isinstance(obj.get("state_dict"), Mapping):
        state, where = obj["state_dict"], "['state_dict']"
    elif isinstance(obj.get("model"), Mapping):
        state, where = obj["model"], "['model']"
    else:
        state, where = obj, ""
    if not _tensor_dict(state):
        raise ValueError(
            f"{path}{where}: not a state dict (expected str -> tensor entries); top-level keys: {_keys(obj)}"
        )
    return dict(state)


def _keys(obj: Mapping) -> list[str]:
    """The first few keys of a mapping, for error messages."""
    return [str(k) for k in list(obj)[:SHOW_KEYS]]


# ----------------------------------------------------------------------------- prefixes
def strip_ddp(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with one leading ``module.`` removed from each key that has it."""
    return {(k[len(DDP_PREFIX) :] if k.startswith(DDP_PREFIX) else k): v for k, v in state.items()}


def _normalise_prefixes(prefixes: Iterable[str]) -> list[str]:
    """Prefixes without a leading ``module.`` (keys lose theirs), duplicates dropped, order kept."""
    out: list[str] = []
    for p in prefixes:
        p = p[len(DDP_PREFIX) :] if p.startswith(DDP_PREFIX) else p
        if p not in out:
            out.append(p)
    return out


def find_prefixed(
    state: Mapping[str, torch.Tensor],
    prefixes: Iterable[str],
    required_keys: Iterable[str],
    what: str,
    path: str | os.PathLike,
) -> tuple[str, dict[str, torch.Tensor]]:
    """(prefix, sub-dict): the first prefix under which every required key is present.

    Keys lose one leading ``module.`` first. The sub-dict maps each required key (prefix removed) to its
    tensor; other keys of the file (``loss.*``, the other network) are ignored. When no prefix fits,
    the ValueError names the file, the prefixes tried and the first keys the closest one lacks.
    """
    stripped = strip_ddp(state)
    required = list(required_keys)
    tried = _normalise_prefixes(prefixes)
    if not tried:
        raise ValueError(f"select_prefixed: no prefixes given for the {what} in {path}")
    best: tuple[int, str, list[str]] | None = None
    for prefix in tried:
        missing = [k for k in required if prefix + k not in stripped]
        if not missing:
            return prefix, {k: stripped[prefix + k] for k in required}
        if best is None or len(missing) < best[0]:
            best = (len(missing), prefix, missing)
    assert best is not None
    n, prefix, missing = best
    raise ValueError(
        f"{path}: no {what} weights found under any prefix tried {tried}; the closest, {prefix!r}, lacks "
        f"{n} of {len(required)} keys, e.g. {[prefix + k for k in missing[:SHOW_KEYS]]}. "
        f"The file has {len(stripped)} keys (after removing 'module.'), e.g. {_keys(stripped)}"
    )


def select_prefixed(
    state: Mapping[str, torch.Tensor],
    prefixes: Iterable[str],
    required_keys: Iterable[str],
    what: str,
    path: str | os.PathLike,
) -> dict[str, torch.Tensor]:
    """The required keys (prefix removed) under the first fitting prefix; see `find_prefixed`."""
    return find_prefixed(state, prefixes, required_keys, what, path)[1]


# ----------------------------------------------------------------------------- loading
def check_sha256(path: str | os.PathLike, sha256: str | None) -> str:
    """Hex sha256 of the file; raise `videxp.weights.ChecksumError` when an expected one differs."""
    got = weights.sha256_file(path)
    if sha256 is not None and got != sha256.strip().lower():
        raise weights.ChecksumError(
            f"{path}: sha256 mismatch (expected {sha256.strip().lower()}, got {got}). The file is corrupt, "
            "truncated or a different file; it was not loaded"
        )
    return got


def load_module_weights(
    net: nn.Module,
    path: str | os.PathLike,
    prefixes: Iterable[str],
    what: str,
    *,
    which: str = "model",
    sha256: str | None = None,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Verify, read, select and strictly load one network's weights; returns the load info."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} weight file {path} does not exist")
    digest = check_sha256(path, sha256)
    state = read_state_dict(path, which=which, trust_pickle=trust_pickle)
    target = net.state_dict()
    prefix, sub = find_prefixed(state, prefixes, target.keys(), what, path)
    bad = [
        f"{prefix}{k}: {tuple(v.shape)} in the file, {tuple(target[k].shape)} in the network"
        for k, v in sub.items()
        if v.shape != target[k].shape
    ]
    if bad:
        raise ValueError(
            f"{path}: {len(bad)} {what} tensors have the wrong shape (a different configuration?): "
            + "; ".join(bad[:SHOW_KEYS])
        )
    net.load_state_dict(sub, strict=True)
    info = {"path": str(path), "prefix": prefix, "num_keys": len(sub), "sha256": digest, "which": which}
    log.info("loaded %d %s tensors from %s (prefix %r)", len(sub), what, path, prefix)
    return info


def load_autoencoder(
    ae: LatentAutoencoder,
    path: str | os.PathLike,
    sha256: str | None = None,
    *,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Load a released autoencoder file (taming `.ckpt`, RIVER `vqvae.pth` / `model.pth`, ours) strictly.

    Prefixes tried: the autoencoder's `checkpoint_prefixes`, then ``""``, ``"ae."``, ``"ae.backbone."``.
    Returns {path, prefix, num_keys, sha256, which}.
    """
    prefixes = [*getattr(ae, "checkpoint_prefixes", ()), *AUTOENCODER_PREFIXES]
    return load_module_weights(
        ae, path, prefixes, f"{type(ae).__name__} autoencoder", sha256=sha256, trust_pickle=trust_pickle
    )


def load_flow_network(
    net: nn.Module,
    path: str | os.PathLike,
    which: str = "model",
    sha256: str | None = None,
    *,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Load the vector-field network from RIVER's `model.pth` or a PFI checkpoint (`which`: model | ema).

    Prefixes tried: ``""`` and ``"vector_field_regressor."`` (after removing ``module.``); the
    autoencoder keys RIVER stores beside it are ignored. Returns {path, prefix, num_keys, sha256, which}.
    """
    return load_module_weights(
        net,
        path,
        FLOW_PREFIXES,
        f"{type(net).__name__} flow network",
        which=which,
        sha256=sha256,
        trust_pickle=trust_pickle,
    )


def autoencoder_class(kind: str) -> type[LatentAutoencoder]:
    """The autoencoder class of a kind ("vqgan" | "vqvae"), imported on first use."""
    if kind not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder kind {kind!r}; known: {sorted(AUTOENCODERS)}")
    module_name, class_name = AUTOENCODERS[kind]
    return getattr(importlib.import_module(module_name), class_name)


def build_autoencoder(
    kind: str,
    preset: str,
    ckpt: str | os.PathLike | None = None,
    sha256: str | None = None,
    **overrides: Any,
) -> LatentAutoencoder:
    """A named autoencoder preset (with constructor overrides), loaded from `ckpt` when given."""
    if sha256 is not None and ckpt is None:
        raise ValueError("build_autoencoder: sha256 given without a ckpt to check")
    ae = autoencoder_class(kind).from_preset(preset, **overrides)
    if ckpt is not None:
        load_autoencoder(ae, ckpt, sha256)
    return ae
