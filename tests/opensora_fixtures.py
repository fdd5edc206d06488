"""Shared helpers for the Open-Sora v1.3 conformance tests: fixture loading (the weight rule is RIVER's)."""

from __future__ import annotations

import json
from pathlib import Path

from river_fixtures import rule_state_dict

OPENSORA_DATA = Path(__file__).resolve().parent / "data" / "opensora"

__all__ = ["OPENSORA_DATA", "load_fixture", "rule_state_dict"]


def load_fixture(name: str) -> dict:
    """Parsed JSON of tests/data/opensora/<name> (a manifest or a numeric fixture)."""
    path = OPENSORA_DATA / name
    if not path.is_file():
        raise FileNotFoundError(f"Open-Sora fixture {name!r} is missing: expected it at {path}")
    return json.loads(path.read_text())
