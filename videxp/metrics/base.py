"""Streaming metric interface: `Metric`, `FrameMetric` (per-frame scores), `DistributionMetric` (two sets)."""

from __future__ import annotations

import copy
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from videxp.utils.io import atomic_path

REDUCTIONS = ("mean", "best")
RANGE_TOLERANCE = 1e-2  # inputs must lie in [0, 1] up to this slack (catches [-1, 1] and [0, 255] inputs)
# On CPU, frames are validated and scored in cache-sized slices of about this many bytes (float64).
CPU_CHUNK_BYTES = 4 * 2**20


def _as_index(values: Sequence[int] | torch.Tensor | np.ndarray, what: str, length: int) -> np.ndarray:
    """Integer index array of exactly `length` entries, or a ValueError naming `what`."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of ints, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integers, got dtype {arr.dtype}")
    if arr.shape[0] != length:
        raise ValueError(f"{what} has {arr.shape[0]} entries, expected {length}")
    return arr.astype(np.int64, copy=False)


def check_frame_values(x: torch.Tensor, name: str) -> None:
    """ValueError unless every value of `x` is finite and in [0, 1] (up to `RANGE_TOLERANCE`)."""
    lo, hi = torch.aminmax(x)  # one pass; NaN propagates into both, inf shows up as an extreme
    check_value_range(float(lo), float(hi), name)


def check_value_range(lo: float, hi: float, name: str) -> None:
    """ValueError unless the extremes `lo`, `hi` of `name` are finite and within [0, 1] (with slack)."""
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contains NaN values")
    if math.isinf(lo) or math.isinf(hi):
        raise ValueError(f"{name} contains inf values")
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise ValueError(
            f"{name} values span [{lo:.4g}, {hi:.4g}]; metrics expect [0, 1] "
            "(map [-1, 1] with (x + 1) / 2, uint8 with x / 255, and clamp model outputs)"
        )


def check_video_batch(
    pred: torch.Tensor,
    target: torch.Tensor,
    video_index: Sequence[int] | torch.Tensor | np.ndarray,
    sample_index: Sequence[int] | torch.Tensor | np.ndarray,
    frame_index: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    *,
    check_values: bool = True,
    allow_uint8: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate one `update` call; return (video [B], sample [B], frame [T]) as int64 arrays.

    `pred` and `target` must be tensors of identical shape [B, T, C, H, W], floating point (or, with
    `allow_uint8`, uint8, read as x / 255); with `check_values` the values of floating-point ones are
    checked too (`check_frame_values`; callers that stream through the frames in slices pass False and
    check each slice). `frame_index` defaults to 0..T-1 and must not repeat.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"pred and target must be torch tensors, got {type(pred).__name__}, {type(target).__name__}"
        )
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
        )
    if pred.ndim != 5:
        raise ValueError(f"expected [B, T, C, H, W] tensors, got pred of shape {tuple(pred.shape)}")
    for x in (pred, target):
        if not (x.is_floating_point() or (allow_uint8 and x.dtype == torch.uint8)):
            allowed = (
                "floating point in [0, 1] or uint8 in [0, 255]" if allow_uint8 else "floating point in [0, 1]"
            )
            raise TypeError(
                f"pred and target must be {allowed}, got {pred.dtype} and {target.dtype}"
                + ("" if allow_uint8 else " (convert uint8 with x.float() / 255)")
            )
    b, t = pred.shape[:2]
    if pred.numel() == 0:
        raise ValueError(f"pred and target are empty: shape {tuple(pred.shape)}")
    if check_values:
        for x, name in ((pred, "pred"), (target, "target")):
            if x.is_floating_point():
                check_frame_values(x, name)
    video = _as_index(video_index, "video_index", b)
    sample = _as_index(sample_index, "sample_index", b)
    frame = np.arange(t, dtype=np.int64) if frame_index is None else _as_index(frame_index, "frame_index", t)
    if np.unique(frame).size != frame.size:
        raise ValueError(f"frame_index repeats entries: {frame.tolist()}")
    return video, sample, frame


def _unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 frames as float32 x / 255; float frames unchanged."""
    return x if x.is_floating_point() else x.to(torch.float32).div_(255.0)


