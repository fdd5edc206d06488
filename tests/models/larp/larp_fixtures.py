"""Shared helpers for the LARP conformance tests: fixture loading, recipe inputs, the (RIVER) weight rule."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REFERENCE_OUTPUTS
from models.interpolant.river_fixtures import rule_state_dict

LARP_DATA = REFERENCE_OUTPUTS / "larp"

__all__ = ["LARP_DATA", "check_inputs", "expected", "load_fixture", "recipe_inputs", "rule_state_dict"]


def load_fixture(name: str) -> dict:
    """Parsed JSON of tests/reference_outputs/larp/<name> (a manifest or a numeric fixture)."""
    path = LARP_DATA / name
    if not path.is_file():
        raise FileNotFoundError(f"LARP fixture {name!r} is missing: expected it at {path}")
    return json.loads(path.read_text())


def recipe_inputs(fx: dict) -> dict:
    """The namespace the fixture's input recipe (the part before the first blank line) builds."""
    ns = {"torch": torch}
    exec(fx["input_recipe"].split("\n\n")[0], ns)
    return ns


def check_inputs(fx: dict, ns: dict) -> None:
    """Each recipe input against the fixture's `input_checks` (shape, dtype, sum, abs_sum, first values)."""
    for name, check in fx["input_checks"].items():
        value = ns[name]
        assert list(value.shape) == check["shape"], name
        assert str(value.dtype).removeprefix("torch.") == check["dtype"], name
        flat = value.double().reshape(-1)
        assert flat.sum().item() == pytest.approx(check["sum"], rel=1e-6, abs=1e-4), name
        assert flat.abs().sum().item() == pytest.approx(check["abs_sum"], rel=1e-6), name
        assert flat[:4].tolist() == pytest.approx([float(v) for v in check["first"]], rel=1e-6), name


def expected(fx: dict, name: str) -> torch.Tensor:
    """A recorded output as a tensor of its recorded dtype."""
    rec = fx["outputs"][name]
    return torch.tensor(rec["values"], dtype=getattr(torch, rec["dtype"]))
