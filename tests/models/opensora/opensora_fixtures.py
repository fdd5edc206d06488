"""Shared helpers for the Open-Sora v1.3 conformance tests: fixture loading (the weight rule is RIVER's)."""

from __future__ import annotations

import json

from conftest import REFERENCE_OUTPUTS
from models.interpolant.river_fixtures import rule_state_dict

OPENSORA_DATA = REFERENCE_OUTPUTS / "opensora"

__all__ = ["OPENSORA_DATA", "load_fixture", "mix_weights", "rule_state_dict", "spy_forward"]


def load_fixture(name: str) -> dict:
    """Parsed JSON of tests/reference_outputs/opensora/<name> (a manifest or a numeric fixture)."""
    path = OPENSORA_DATA / name
    if not path.is_file():
        raise FileNotFoundError(f"Open-Sora fixture {name!r} is missing: expected it at {path}")
    return json.loads(path.read_text())


def mix_weights(stdit, std: float = 0.3, seed: int = 1) -> None:
    """Give the STDiT3's zero-initialised layers (temporal residuals, condition embedders, final layer)
    random values, so frames influence each other and every weight gets gradients, as in a trained net."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in stdit.named_parameters():
            if p.is_floating_point() and p.abs().sum() == 0 and ".lora_" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def spy_forward(stdit, monkeypatch) -> list[dict]:
    """Record the keyword arguments of every STDiT3 forward call (x and timestep too) and run it."""
    calls: list[dict] = []
    forward = stdit.forward

    def spy(x, timestep, y, **kw):
        calls.append({"x": x, "t": timestep, **kw})
        return forward(x, timestep, y, **kw)

    monkeypatch.setattr(stdit, "forward", spy)
    return calls
