"""The one request between the sampling loop and every model family: observed frames in, target frames out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from videxp.inference.strategies import Step


@dataclass(frozen=True)
class Capabilities:
    """What a generator can do; the sampling loop and strategies check requests against it."""

    max_frames: int  # most frames (observed + target) in one call
    index_patterns: tuple[str, ...] = (
        "any",
    )  # "any" | "next_frame" | "head_then_chunk" | "first_image_chunk"
    strategies: tuple[str, ...] | None = None  # inference strategies it supports; None = all
    frame_rule: str | None = None  # e.g. "4k+1" for Wan; None = any count
    fps: float | None = None  # native frame rate, where the model has one
    conditioning: tuple[str, ...] = ()  # "class_label", "prompt", "first_image", ...
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_request(frames: torch.Tensor, observed: list[int], target: list[int], seeds: list[int]) -> None:
    """The checks every generator makes: one frame per observed index, one seed per row, some target."""
    if frames.shape[1] != len(observed):
        raise ValueError(f"got {frames.shape[1]} observed frames for observed indices {observed}")
    if len(seeds) != frames.shape[0]:
        raise ValueError(f"need one seed per batch row: {len(seeds)} seeds for {frames.shape[0]} rows")
    if not target:
        raise ValueError("empty target")


class Generator(ABC):
    """Generates frames at `target` indices given frames at `observed` indices.

    Frames are float tensors in [-1, 1], shape [B, T, C, H, W]. `observed` and `target` are
    absolute 0-based frame indices exactly as the strategy emitted them (they may repeat and
    need not be sorted). `seeds` holds one integer per batch row; all randomness of row b
    must come from seeds[b] so results do not depend on batch composition.
    """

    capabilities: Capabilities

    @abstractmethod
    def generate(
        self,
        frames: torch.Tensor,  # [B, T_obs, C, H, W] in [-1, 1], in the order of `observed`
        observed: list[int],
        target: list[int],
        cond: dict[str, Any],
        seeds: list[int],
    ) -> torch.Tensor:  # [B, T_target, C, H, W] in [-1, 1]
        ...

    def accept_schedule(  # noqa: B027 - an optional hook: the default accepts any schedule
        self, steps: Sequence[Step], *, video_length: int, obs_length: int
    ) -> None:
        """Take the whole schedule of the coming sampling run, before its first `generate` call.

        The sampling loop (`videxp.inference.loop.plan_sampling`) calls this once per run, after
        `resolve_inference` checked the settings against `capabilities` (max_frames, strategies), with
        every (observed, target) step the strategy will request of each video, in order; `obs_length`
        frames of the `video_length` are given. Raise ValueError for a schedule this generator cannot
        run, so the run fails before any video is generated (and, where weights load lazily, before
        they load). Per-call plans worth recording belong in `describe()`, which the loop takes after
        this call. The default accepts any schedule; each request is still checked by `generate`.
        """

    def pop_stats(self) -> dict[str, list[float]]:
        """Per-sample statistics of the `generate` calls since the last pop, e.g. {"nll": [one per row]}, then
        cleared. The sampling loop pops after each batch (its calls hold the same rows) and records the values
        in each sample's manifest entry (`stats`); the finaliser reports their means (`report_columns` of
        `describe()`). The default has none."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Settings to record in the sample manifest (checkpoint, sampler, steps, ...). Optional entries for
        fvd_report.csv: `report_columns` (extra columns after videxp's) filled from `report` (fixed values),
        the mean of each per-sample stat of that name (`pop_stats`), `num_samples` or `fvd`."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "capabilities": self.capabilities.to_dict(),
        }
