"""Pretrained weight files: find one (local file, folder or hub id) and read its state dict."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from videxp.models.diffusers_loading import ModelNotAvailable
from videxp.weights import is_offline

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
    from videxp.models.diffusers_loading import hf_cache_dir

    return hf_cache_dir()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors / sharded index / torch file; wrappers and key prefixes removed."""
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        sd: dict[str, torch.Tensor] = {}
        for shard in shards:
            sd.update(read_state_dict(path.parent / shard))
        return sd
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

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