def _is_compile_error(e: Exception) -> bool:
    """Whether `e` comes from torch.compile's machinery (Dynamo/Inductor, C++ toolchain), not the math."""
    module = type(e).__module__
    return module.startswith(("torch._dynamo", "torch._inductor", "torch._subclasses")) or isinstance(
        e, (OSError, ImportError)
    )


class Metric(ABC):
    """A streaming evaluation metric over batches of (prediction, ground truth) videos.

    Call `update` once per batch, then `compute` once at the end; `reset` clears the state. Inputs are
    float tensors [B, T, C, H, W] in [0, 1] (frame metrics also take uint8, read as x / 255) holding only
    the frames to score; `frame_index` gives their absolute frame indices and `video_index` /
    `sample_index` name each row (sample = which of the K
    stochastic predictions of that video). State is kept streaming: per-frame scalars for frame
    metrics, running feature sums for distribution metrics such as FVD, never the videos themselves.
    """

    name: str = "metric"
    higher_is_better: ClassVar[bool] = True

    @abstractmethod
    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        *,
        video_index: Sequence[int] | torch.Tensor | np.ndarray,
        sample_index: Sequence[int] | torch.Tensor | np.ndarray,
        frame_index: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add one batch: pred/target [B, T, C, H, W] in [0, 1]; B video and sample ids; T frame ids."""

    @abstractmethod
    def compute(self) -> dict[str, Any]:
        """Final result: at least `value` (float) and `settings` (dict of every convention used)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every update."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every convention that changes the number (window, data range, reduction, ...); JSON types."""

    @property
    def wants_full_video(self) -> bool:
        """Whether `update` wants whole clips (observed prefix included), not just the scored frames."""
        return False

    def prepare(self) -> None:  # noqa: B027 - optional hook; most metrics load nothing
        """Load what scoring needs (detector weights) now: a missing file fails before any video is read."""

    # ----------------------------------------------------------------- partial state (sharded scoring)

    def save_state(self, folder: str | os.PathLike, name: str) -> dict[str, Any]:
        """Write this process's partial state into files `<folder>/<name>.*`; returns their JSON description.

        `merge_saved` of a fresh instance with the same settings adds such states back (sharded finaliser).
        A metric without a partial state (a user's own Metric subclass) cannot be scored per shard: a clear
        ValueError says how to run without the finaliser.
        """
        raise ValueError(
            f"metric {name!r} ({type(self).__name__}) has no partial state; use sample.finalise=false"
        )

    def merge_saved(self, parts: Sequence[tuple[Path, Mapping[str, Any]]]) -> bool:
        """Add the states `save_state` wrote: (folder, description) per part. Returns False (and changes
        nothing) when merged state would differ from scoring everything in one process; then score again."""
        raise ValueError(f"{type(self).__name__} has no partial state to merge; use sample.finalise=false")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


