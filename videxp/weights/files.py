"""Pretrained weights from a local path or a hub id: weight files and their state dicts, and diffusers /
transformers components; offline-aware, with errors that name what is missing and where to get it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from videxp.errors import VidexpError
from videxp.weights.registry import is_offline

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


class ModelNotAvailable(VidexpError, FileNotFoundError):
    """Pretrained files are not on this machine and may not (or could not) be downloaded."""


WEIGHT_FILES = (  # looked for, in this order, in a folder or hub repository
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors.index.json",
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
    "ema.pt",
)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")  # a folder's single weight file
WRAPPER_KEYS = ("state_dict", "model", "module", "ema")  # checkpoint dicts that nest the weights
KEY_PREFIXES = ("module.", "model.")  # DDP / Lightning wrappers; stripped when every key carries one


def hub_cache_dir() -> str:
    """The Hugging Face hub cache as the environment says now (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return hf_cache_dir()


def resolved_revision(pretrained: str | None, revision: str | None) -> dict[str, str | None] | None:
    """What a hub id and configured `revision` load, for manifests: {repo, revision, commit}.

    `commit` is `revision` itself when it is a 40-hex commit, else the commit the local Hugging Face cache
    maps the revision (default `main`) to (`<cache>/models--owner--name/refs/<revision>`), else None (not
    in the cache yet). A local folder or file, or no `pretrained`, gives None (nothing from the hub).
    """
    if not pretrained or Path(pretrained).expanduser().exists() or str(pretrained).count("/") != 1:
        return None
    commit = None
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower()):
        commit = revision.lower()
    else:
        ref = (
            Path(hub_cache_dir()) / f"models--{pretrained.replace('/', '--')}" / "refs" / (revision or "main")
        )
        with contextlib.suppress(OSError):
            commit = ref.read_text().strip() or None
    return {"repo": pretrained, "revision": revision, "commit": commit}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors / sharded index / torch file; wrappers and key prefixes removed."""
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        sd: dict[str, torch.Tensor] = {}
        for shard in shards:
            sd.update(read_state_dict(path.parent / shard))
        return sd
    if path.suffix == ".safetensors":
        obj: Any = load_file(str(path), device="cpu")
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict of tensors (top-level keys: {list(obj)[:8]})")
    sd = dict(obj)
    for prefix in KEY_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _resolve_hub(repo_id: str, what: str, revision: str | None) -> Path:
    """Download (or find in the cache) the weights of a hub repository; ModelNotAvailable when impossible."""
    from huggingface_hub import errors as hf_errors  # deferred: huggingface_hub is a heavy import
    from huggingface_hub import hf_hub_download

    offline = is_offline()
    cache = hub_cache_dir()
    last: Exception | None = None
    for name in WEIGHT_FILES:
        try:
            path = Path(
                hf_hub_download(repo_id, name, revision=revision, cache_dir=cache, local_files_only=offline)
            )
        except hf_errors.EntryNotFoundError as e:  # the repository exists but has no such file
            last = e
            continue
        except (OSError, ValueError, hf_errors.HfHubHTTPError) as e:  # offline miss, no repo, bad id, network
            last = e
            continue
        with contextlib.suppress(Exception):  # the model's own config.json, best effort
            hf_hub_download(
                repo_id, "config.json", revision=revision, cache_dir=cache, local_files_only=offline
            )
        if path.name.endswith(".index.json"):
            for shard in sorted(set(json.loads(path.read_text())["weight_map"].values())):
                hf_hub_download(repo_id, shard, revision=revision, cache_dir=cache, local_files_only=offline)
        return path
    why = "offline mode, not in the cache" if offline else "could not be downloaded"
    raise ModelNotAvailable(
        f"{what} {repo_id!r} (revision {revision or 'main'}) are not available: {why} "
        f"({type(last).__name__}: {last}). Looked for {', '.join(WEIGHT_FILES)}. "
        f"Hugging Face cache directory: {cache}; fetch them with `huggingface-cli download {repo_id}` "
        "on a machine with network access, or pass a local .safetensors / .pt file or folder."
    ) from last


def resolve_weight_file(path_or_id: str | os.PathLike, what: str, revision: str | None = None) -> Path:
    """A weight file from a local file, a local folder (one of WEIGHT_FILES, else its single weight file)
    or a hub id (downloaded, or read from the cache offline); ModelNotAvailable naming `what` otherwise."""
    local = Path(path_or_id).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        for name in WEIGHT_FILES:
            if (local / name).is_file():
                return local / name
        found = sorted(p for p in local.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if len(found) == 1:
            return found[0]
        raise ModelNotAvailable(
            f"{local} holds none of {', '.join(WEIGHT_FILES)} "
            f"(nor a single weight file; found {[p.name for p in found]})"
        )
    text = str(path_or_id)
    looks_local = text.startswith((".", "/", "~")) or local.suffix in WEIGHT_SUFFIXES
    if looks_local or text.count("/") != 1:
        raise ModelNotAvailable(f"{what} {text!r}: no such file or folder (nor a hub id 'owner/name')")
    return _resolve_hub(text, what, revision)


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
