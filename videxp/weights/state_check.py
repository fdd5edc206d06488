"""Strict state-dict loading whose errors name the missing, unexpected and mis-shaped keys."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

SHOW_KEYS = 5  # keys quoted per category in an error message


def state_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """'' when `state` has exactly `expected`'s keys and shapes; else the missing, extra, mis-shaped keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - SHOW_KEYS} more)" if len(items) > SHOW_KEYS else ""
            parts.append(f"{len(items)} {label}: {items[:SHOW_KEYS]}{more}")
    return "; ".join(parts)


def load_state_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str = "state dict",
    what: str = "the network",
    assign: bool = False,
) -> None:
    """`model.load_state_dict(state, strict=True)` with a ValueError naming `source` (e.g. the file), `what`
    it should match and the first offending keys. With `assign` the tensors become the parameters (each made
    contiguous, so e.g. expanded views get memory of their own)."""
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"{source} does not match {what}: {problem}")
    if assign:
        state = {k: v.contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=assign)
