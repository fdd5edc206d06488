"""The LARP tokenizer a reconstruction run evaluates, from the `model.*` keys of conf/model/larp.yaml."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from videxp.errors import ConfigError
from videxp.models.larp.tokenizer import LARPTokenizer, larp_tokenizer_config

SIZES = {"paper": "larp_l_long", "tiny": "tiny"}  # model.size -> tokenizer preset (random weights)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    if dtype not in DTYPES:
        raise ConfigError(f"model.tokenizer.dtype={dtype!r}: use one of {sorted(DTYPES)}")
    own = OmegaConf.select(cfg, "reconstruction.deterministic")  # null: the model's setting
    model = OmegaConf.select(cfg, "model.tokenizer.deterministic", default=True)
    deterministic = model if own is None else own
    if not isinstance(deterministic, bool):
        raise ConfigError(f"reconstruction.deterministic must be true, false or null, got {deterministic!r}")
    return {
        "size": size,
        "pretrained": OmegaConf.select(cfg, "model.tokenizer.pretrained"),
        "revision": OmegaConf.select(cfg, "model.tokenizer.revision"),
        "dtype": dtype,
        "deterministic": deterministic,
    }


def build_tokenizer(settings: dict[str, Any], seed: int, device: torch.device) -> LARPTokenizer:
    """The tokenizer in eval mode on `device` (fp32 weights; `dtype` is the autocast of encode / decode):
    `pretrained` (hub id, folder or weight file) when set, else the `size` preset with weights seeded by
    `seed`. The VQ argmaxes its ids when `deterministic`, else samples them (LARP's default)."""
    if settings["pretrained"] is not None:
        tokenizer = LARPTokenizer.from_pretrained(
            str(settings["pretrained"]), settings["revision"], with_prior=False, device=device
        )
    else:
        torch.manual_seed(int(seed))  # random weights: the same for every run with this seed
        tokenizer = LARPTokenizer(**larp_tokenizer_config(SIZES[settings["size"]], build_prior=False))
        tokenizer = tokenizer.to(device)
    tokenizer.eval()
    tokenizer.set_vq_eval_deterministic(bool(settings["deterministic"]))
    return tokenizer
