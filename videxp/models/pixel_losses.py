"""Pixel reconstruction errors shared by the autoencoder families (with saturating range ends)."""

from __future__ import annotations

import torch


def pixel_error(
    target: torch.Tensor, pred: torch.Tensor, kind: str, low: float, high: float, saturate: bool = False
) -> torch.Tensor:
    """Per-element |x − x̂| (kind ``l1``) or (x − x̂)² (``l2``) of any shape.

    With `saturate`, a target at an end of the range [low, high] (black, a saturated channel) is met by any
    prediction beyond that end: decoded frames are clamped to the range, so only the side inside counts and
    the decoder may overshoot instead of jittering around the end (which SSIM punishes hard on black).
    """
    if kind not in ("l1", "l2"):
        raise ValueError(f"pixel loss kind must be l1 or l2, got {kind!r}")
    diff = target - pred
    if saturate:
        beyond = ((target <= low) & (diff > 0)) | ((target >= high) & (diff < 0))  # x̂ past the end x sits at
        diff = diff.masked_fill(beyond, 0.0)
    return diff.abs() if kind == "l1" else diff.square()
