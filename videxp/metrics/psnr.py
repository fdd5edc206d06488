"""Peak signal-to-noise ratio per frame (JH convention by default; FDM per-channel variant)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from videxp.metrics.base import FrameMetric
from videxp.metrics.cpu_chunks import chunks, map_chunks, merge_extremes

# CPU float frames of at least this many values are scored by OpenCV in threads: one `minMaxLoc` per input
# and one `cv2.norm` per frame read each frame about once. Smaller frames stay with torch's slices, since
# many short OpenCV calls on two threads mostly wait for the GIL
CV2_FRAME_ELEMENTS = 2**15
CV2_TASK_ELEMENTS = 2**20  # values of one input per thread task (whole frames)
BACKENDS = ("auto", "cv2", "torch")


def _cv2_sse(
    x: np.ndarray, y: np.ndarray, per_channel: bool, extremes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Sums of squared differences (float64, [N, C] or [N]) of frames x, y [N, C, H, W] (numpy; of two
    dtypes, each frame pair is compared in float64) by `cv2.norm`, which reads both frames once and sums
    in double, over `torch.get_num_threads()` threads; with `extremes` also (min x, max x, min y, max y)
    [4] by `cv2.minMaxLoc` (it skips NaN, which the sums keep), else (0, 1, 0, 1)."""
    import cv2  # deferred: only these CPU paths need OpenCV (GPU runs go without it)

    n, c, h, w = x.shape

    def task(part: slice) -> tuple[list, list[float]]:
        sums, ext = [], [math.inf, -math.inf, math.inf, -math.inf]
        for a, b in zip(x[part], y[part]):  # [C, H, W] each
            if a.dtype != b.dtype:
                a, b = a.astype(np.float64), b.astype(np.float64)
            if extremes:
                for i, frame in ((0, a), (2, b)):
                    lo, hi, _, _ = cv2.minMaxLoc(frame.reshape(c * h, w))
                    ext[i], ext[i + 1] = min(ext[i], lo), max(ext[i + 1], hi)
            if per_channel:
                sums.append([cv2.norm(a[k], b[k], cv2.NORM_L2SQR) for k in range(c)])
            else:
                sums.append(cv2.norm(a.reshape(c * h, w), b.reshape(c * h, w), cv2.NORM_L2SQR))
        return sums, ext

    results = map_chunks(task, chunks(n, c * h * w, CV2_TASK_ELEMENTS))
    sse = np.array([v for sums, _ in results for v in sums], dtype=np.float64)  # [N, C] or [N]
    if not extremes:
        return np.array([0.0, 1.0, 0.0, 1.0]), sse
    return merge_extremes([e for _, e in results]), sse


def _uint8_sse(pred: torch.Tensor, target: torch.Tensor, per_channel: bool, cv2: bool) -> torch.Tensor:
    """Exact sums of squared integer differences (float64) of uint8 frames [N, C, H, W]: [N, C] or [N].

    With `cv2` (CPU frames), `cv2.norm` per frame (or plane) reads both frames once with integer SIMD
    arithmetic; its double result is off the integer by ~1e-16 relative (far below 0.5), so rounding gives
    it exactly. Else torch sums int32 differences in int64.
    """
    n, c, h, w = pred.shape
    if not cv2:
        d = pred.to(torch.int32) - target.to(torch.int32)  # [N, C, H, W]
        sq = d.square_().view(n, c, h * w)
        return (
            sq.sum(dim=2, dtype=torch.int64) if per_channel else sq.sum(dim=(1, 2), dtype=torch.int64)
        ).double()
    _, sse = _cv2_sse(pred.contiguous().numpy(), target.contiguous().numpy(), per_channel, extremes=False)
    return torch.from_numpy(np.rint(sse))


