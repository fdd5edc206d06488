"""Learning-rate schedules with linear warm-up, shared by the autoencoder and flow-transformer modules."""

from __future__ import annotations

from typing import Any

import torch

SCHEDULES = ("polynomial", "constant", "cosine")


def lr_schedule(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, total_steps: int, **kw: Any):
    """transformers' schedules with linear warm-up: RIVER polynomial (power 0.5), PFI constant, or cosine."""
    from transformers import (  # deferred: transformers is a heavy import
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_polynomial_decay_schedule_with_warmup,
    )

    if name == "polynomial":
        return get_polynomial_decay_schedule_with_warmup(
            optimizer, warmup_steps, total_steps, lr_end=kw.get("lr_end", 1e-7), power=kw.get("power", 1.0)
        )
    if name == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    if name == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    raise ValueError(f"schedule.name must be one of {SCHEDULES}, got {name!r}")
