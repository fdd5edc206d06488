"""Trivial predictors scored beside a model: the last observed frame repeated, and a blank frame."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from videxp.metrics.base import FrameMetric, Metric

BASELINES = ("repeat_last", "blank")
BLANK_COLOURS = ("black", "observed_mean")
# what a baseline result keeps of its metric's compute(): enough for tables, plots and comparisons
_KEPT = ("value", "sem", "num_videos", "frames", "per_frame_mean", "higher_is_better")


def baseline_prediction(name: str, real: torch.Tensor, obs_length: int, blank: str = "black") -> torch.Tensor:
    """The trivial prediction of every frame of `real` [B, T, C, H, W] in [0, 1] from its observed prefix.

    repeat_last: frame obs_length - 1 at every position. blank: a constant frame, black (0) or, with
    blank="observed_mean", each video's mean colour over its observed frames. Returns [B, T, C, H, W].
    """
    if obs_length < 1:
        raise ValueError(f"baselines need observed frames, got obs_length={obs_length}")
    if name == "repeat_last":
        return real[:, obs_length - 1 : obs_length].expand_as(real)
    if name == "blank":
        if blank == "black":
            return torch.zeros_like(real)
        if blank == "observed_mean":
            return real[:, :obs_length].mean(dim=(1, 3, 4), keepdim=True).expand_as(real)  # [B, 1, C, 1, 1]
        raise ValueError(f"blank colour must be one of {BLANK_COLOURS}, got {blank!r}")
    raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")


class Baselines:
    """Scores each baseline with its own copy of every frame metric, on the frames the model is scored on.

    Baselines are deterministic, so each video is scored once (sample 0) however many samples the model
    made of it. Distribution metrics (FVD) are not given baselines (reported in `settings`).
    """

    def __init__(
        self,
        metrics: dict[str, Metric],
        obs_length: int,
        names: Sequence[str] = BASELINES,
        blank: str = "black",
    ):
        unknown = sorted(set(names) - set(BASELINES))
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; known: {list(BASELINES)}")
        if blank not in BLANK_COLOURS:
            raise ValueError(f"blank colour must be one of {BLANK_COLOURS}, got {blank!r}")
        if obs_length < 1:
            raise ValueError(f"baselines need observed frames, got obs_length={obs_length}")
        self.obs_length = int(obs_length)
        self.blank = blank
        self.frame_metrics = [n for n, m in metrics.items() if isinstance(m, FrameMetric)]
        self.skipped = [n for n in metrics if n not in self.frame_metrics]
        self.metrics = {b: {n: metrics[n].empty_copy() for n in self.frame_metrics} for b in names}
        self._seen: set[int] = set()

    def update(self, real: torch.Tensor, video_index: Sequence[int], frames: range) -> None:
        """Score the baselines of the videos in `real` [B, T, C, H, W] (in [0, 1], whole clips) not seen yet,
        on `frames` (absolute indices, the frames the model is scored on)."""
        rows, videos = [], []
        for i, v in enumerate(video_index):  # first row of each new video (samples of one video repeat it)
            if int(v) not in self._seen:
                self._seen.add(int(v))
                rows.append(i)
                videos.append(int(v))
        if not rows or not self.metrics:
            return
        real = real[rows]  # [b, T, C, H, W]
        target = real[:, frames.start : frames.stop]  # [b, F, C, H, W]
        for name, metrics in self.metrics.items():
            pred = baseline_prediction(name, real, self.obs_length, self.blank)[:, frames.start : frames.stop]
            for metric in metrics.values():
                metric.update(
                    pred.contiguous(),
                    target,
                    video_index=videos,
                    sample_index=[0] * len(videos),
                    frame_index=list(frames),
                )

    def compute(self) -> dict[str, Any]:
        """{baseline: {metric: {value, sem, num_videos, frames, per_frame_mean, ...}}, "settings": {...}}."""
        out: dict[str, Any] = {
            name: {m: _summary(metric.compute()) for m, metric in metrics.items()}
            for name, metrics in self.metrics.items()
            if self._seen
        }
        out["settings"] = self.settings()
        return out

    def settings(self) -> dict[str, Any]:
        return {
            "repeat_last": f"frame {self.obs_length - 1} (the last observed frame) at every scored position",
            "blank": "black frame (0)"
            if self.blank == "black"
            else "each video's mean colour over its observed frames",
            "obs_length": self.obs_length,
            "scored": "the frames the model is scored on, one prediction per video",
            "not_scored": self.skipped,  # distribution metrics (FVD) get no baseline
        }


def baselines_for(cfg_eval: Any, metrics: dict[str, Metric], obs_length: int) -> Baselines | None:
    """The `Baselines` that `cfg_eval.baselines` / `cfg_eval.blank` ask for; None when turned off
    (`baselines: []`), when no frame metric is selected, or when nothing was observed (obs_length 0)."""
    names = list(cfg_eval.get("baselines") or [])
    if not names or obs_length < 1 or not any(isinstance(m, FrameMetric) for m in metrics.values()):
        return None
    return Baselines(metrics, obs_length, names, cfg_eval.get("blank") or "black")


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in _KEPT if k in result}