class FrameMetric(Metric):
    """A metric scored per frame, kept per (video, sample, frame) and reduced in `compute`.

    Subclasses implement `score_frames(pred, target)` on [N, C, H, W] batches returning [N] scores.
    Reductions (`reduction`):

    - ``"mean"``: mean over frames per (video, sample), then over samples per video, then over videos
      (with complete data this is the plain mean over all values; JH / SRVP / FDM `read_eval.py`).
    - ``"best"``: per video, the sample with the best time-averaged score (max if `higher_is_better`,
      else min; ties go to the lowest sample index), then the mean over videos (SRVP best-of-K).

    Scores are stored as float64 numpy arrays; `chunk_frames` bounds how many frames are scored at once
    (on CPU also `slice_bytes`: slices stay cache-sized; see `frames_per_call`). `compile=True` runs the
    value check and `score_frames` of each slice as one `torch.compile`d kernel (Inductor fuses the
    elementwise passes; same values up to float rounding); if compiling fails (e.g. no C++ compiler), a
    warning says so and the eager kernel is used.
    """

    slice_bytes: ClassVar[int] = CPU_CHUNK_BYTES  # CPU: float64 bytes of input per scored slice
    # whether `score_frames` takes uint8 frames (0..255) itself when both sides are uint8; if not, they
    # reach it as float32 x / 255
    takes_uint8: ClassVar[bool] = False

    def __init__(
        self,
        *,
        reduction: str = "mean",
        chunk_frames: int = 256,
        compile: bool = False,
        name: str | None = None,
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.reduction = reduction
        self.chunk_frames = int(chunk_frames)
        self.compile = bool(compile)
        self._compiled: Any = None  # the torch.compile'd kernel, built on first use
        if name is not None:
            self.name = name
        # per update: video ids [B], sample ids [B], frame ids [T], values [B, T]
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._table_cache: tuple[np.ndarray, np.ndarray] | None = None

    # ----------------------------------------------------------------- to implement

    @abstractmethod
    def score_frames(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scores [N] for frame batches pred, target [N, C, H, W] in [0, 1] (batched, no per-frame loop)."""

    def settings(self) -> dict[str, Any]:
        """Reduction settings; subclasses add their own conventions."""
        return {
            "reduction": self.reduction,
            "aggregation": (
                "mean over frames per (video, sample), then mean over samples, then mean over videos"
                if self.reduction == "mean"
                else "mean over frames per (video, sample), best sample per video "
                f"({'max' if self.higher_is_better else 'min'}), then mean over videos"
            ),
        }

    # ----------------------------------------------------------------- streaming

    @torch.no_grad()
    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        *,
        video_index: Sequence[int] | torch.Tensor | np.ndarray,
        sample_index: Sequence[int] | torch.Tensor | np.ndarray,
        frame_index: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Score the B·T frames of pred/target [B, T, C, H, W] (float in [0, 1], or uint8 read as x / 255)
        and keep one float64 per frame."""
        video, sample, frame = check_video_batch(
            pred, target, video_index, sample_index, frame_index, check_values=False, allow_uint8=True
        )
        b, t = pred.shape[:2]
        flat_pred = pred.reshape(b * t, *pred.shape[2:])  # [N, C, H, W]
        flat_target = target.reshape(b * t, *target.shape[2:])  # [N, C, H, W]
        step = self.frames_per_call(flat_pred)
        kernel = self._kernel()
        scores = []
        for start in range(0, b * t, step):
            stop = min(start + step, b * t)
            extremes, s = kernel(flat_pred[start:stop], flat_target[start:stop])  # [4], [n]
            lo_p, hi_p, lo_t, hi_t = extremes.tolist()
            check_value_range(lo_p, hi_p, "pred")
            check_value_range(lo_t, hi_t, "target")
            if s.shape != (stop - start,):
                raise RuntimeError(
                    f"{type(self).__name__}.score_frames returned shape {tuple(s.shape)}, "
                    f"expected ({stop - start},)"
                )
            scores.append(s.detach().to("cpu", torch.float64))
        values = torch.cat(scores).numpy().reshape(b, t)  # [B, T]
        if np.isnan(values).any():
            raise ValueError(f"{self.name} produced NaN scores")
        self._chunks.append((video, sample, frame, values))
        self._table_cache = None

    def frames_per_call(self, frames: torch.Tensor) -> int:
        """How many of `frames` [N, C, H, W] one kernel call scores: `chunk_frames`, on CPU at most
        `slice_bytes` of float64-sized input (cache-sized slices: value check and scoring read each once)."""
        if frames.device.type != "cpu":
            return self.chunk_frames
        return min(self.chunk_frames, max(1, self.slice_bytes // (8 * frames[0].numel())))

    def _checked_scores(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(min and max of pred and of target [4], scores [n]) of one slice [n, C, H, W]: one kernel.

        uint8 frames are valid by type (their extremes are reported as 0 and 1). They reach `score_frames`
        as they are when both sides are uint8 and the metric `takes_uint8`; otherwise they are converted
        to float32 x / 255 here, one cache-sized slice at a time.
        """
        if not (self.takes_uint8 and pred.dtype == target.dtype == torch.uint8):
            pred, target = _unit_float(pred), _unit_float(target)
        return self.extremes_and_scores(pred, target)

    def extremes_and_scores(
        self, pred: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(min and max of pred and of target [4] float64, `score_frames` [n]) of one slice [n, C, H, W];
        uint8 extremes are reported as 0 and 1. Metrics whose CPU scoring runs on their own threads override
        this to find the extremes there: a torch reduction just before would leave its OpenMP threads
        spinning on the cores those threads need."""
        extremes = []
        for x in (pred, target):
            extremes.extend(torch.aminmax(x) if x.is_floating_point() else (x.new_zeros(()), x.new_ones(())))
        return torch.stack([e.double() for e in extremes]), self.score_frames(pred, target)

    def _kernel(self) -> Any:
        """`_checked_scores`, compiled when `compile` is set (falling back to eager with a warning)."""
        if not self.compile:
            return self._checked_scores
        if self._compiled is None:
            compiled = torch.compile(self._checked_scores, dynamic=True)

            def kernel(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                try:
                    return compiled(pred, target)
                except Exception as e:  # noqa: BLE001 - any compiler failure falls back the same way
                    if not _is_compile_error(e):
                        raise
                    warnings.warn(
                        f"{self.name}: torch.compile failed ({type(e).__name__}: {str(e)[:200]}); "
                        "scoring with the eager kernel (same values, slower)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    self._compiled = self._checked_scores
                    return self._checked_scores(pred, target)

            self._compiled = kernel
        return self._compiled

    def reset(self) -> None:
        """Forget every update."""
        self._chunks = []
        self._table_cache = None

    def merge(self, other: FrameMetric) -> None:
        """Add another instance's values (e.g. from another shard); settings must match exactly."""
        self.add_state(other.state())

    def empty_copy(self) -> FrameMetric:
        """A fresh instance with the same settings (a scoring network, as LPIPS's, is shared, not copied)."""
        clone = copy.copy(self)  # shallow: the network is shared
        clone.reset()
        clone._compiled = None  # a compiled kernel is bound to the original object
        return clone

    # ----------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        """The kept values as plain data (picklable: metric type, settings, per-update arrays)."""
        # chunks: per update (video ids [B], sample ids [B], frame ids [T], values [B, T])
        return {"metric": type(self).__name__, "settings": self.settings(), "chunks": list(self._chunks)}

    def add_state(self, state: Mapping[str, Any]) -> None:
        """Add values from `state()` of an instance with exactly the same type and settings."""
        if state["metric"] != type(self).__name__ or state["settings"] != self.settings():
            raise ValueError(
                f"cannot merge {state['metric']}({state['settings']}) into {self!r}: "
                "different metric or settings"
            )
        self._chunks.extend(state["chunks"])
        self._table_cache = None

    def save_state(self, folder: str | os.PathLike, name: str) -> dict[str, Any]:
        """Per-frame values as float64 groups (rows sharing one frame list) in `<folder>/<name>.npz`."""
        groups: dict[tuple[int, ...], list] = {}
        for video, sample, frame, values in self._chunks:
            groups.setdefault(tuple(frame.tolist()), []).append((video, sample, values))
        arrays = {}
        for g, (frame, chunks) in enumerate(groups.items()):
            arrays[f"g{g}_frame"] = np.asarray(frame, np.int64)
            arrays[f"g{g}_video"] = np.concatenate([c[0] for c in chunks]).astype(np.int64)
            arrays[f"g{g}_sample"] = np.concatenate([c[1] for c in chunks]).astype(np.int64)
            arrays[f"g{g}_values"] = np.concatenate([c[2] for c in chunks]).astype(np.float64)  # [R, F]
        file = f"{name}.npz"
        with atomic_path(Path(folder) / file) as tmp, open(tmp, "wb") as f:
            np.savez(f, groups=np.int64(len(groups)), **arrays)
        return {"kind": "frame", "file": file}

    def merge_saved(self, parts: Sequence[tuple[Path, Mapping[str, Any]]]) -> bool:
        """Add every part's saved values; frame values merge exactly, so this always returns True."""
        chunks = []
        for folder, info in parts:
            path = Path(folder) / info["file"]
            if not path.is_file():
                raise FileNotFoundError(f"partial metric state missing: {path}")
            with np.load(path, allow_pickle=False) as z:
                for g in range(int(z["groups"])):
                    chunks.append((z[f"g{g}_video"], z[f"g{g}_sample"], z[f"g{g}_frame"], z[f"g{g}_values"]))
        self.add_state({"metric": type(self).__name__, "settings": self.settings(), "chunks": chunks})
        return True

    # ----------------------------------------------------------------- views

    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        """All values as keys [M, 3] (video, sample, frame), sorted, and values [M]; raises on duplicates."""
        if self._table_cache is not None:
            return self._table_cache
        if not self._chunks:
            raise RuntimeError(f"{self.name}: no frames scored yet (call update first)")
        keys, vals = [], []
        for video, sample, frame, values in self._chunks:
            b, t = values.shape
            keys.append(
                np.stack([np.repeat(video, t), np.repeat(sample, t), np.tile(frame, b)], axis=1)  # [B*T, 3]
            )
            vals.append(values.reshape(-1))
        k = np.concatenate(keys)  # [M, 3]
        v = np.concatenate(vals)  # [M]
        order = np.lexsort((k[:, 2], k[:, 1], k[:, 0]))
        k, v = k[order], v[order]
        dup = np.flatnonzero((k[1:] == k[:-1]).all(axis=1))
        if dup.size:
            vi, si, fi = k[dup[0]].tolist()
            raise ValueError(
                f"{self.name}: (video={vi}, sample={si}, frame={fi}) was scored more than once "
                f"({dup.size} duplicate entries in all)"
            )
        self._table_cache = (k, v)
        return k, v

    def records(self) -> Iterator[dict[str, Any]]:
        """One dict {video, sample, frame, value} per scored frame, sorted by (video, sample, frame)."""
        keys, values = self._table()
        for (video, sample, frame), value in zip(keys.tolist(), values.tolist()):
            yield {"video": video, "sample": sample, "frame": frame, "value": value}

    def axes(self) -> dict[str, np.ndarray]:
        """Sorted distinct video, sample and frame indices: the labels of `as_array`'s three axes."""
        keys, _ = self._table()
        return {
            "video": np.unique(keys[:, 0]),
            "sample": np.unique(keys[:, 1]),
            "frame": np.unique(keys[:, 2]),
        }

    def as_array(self) -> np.ndarray:
        """Values as float64 [V, S, F] over the sorted distinct ids of `axes()`; NaN where not scored."""
        keys, values = self._table()
        out_idx, sizes = [], []
        for col in range(3):
            labels, inverse = np.unique(keys[:, col], return_inverse=True)
            out_idx.append(inverse.reshape(-1))
            sizes.append(labels.size)
        arr = np.full(sizes, np.nan, dtype=np.float64)  # [V, S, F]
        arr[out_idx[0], out_idx[1], out_idx[2]] = values
        return arr

    # ----------------------------------------------------------------- result

    def compute(self) -> dict[str, Any]:
        """Reduce the kept values (see the class docstring).

        Returns `value`; `std` and `sem` of the per-video values (ddof 1; NaN for a single video);
        `num_videos`, `num_samples` (distinct sample ids), `num_frames` (distinct frame ids),
        `num_values` (scored frames in all); `videos` (the video ids) with `per_video` (each one's value);
        `frames` (the frame ids) with `per_frame_mean` and
        `per_frame_sem` over videos at each of them (of the sample mean per video for ``"mean"``, of the
        chosen sample for ``"best"``); `best_sample` (sample id per video, sorted video ids) for ``"best"``;
        `higher_is_better`; and `settings`.
        """
        arr = self.as_array()  # [V, S, F]
        axes = self.axes()
        num_videos = arr.shape[0]
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", RuntimeWarning
            )  # all-NaN slices: (video, sample) pairs not scored
            per_vs = np.nanmean(arr, axis=2)  # [V, S]
            best_sample = None
            if self.reduction == "mean":
                per_video = np.nanmean(per_vs, axis=1)  # [V]
                per_video_frame = np.nanmean(arr, axis=1)  # [V, F]
            else:
                fill = -np.inf if self.higher_is_better else np.inf
                filled = np.where(np.isnan(per_vs), fill, per_vs)
                best = filled.argmax(axis=1) if self.higher_is_better else filled.argmin(axis=1)  # [V]
                rows = np.arange(num_videos)
                per_video = per_vs[rows, best]  # [V]
                per_video_frame = arr[rows, best, :]  # [V, F]
                best_sample = axes["sample"][best].tolist()
            per_frame_mean = np.nanmean(per_video_frame, axis=0)  # [F]
            counts = (~np.isnan(per_video_frame)).sum(axis=0)  # [F]
            per_frame_sem = np.nanstd(per_video_frame, axis=0, ddof=1) / np.sqrt(counts)  # [F]
        value = float(np.mean(per_video))
        std = float(np.std(per_video, ddof=1)) if num_videos > 1 else math.nan
        result: dict[str, Any] = {
            "value": value,
            "std": std,
            "sem": std / math.sqrt(num_videos) if num_videos > 1 else math.nan,
            "higher_is_better": self.higher_is_better,
            "reduction": self.reduction,
            "num_videos": int(num_videos),
            "num_samples": int(arr.shape[1]),
            "num_frames": int(arr.shape[2]),
            "num_values": int(self._table()[1].size),
            "videos": axes["video"].tolist(),
            "per_video": per_video.tolist(),
            "frames": axes["frame"].tolist(),
            "per_frame_mean": per_frame_mean.tolist(),
            "per_frame_sem": per_frame_sem.tolist(),
            "settings": self.settings(),
        }
        if best_sample is not None:
            result["best_sample"] = best_sample
        return result


class DistributionMetric(Metric):
    """A metric comparing the distribution of generated clips with that of reference clips (FVD).

    The two sides are fed separately, so they need no pairing and their counts may differ:
    `update_real` (each reference video once) and `update_fake` (one row per (video, sample)); `update`
    feeds both from paired batches. `set_reference_identity` names the reference set so that its
    statistics can be cached; `video_labels` maps video indices to names (file paths) for error messages.
    """

    def __init__(self) -> None:
        # optional names for error messages: {"reference" | "generated": {video index: name}}
        self.video_labels: dict[str, dict[int, str]] = {"reference": {}, "generated": {}}

    @abstractmethod
    def update_real(
        self,
        target: torch.Tensor,
        *,
        video_index: Sequence[int] | torch.Tensor | np.ndarray,
        frame_index: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add reference clips [B, T, C, H, W] in [0, 1]; each video index counts once."""

    @abstractmethod
    def update_fake(
        self,
        pred: torch.Tensor,
        *,
        video_index: Sequence[int] | torch.Tensor | np.ndarray,
        sample_index: Sequence[int] | torch.Tensor | np.ndarray,
        frame_index: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add generated clips [B, T, C, H, W] in [0, 1], one row per (video, sample)."""

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        *,
        video_index: Sequence[int] | torch.Tensor | np.ndarray,
        sample_index: Sequence[int] | torch.Tensor | np.ndarray,
        frame_index: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Generated side from `pred`; reference side from `target`, once per video index."""
        video, sample, frame = check_video_batch(
            pred, target, video_index, sample_index, frame_index, check_values=False
        )
        self.update_real(target, video_index=video, frame_index=frame)
        self.update_fake(pred, video_index=video, sample_index=sample, frame_index=frame)

    @abstractmethod
    def set_reference_identity(self, identity: Mapping[str, Any]) -> None:
        """Name the reference set (dataset config and clip ids, or folder and files) for caching."""

    def reference_cached(self) -> bool:
        """Whether the reference statistics of the identity set last will come from the cache (one
        `update_real` call then suffices)."""
        return False
