"""Shared helpers for the RIVER and Open-Sora conformance tests: fixture loading, the weight rule."""

from __future__ import annotations

import json
import math
import zlib

import torch
from conftest import REFERENCE_OUTPUTS

RIVER_DATA = REFERENCE_OUTPUTS / "river"


def load_fixture(name: str) -> dict:
    """Parsed JSON of tests/reference_outputs/river/<name> (a manifest or a numeric fixture)."""
    path = RIVER_DATA / name
    if not path.is_file():
        raise FileNotFoundError(f"RIVER fixture {name!r} is missing: expected it at {path}")
    return json.loads(path.read_text())


def _rule_value(key: str, shape: list[int]) -> torch.Tensor:
    """The fixtures' deterministic float32 (or int64) value for state-dict entry `key` of `shape`."""
    shape = tuple(shape)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):  # the only integer entries (BatchNorm counters)
        return torch.zeros(shape, dtype=torch.int64)
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) * (1.0 / math.sqrt(math.prod(shape[1:])))
    if len(shape) == 1 and key.endswith("running_var"):
        return 1 + 0.1 * torch.rand(shape, generator=g)
    if len(shape) == 1 and key.endswith(("weight", "scale", "gamma")):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)  # biases, running_mean, other 1-D / 0-D entries


def rule_state_dict(keys_to_shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Rule weights (README "Deterministic weight rule") for every key of a {key: shape} mapping."""
    return {key: _rule_value(key, shape) for key, shape in keys_to_shapes.items()}
