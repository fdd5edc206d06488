"""FVD protocol presets and the clip conventions they name: quantisation to 0-255 and the resize to 224."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from videxp.metrics.detector import INPUT_SIZE

# Every key a protocol preset must define, with the values each key accepts (None: any positive int).
PROTOCOL_KEYS: dict[str, tuple | str | None] = {
    "detector": "name",  # registered weights (videxp.weights) or a file: the protocol's own detector
    "num_real": "count",  # reference videos the protocol uses (at most; more are skipped), or "all"
    "num_fake": "count",  # generated videos per FVD (at most; per sample index with per_sample), or "all"
    "num_frames": None,  # frames per clip, or "all" (the whole clip handed in)
    "frames": ("first", "uniform"),  # num_frames from frame 0 at `stride` | spread evenly over the clip
    "stride": None,  # step between the chosen frames (frames=first)
    "quantize": ("round", "truncate", "none"),  # generated frames → uint8 (reals are uint8 already)
    "resize": ("direct", "short_side_crop", "tf_legacy"),  # bilinear 224×224 | short side + crop | TF1 op
    "covariance": ("population", "unbiased"),  # ÷N (StyleGAN-V) | ÷(N−1) (TF-GAN, np.cov)
    "include_context": (True, False),  # score the full video incl. the observed prefix
    "per_sample": (True, False),  # one FVD per sample index, reported as mean ± s.e.
    "trials": None,  # independent FVDs on consecutive groups of num_real / num_fake videos (VideoGPT)
    "real_offset": ("first", "random"),  # reference clip start: frame 0 | seeded random (StyleGAN-V)
    "offset_seed": "int",  # seed of the random reference offsets (any int)
    "fake_samples": "samples",  # sample indices that enter the generated side (None = all; SRVP: [0])
}
TRUNCATE_EPS = 1e-3  # in 0–255 units: float32 round-off of uint8-derived values never truncates a level down


def _plain(obj: Any) -> Any:
    """OmegaConf containers → plain dicts/lists (instantiate may hand us DictConfig).

    omegaconf is looked up, not imported: without it loaded there are no OmegaConf containers, and FVD
    then runs on machines without Hydra (bench/gpu_suite.py).
    """
    omegaconf = sys.modules.get("omegaconf")
    if omegaconf is not None and isinstance(obj, (omegaconf.DictConfig, omegaconf.ListConfig)):
        return omegaconf.OmegaConf.to_container(obj, resolve=True)
    return obj


def resolve_protocol(
    protocol: str, protocols: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Preset `protocols[protocol]` with every non-null entry of `overrides` on top, validated."""
    protocols = _plain(protocols) or {}
    if protocol not in protocols:
        raise ValueError(f"unknown FVD protocol {protocol!r}; presets: {sorted(protocols)}")
    resolved = dict(protocols[protocol])
    missing = sorted(set(PROTOCOL_KEYS) - set(resolved))
    extra = sorted(set(resolved) - set(PROTOCOL_KEYS))
    if missing or extra:
        raise ValueError(f"FVD protocol {protocol!r}: missing keys {missing}, unknown keys {extra}")
    for key, value in (overrides or {}).items():
        if key not in PROTOCOL_KEYS:
            raise ValueError(f"unknown FVD protocol key {key!r}; keys: {sorted(PROTOCOL_KEYS)}")
        if value is not None:
            resolved[key] = _plain(value)
    for key, allowed in PROTOCOL_KEYS.items():
        value = resolved[key]
        if allowed is not None:
            if allowed == "samples":
                ok = value is None or (
                    isinstance(value, list) and all(isinstance(v, int) and v >= 0 for v in value) and value
                )
                if not ok:
                    raise ValueError(
                        f"FVD {key}={value!r} (protocol {protocol!r}); expected null or a list of sample ids"
                    )
            elif allowed == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"FVD {key}={value!r} (protocol {protocol!r}); expected an int")
            elif allowed == "name":
                if not isinstance(value, str) or not value:
                    raise ValueError(
                        f"FVD {key}={value!r} (protocol {protocol!r}); expected a weights name or file"
                    )
            elif allowed == "count":
                if value != "all" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                    raise ValueError(
                        f"FVD {key}={value!r} (protocol {protocol!r}); expected a positive int or 'all'"
                    )
            elif value not in allowed:
                raise ValueError(f"FVD {key}={value!r} (protocol {protocol!r}); expected one of {allowed}")
        elif key == "num_frames" and value == "all":
            continue
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"FVD {key}={value!r} (protocol {protocol!r}); expected a positive int")
    if "all" in (resolved["num_real"], resolved["num_fake"]) and resolved["trials"] > 1:
        raise ValueError(f"FVD protocol {protocol!r}: trials > 1 needs numeric num_real and num_fake")
    if resolved["per_sample"] and resolved["trials"] > 1:
        raise ValueError(f"FVD protocol {protocol!r}: per_sample and trials > 1 cannot be combined")
    return resolved


