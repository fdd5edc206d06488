"""Temporal clip sampling: which source frames of which videos form each clip (random, seeded, LARP, SRVP)."""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODES = ("random", "fixed", "first", "all", "uniform")
PADS = ("error", "repeat_last")
_FPS_TOLERANCE = 0.05  # |source/target - step| above this (in frames) warns: the effective fps is off


def frame_step(source_fps: float | None, stride: int = 1, target_fps: float | None = None) -> int:
    """Source frames between consecutive clip frames.

    With `target_fps`, ``round(source_fps / target_fps)`` (Python rounding) — frames are subsampled, never
    blended; an error if the source fps is unknown, if `target_fps` exceeds it, or if `stride` is also set;
    a warning when the ratio is not near an integer (the effective fps then differs from `target_fps`).
    Without `target_fps`, `stride`.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if target_fps is None:
        return int(stride)
    if stride != 1:
        raise ValueError(f"give either stride ({stride}) or target_fps ({target_fps}), not both")
    if target_fps <= 0:
        raise ValueError(f"target_fps must be positive, got {target_fps}")
    if source_fps is None or not math.isfinite(source_fps) or source_fps <= 0:
        raise ValueError(f"target_fps={target_fps} needs the source fps, which is unknown ({source_fps!r})")
    if target_fps > source_fps:
        raise ValueError(
            f"target_fps={target_fps} exceeds the source fps {source_fps}; upsampling (frame repetition or "
            "blending) is not done here"
        )
    ratio = source_fps / target_fps
    step = max(1, round(ratio))
    if abs(ratio - step) > _FPS_TOLERANCE:
        warnings.warn(
            f"source fps {source_fps} / target fps {target_fps} = {ratio:.3f} is not an integer; using step "
            f"{step} (effective {source_fps / step:.3f} fps)",
            stacklevel=2,
        )
    return int(step)


def span(length: int, step: int) -> int:
    """Source frames covered by a clip of `length` frames taken every `step` frames."""
    return (length - 1) * step + 1


@dataclass(frozen=True)
class Window:
    """One clip: video `video` (index into the planned lists), first source frame `start`, frame step `step`.

    `start` is None in `random` mode: drawn per access with `ClipSampler.draw_start`.
    """

    video: int
    start: int | None
    step: int


@dataclass
class ClipSampler:
    """Plans clips of `length` frames over a list of videos.

    The step between clip frames is `frame_step(fps, stride, target_fps)` per video. Modes:

    - ``random``: one window per video with ``start=None``; the start is drawn uniformly from
      ``[0, num_frames - span]`` at access time by `draw_start` from the caller's generator (training).
    - ``fixed`` without `num_clips`: one window per video, start drawn from
      ``np.random.default_rng([seed, video])`` — stable whatever the other videos are.
      ``fixed`` with `num_clips` (SRVP-style test set): ``rng = np.random.default_rng(seed)``; for each of the
      `num_clips` clips, in order, ``v = eligible[rng.integers(len(eligible))]`` then
      ``start = rng.integers(num_frames[v] - span + 1)``, where `eligible` are the indices of the videos not
      skipped, ascending. Videos may repeat.
    - ``first``: start 0 of each video (evaluation on the first frames).
    - ``all``: every non-overlapping window of each video, videos in the given order and starts ascending,
      ``start = k * length * step`` for ``k < (num_frames - span) // (length * step) + 1`` (with step 1:
      ``num_frames // length`` windows, LARP's ``use_all_frames``). With `num_clips`, the list is then
      subsampled as LARP does, ``random.Random(seed).sample(range(len(windows)), num_clips)``, kept in
      sample order.
    - ``uniform``: `num_clips` windows per video with starts evenly spaced over ``[0, num_frames - span]``
      (rounded half up; one clip takes the middle start); short videos may give repeated starts.

    Videos shorter than the span: ``pad="error"`` skips them, recording ``(video, reason)`` in `skipped`
    (logged as a warning); ``pad="repeat_last"`` keeps them with start 0 (one window in ``all`` mode) and
    `frame_indices` clamps to their last frame (replication padding, as LARP). To reproduce LARP's window
    list use ``pad="error"``: LARP drops such videos in ``use_all_frames``.
    """

    length: int
    stride: int = 1
    target_fps: float | None = None
    mode: str = "random"
    num_clips: int | None = None
    seed: int = 0
    pad: str = "error"
    skipped: list[tuple[int, str]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.target_fps is not None and self.stride != 1:
            raise ValueError(
                f"give either stride ({self.stride}) or target_fps ({self.target_fps}), not both"
            )
        if self.mode not in MODES:
            raise ValueError(f"unknown clip mode {self.mode!r}; expected one of {MODES}")
        if self.pad not in PADS:
            raise ValueError(f"unknown pad {self.pad!r}; expected one of {PADS}")
        if self.num_clips is not None and self.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1 or None, got {self.num_clips}")
        if self.mode == "uniform" and self.num_clips is None:
            raise ValueError("mode 'uniform' needs num_clips (windows per video)")
        if self.mode in ("random", "first") and self.num_clips is not None:
            raise ValueError(f"mode {self.mode!r} gives one clip per video; num_clips must be None")

    # ------------------------------------------------------------------ planning

    def plan(self, num_frames: Sequence[int], fps: Sequence[float | None] | None = None) -> list[Window]:
        """Windows over videos with `num_frames[i]` frames at `fps[i]` (None = unknown; fps may be omitted
        when no `target_fps` is set). Resets and fills `skipped`."""
        n_videos = len(num_frames)
        if fps is None:
            fps = [None] * n_videos
        if len(fps) != n_videos:
            raise ValueError(f"num_frames has {n_videos} entries but fps has {len(fps)}")
        self.skipped = []
        steps: list[int] = []
        eligible: list[int] = []
        for v in range(n_videos):
            n = int(num_frames[v])
            if n < 1:
                raise ValueError(f"video {v} has {n} frames")
            step = frame_step(fps[v], self.stride, self.target_fps)
            steps.append(step)
            need = span(self.length, step)
            if n < need and self.pad == "error":
                self.skipped.append(
                    (v, f"{n} frames < {need} needed for {self.length} frames at step {step}")
                )
            else:
                eligible.append(v)
        if self.skipped:
            log.warning(
                "clip sampler skipped %d of %d videos shorter than a clip (first: video %d, %s)",
                len(self.skipped),
                n_videos,
                *self.skipped[0],
            )

        if self.mode == "random":
            return [Window(v, None, steps[v]) for v in eligible]
        if self.mode == "first":
            return [Window(v, 0, steps[v]) for v in eligible]
        if self.mode == "uniform":
            return self._plan_uniform(num_frames, steps, eligible)
        if self.mode == "fixed":
            if self.num_clips is None:
                return [
                    Window(v, self._start_for_video(v, num_frames[v], steps[v]), steps[v]) for v in eligible
                ]
            return self._plan_srvp(num_frames, steps, eligible)
        return self._plan_all(num_frames, steps, eligible)

    def _max_start(self, n: int, step: int) -> int:
        """Largest start of a full window (0 for a short video kept by repeat_last)."""
        return max(0, int(n) - span(self.length, step))

    def _start_for_video(self, v: int, n: int, step: int) -> int:
        rng = np.random.default_rng([self.seed, v])
        return int(rng.integers(0, self._max_start(n, step) + 1))

    def _plan_srvp(self, num_frames: Sequence[int], steps: list[int], eligible: list[int]) -> list[Window]:
        if not eligible:
            raise ValueError(f"no video is long enough for a clip; skipped: {self.skipped[:5]}")
        rng = np.random.default_rng(self.seed)
        out = []
        for _ in range(self.num_clips):
            v = eligible[int(rng.integers(0, len(eligible)))]
            start = int(rng.integers(0, self._max_start(num_frames[v], steps[v]) + 1))
            out.append(Window(v, start, steps[v]))
        return out

    def _plan_uniform(self, num_frames: Sequence[int], steps: list[int], eligible: list[int]) -> list[Window]:
        out = []
        for v in eligible:
            m = self._max_start(num_frames[v], steps[v])
            if self.num_clips == 1:
                starts = [m // 2]
            else:
                starts = [math.floor(k * m / (self.num_clips - 1) + 0.5) for k in range(self.num_clips)]
            out.extend(Window(v, int(s), steps[v]) for s in starts)
        return out

    def _plan_all(self, num_frames: Sequence[int], steps: list[int], eligible: list[int]) -> list[Window]:
        windows = []
        for v in eligible:
            hop = self.length * steps[v]
            count = self._max_start(num_frames[v], steps[v]) // hop + 1
            windows.extend(Window(v, k * hop, steps[v]) for k in range(count))
        if self.num_clips is None:
            return windows
        if self.num_clips > len(windows):
            raise ValueError(
                f"num_clips={self.num_clips} exceeds the {len(windows)} non-overlapping windows available "
                f"({len(eligible)} videos, {len(self.skipped)} skipped)"
            )
        picked = random.Random(self.seed).sample(range(len(windows)), self.num_clips)
        return [windows[i] for i in picked]

    # ------------------------------------------------------------------ per access

    def draw_start(self, window: Window, num_frames: int | Sequence[int], rng: np.random.Generator) -> int:
        """Start of `window`: its fixed start, or (``random`` mode) one drawn uniformly from
        ``[0, num_frames - span]`` with `rng`. `num_frames` is the video's frame count, or the list given
        to `plan` (indexed by ``window.video``)."""
        if window.start is not None:
            return window.start
        n = num_frames if isinstance(num_frames, (int, np.integer)) else num_frames[window.video]
        n = int(n)
        if n < span(self.length, window.step) and self.pad == "error":
            raise ValueError(
                f"video {window.video} has {n} frames, fewer than {span(self.length, window.step)} "
                f"needed for {self.length} frames at step {window.step}"
            )
        return int(rng.integers(0, self._max_start(n, window.step) + 1))

    def frame_indices(
        self, window: Window, start: int | None = None, num_frames: int | None = None
    ) -> np.ndarray:
        """Source frame indices ``start + step * arange(length)`` (int64 [length]); `start` defaults to
        ``window.start``. With `num_frames` (the video's frame count) indices past the end clamp to the
        last frame when ``pad="repeat_last"`` and are an error otherwise."""
        if start is None:
            start = window.start
        if start is None:
            raise ValueError(f"window {window} has no fixed start; draw one with draw_start(...)")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        idx = start + window.step * np.arange(self.length, dtype=np.int64)  # [length]
        if num_frames is not None and idx[-1] >= num_frames:
            if self.pad != "repeat_last":
                raise ValueError(
                    f"video {window.video}: frames {idx[0]}..{idx[-1]} (step {window.step}) run past its "
                    f"{num_frames} frames"
                )
            if start >= num_frames:
                raise ValueError(f"video {window.video}: start {start} is past its {num_frames} frames")
            idx = np.minimum(idx, num_frames - 1)
        return idx

    def settings(self) -> dict[str, Any]:
        """JSON-ready record of the sampling (for manifests)."""
        return {
            "length": self.length,
            "stride": self.stride,
            "target_fps": self.target_fps,
            "mode": self.mode,
            "num_clips": self.num_clips,
            "seed": self.seed,
            "pad": self.pad,
        }