class PSNR(FrameMetric):
    """PSNR in dB per frame, higher is better.

    The squared differences are summed in the inputs' precision (float32 stays float32: torch's pairwise
    sums keep the PSNR within 1e-6 dB of float64's; float64 inputs are scored in float64), the rest in
    float64. `backend`: ``"auto"`` (default) sums CPU frames of at least `CV2_FRAME_ELEMENTS` values (and
    uint8 CPU frames) in double with `cv2.norm` in threads (one read of each frame) and the rest with torch;
    ``"cv2"`` sends every CPU frame to OpenCV, ``"torch"`` none (for machines without OpenCV). uint8 pairs
    (x / 255) are scored from exact integer differences.

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
        backend: str = "auto",
        reduction: str = "mean",
        chunk_frames: int = 256,
        compile: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(reduction=reduction, chunk_frames=chunk_frames, compile=compile, name=name)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "cv2" and compile:
            raise ValueError("the cv2 PSNR backend runs OpenCV, which torch.compile cannot compile")
        if not data_range > 0:
            raise ValueError(f"data_range must be positive, got {data_range}")
        if max_db is not None and not math.isfinite(max_db):
            raise ValueError(f"max_db must be finite or None, got {max_db}")
        self.data_range = float(data_range)
        self.max_db = None if max_db is None else float(max_db)
        self.per_channel = bool(per_channel)
        self.backend = backend

    def settings(self) -> dict[str, Any]:
        """PSNR conventions plus the reduction."""
        return {
            "data_range": self.data_range,
            "max_db": self.max_db,
            "per_channel": self.per_channel,
            "backend": self.backend,
            "mse_over": "(H, W), PSNR averaged over channels" if self.per_channel else "(C, H, W)",
            "dtype": "squared differences in the inputs' float32 / float64 (uint8: integers; CPU frames of "
            f">= {CV2_FRAME_ELEMENTS} values: summed in float64), then float64",
            **super().settings(),
        }

    def _opencv(self, device: torch.device) -> bool:
        """Whether this backend may score frames on `device` with OpenCV (CPU, not `torch`, not compiled)."""
        return device.type == "cpu" and self.backend != "torch" and not self.compile

    def _cv2_applies(self, frames: torch.Tensor) -> bool:
        """Whether frames [N, C, H, W] go to OpenCV's threads: uint8 or float on CPU, with `backend="cv2"`, or
        with "auto" when they hold at least `CV2_FRAME_ELEMENTS` values."""
        return (
            self._opencv(frames.device)
            and frames.dtype in (torch.uint8, torch.float32, torch.float64)
            and (self.backend == "cv2" or frames[0].numel() >= CV2_FRAME_ELEMENTS)
        )

    def frames_per_call(self, frames: torch.Tensor) -> int:
        """Large CPU frames go to OpenCV's threads all at once (they read each frame once, so slices would
        only add waits); otherwise as `FrameMetric`."""
        return len(frames) if self._cv2_applies(frames) else super().frames_per_call(frames)

    def extremes_and_scores(
        self, pred: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Large CPU float frames: extremes and sums from `_cv2_sse` in threads; NaN or inf, which only the
        sums show, are looked up again by torch so that the error names the tensor. Else (uint8 pairs
        included) as `FrameMetric`."""
        if not (self._cv2_applies(pred) and pred.is_floating_point() and target.is_floating_point()):
            return super().extremes_and_scores(pred, target)
        extremes, sse = _cv2_sse(
            pred.contiguous().numpy(), target.contiguous().numpy(), self.per_channel, True
        )
        if not np.isfinite(sse).all():
            bad = torch.stack([v for x in (pred, target) for v in torch.aminmax(x)]).double()  # [4]
            if bad.isfinite().all():
                raise ValueError("pred and target give non-finite squared differences")
            return bad, torch.full((len(pred),), math.nan, dtype=torch.float64)
        return torch.from_numpy(extremes), self._psnr(torch.from_numpy(sse), pred.shape)

    def score_frames(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """PSNR [N] of pred vs target [N, C, H, W] (float, or both uint8: exact integer differences)."""
        n, c, h, w = pred.shape
        if pred.dtype == target.dtype == torch.uint8:
            sse = (
                _uint8_sse(pred, target, self.per_channel, self._opencv(pred.device)) / 255.0**2
            )  # [0, 1] units
        else:
            dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
            sq = (pred.to(dtype) - target.to(dtype)).square_()  # [N, C, H, W]
            # torch's float sums are pairwise (cascade): float32 keeps ~1e-7 relative error where a
            # running sum (or vector_norm's) loses 1e-5
            sse = sq.view(n, c, h * w).sum(dim=2) if self.per_channel else sq.view(n, -1).sum(dim=1)
        return self._psnr(sse, pred.shape)

    def _psnr(self, sse: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """PSNR [N] from the sums of squared differences [N, C] or [N] of frames of `shape` [N, C, H, W]."""
        _, c, h, w = shape
        # 10·log10(range² / mse) = 10·log10(range² · elements) - 10·log10(sse): +inf where sse == 0
        elements = h * w if self.per_channel else c * h * w
        peak_db = 10.0 * math.log10(self.data_range**2 * elements)
        psnr = sse.to(torch.float64).log10_().mul_(-10.0).add_(peak_db)  # [N, C] or [N]
        if self.max_db is not None:
            psnr = psnr.clamp_(max=self.max_db)
        if self.per_channel:
            psnr = psnr.mean(dim=1)  # [N]
        return psnr