def quantize(x: torch.Tensor, mode: str) -> torch.Tensor:
    """[0, 1] floats → values on the 0–255 scale: `round` (StyleGAN-V: uint8(x·255 + 0.5)), `truncate`
    (VideoGPT / FDM: uint8(x·255), with `TRUNCATE_EPS` slack for float round-off) or `none` (x·255)."""
    y = x * 255.0
    if mode == "round":
        return torch.floor((y + 0.5).clamp(0.0, 255.0))
    if mode == "truncate":
        return torch.floor((y + TRUNCATE_EPS).clamp(0.0, 255.0))
    if mode == "none":
        return y
    raise ValueError(f"quantize must be round | truncate | none, got {mode!r}")


def tf_legacy_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Interpolation matrix [n_out, n_in] of TF1's `resize_bilinear` (align_corners=False, no half-pixel
    centres): output i samples input position i·n_in/n_out, neighbours clamped to the last pixel."""
    pos = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)  # [n_out]
    lo = pos.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = pos - lo.to(torch.float64)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m.to(dtype=dtype, device=device)


def resize_frames(x: torch.Tensor, mode: str, size: int = INPUT_SIZE) -> torch.Tensor:
    """Resize frames [N, C, H, W] to [N, C, size, size], bilinear, no antialias.

    `direct`: both sides to `size`, `align_corners=False` (TATS / StyleGAN-V); `short_side_crop`: short
    side to `size`, long side `ceil` (VideoGPT), then the centre `size`×`size` crop; `tf_legacy`: both
    sides to `size` as TF1 `tf.image.resize_bilinear` does (no half-pixel centres; TF-Hub FVD, FDM, SRVP).
    """
    h, w = x.shape[-2:]
    if mode == "tf_legacy":
        mh = tf_legacy_matrix(h, size, x.dtype, x.device)  # [S, H]
        mw = tf_legacy_matrix(w, size, x.dtype, x.device)  # [S, W]
        return mh @ x @ mw.T  # [N, C, S, S]
    if mode == "direct":
        if (h, w) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if mode != "short_side_crop":
        raise ValueError(f"resize must be direct | short_side_crop, got {mode!r}")
    scale = size / min(h, w)
    th, tw = (size, math.ceil(w * scale)) if h <= w else (math.ceil(h * scale), size)
    if (th, tw) != (h, w):
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=False)
    top, left = (th - size) // 2, (tw - size) // 2
    return x[..., top : top + size, left : left + size]


def default_protocols() -> dict[str, dict[str, Any]]:
    """The presets of `conf/metric/fvd.yaml` (the config is the source; read from the packaged file)."""
    conf = Path(__file__).resolve().parents[1] / "conf" / "metric" / "fvd.yaml"
    return dict(yaml.safe_load(conf.read_text())["protocols"])
