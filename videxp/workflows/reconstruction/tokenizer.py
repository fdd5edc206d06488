"""The LARP tokenizer a reconstruction run evaluates, from the `model.*` keys of conf/model/larp.yaml."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from videxp.errors import ConfigError
from videxp.models.larp.module import DEFAULT_TOKENIZER
from videxp.models.larp.module import build_tokenizer as build_larp_tokenizer
from videxp.models.larp.tokenizer import LARPTokenizer
from videxp.weights.files import parse_dtype

SIZES = ("paper", "tiny")  # model.size of conf/model/larp.yaml


def tokenizer_settings(cfg: DictConfig) -> dict[str, Any]:
    """model.size / model.tokenizer.{pretrained, revision, dtype, deterministic}, read with defaults so that
    any LARP model config carrying them works; a config without them is refused (model=larp)."""
    size = OmegaConf.select(cfg, "model.size")
    if size not in SIZES:
        raise ConfigError(
            f"tokenizer reconstruction needs a LARP model config: model.size={size!r} is not one of "
            f"{sorted(SIZES)} (use model=larp)"
        )
    dtype = str(OmegaConf.select(cfg, "model.tokenizer.dtype", default="fp32"))
    try:
        parse_dtype(dtype)
    except ValueError as err:
        raise ConfigError(f"model.tokenizer.dtype: {err}") from None
    own = OmegaConf.select(cfg, "reconstruction.deterministic")  # null: the model's setting
    model = OmegaConf.select(cfg, "model.tokenizer.deterministic", default=True)
    deterministic = model if own is None else own
    if not isinstance(deterministic, bool):
        raise ConfigError(f"reconstruction.deterministic must be true, false or null, got {deterministic!r}")
    node = OmegaConf.select(cfg, "model.tokenizer", default=None)
    given = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    unknown = set(given) - set(DEFAULT_TOKENIZER)
    if unknown:
        known = sorted(DEFAULT_TOKENIZER)
        raise ConfigError(f"model.tokenizer: unknown keys {sorted(unknown)}; known: {known}")
    return {
        **DEFAULT_TOKENIZER,
        **given,
        "pretrained": given.get("pretrained"),  # absent: random weights (the module's default is the hub id)
        "size": size,
        "dtype": dtype,
        "deterministic": deterministic,
    }


def build_tokenizer(settings: dict[str, Any], seed: int, device: torch.device) -> LARPTokenizer:
    """The tokenizer in eval mode on `device` (fp32 weights; `dtype` is the autocast of encode / decode), as
    LARPModule builds it (`pretrained`, else the `size` preset with `preset` / `vq` / `ckpt`), without the
    training prior; random weights are seeded by `seed`. The VQ argmaxes its ids when `deterministic`, else
    samples them (LARP's default)."""
    torch.manual_seed(int(seed))  # random weights: the same for every run with this seed
    keys = {k: settings[k] for k in DEFAULT_TOKENIZER}
    random = settings["pretrained"] is None  # a pretrained tokenizer is loaded whatever model.size says
    tokenizer = build_larp_tokenizer(settings["size"], keys, random, with_prior=False).to(device).eval()
    tokenizer.set_vq_eval_deterministic(bool(settings["deterministic"]))
    return tokenizer
