"""Peak signal-to-noise ratio per frame (JH convention by default; FDM per-channel variant)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from videxp.metrics.base import FrameMetric


def _uint8_sse(pred: torch.Tensor, target: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Exact sums of squared integer differences (float64) of uint8 frames [N, C, H, W]: [N, C] or [N].

    On CPU one `cv2.norm` per frame (or plane) reads both frames once with integer SIMD arithmetic; its
    double result is off the integer by ~1e-16 relative (far below 0.5), so rounding gives it exactly.
    """
    n, c, h, w = pred.shape
    if pred.device.type != "cpu":
        d = pred.to(torch.int32) - target.to(torch.int32)  # [N, C, H, W]
        sq = d.square_().view(n, c, h * w)
        return (
            sq.sum(dim=2, dtype=torch.int64) if per_channel else sq.sum(dim=(1, 2), dtype=torch.int64)
        ).double()
    import cv2  # deferred: only this CPU path needs OpenCV (GPU runs go without it)

    rows = c * h if not per_channel else h  # frames (or planes) as 2-D uint8 images for OpenCV
    x = pred.contiguous().numpy().reshape(-1, rows, w)
    y = target.contiguous().numpy().reshape(-1, rows, w)
    sse = np.rint([cv2.norm(a, b, cv2.NORM_L2SQR) for a, b in zip(x, y)])  # [N·C] or [N]
    return torch.from_numpy(sse.reshape(n, c) if per_channel else sse)


class PSNR(FrameMetric):
    """PSNR in dB per frame, higher is better.

    The squared differences are summed in the inputs' precision (float32 stays float32: torch's pairwise
    sums keep the PSNR within 1e-6 dB of float64's; float64 inputs are scored in float64), the rest in
    float64. uint8 pairs (x / 255) are scored from exact integer differences.

    Default (JH / SRVP): MSE over (C, H, W) of one frame, PSNR = 10·log10(data_range² / MSE), capped at
    `max_db`. With data_range 1 the cap at 100 dB is exactly JH's rule "MSE < 1e-10 → 100"; identical
    frames give `max_db` (or +inf when `max_db=None`). `per_channel=True` is FDM's legacy skimage
    call per 2-D channel: PSNR of each channel (each capped) averaged over channels. Frame scores are
    then averaged (never the PSNR of a pooled MSE, as torchmetrics' default does).
    """

    name = "psnr"
    higher_is_better = True
    takes_uint8 = True  # uint8 pairs: exact integer squared differences
    slice_bytes = 8 * 2**20  # CPU slices of 8 MB float64-sized (4 MB float32) input: two passes stay in cache

    def __init__(
        self,
        *,
        data_range: float = 1.0,
        max_db: float | None = 100.0,
        per_channel: bool = False,
        reduction: str = "mean",
        chunk_frames: int = 256,
        compile: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(reduction=reduction, chunk_frames=chunk_frames, compile=compile, name=name)
        if not data_range > 0:
            raise ValueError(f"data_range must be positive, got {data_range}")
        if max_db is not None and not math.isfinite(max_db):
            raise ValueError(f"max_db must be finite or None, got {max_db}")
        self.data_range = float(data_range)
        self.max_db = None if max_db is None else float(max_db)
        self.per_channel = bool(per_channel)

    def settings(self) -> dict[str, Any]:
        """PSNR conventions plus the reduction."""
        return {
            "data_range": self.data_range,
            "max_db": self.max_db,
            "per_channel": self.per_channel,
            "mse_over": "(H, W), PSNR averaged over channels" if self.per_channel else "(C, H, W)",
            "dtype": "squared differences in the inputs' float32 / float64 (uint8: integers), then float64",
            **super().settings(),
        }

    def score_frames(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """PSNR [N] of pred vs target [N, C, H, W] (float, or both uint8: exact integer differences)."""
        n, c, h, w = pred.shape
        if pred.dtype == target.dtype == torch.uint8:
            sse = _uint8_sse(pred, target, self.per_channel) / 255.0**2  # [N, C] or [N], in [0, 1] units
        else:
            dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
            sq = (pred.to(dtype) - target.to(dtype)).square_()  # [N, C, H, W]
            # torch's float sums are pairwise (cascade): float32 keeps ~1e-7 relative error where a
            # running sum (or vector_norm's) loses 1e-5
            sse = sq.view(n, c, h * w).sum(dim=2) if self.per_channel else sq.view(n, -1).sum(dim=1)
        # 10·log10(range² / mse) = 10·log10(range² · elements) - 10·log10(sse): +inf where sse == 0
        elements = h * w if self.per_channel else c * h * w
        peak_db = 10.0 * math.log10(self.data_range**2 * elements)
        psnr = sse.to(torch.float64).log10_().mul_(-10.0).add_(peak_db)  # [N, C] or [N]
        if self.max_db is not None:
            psnr = psnr.clamp_(max=self.max_db)
        if self.per_channel:
            psnr = psnr.mean(dim=1)  # [N]
        return psnr
