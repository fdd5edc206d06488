"""FDM inference strategies: which frames to observe and which to generate at each sampling step."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from numbers import Integral
from typing import Any, ClassVar, TypeVar

import numpy as np

from videxp.errors import ConfigError
from videxp.inference.adaptive import Adaptive

Step = tuple[list[int], list[int]]
"""One sampling step: (observed frame indices, target frame indices), absolute and 0-based."""

SETTINGS = ("video_length", "obs_length", "max_frames", "step_size")
"""The inference settings that, with the strategy's `name`, define a schedule."""

STRATEGIES: dict[str, type[Strategy]] = {}
"""Registry: strategy name (as in FDM's `--sampling_scheme`) -> Strategy subclass."""

_T = TypeVar("_T", bound="Strategy")


class ScheduleError(ConfigError):
    """The settings leave FDM's index rules no way to make progress (or they would loop forever)."""


def register(name: str) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: register a Strategy subclass under `name` in STRATEGIES."""

    def deco(cls: type[_T]) -> type[_T]:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered ({STRATEGIES[name].__name__})")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return deco


class Strategy(Iterator[Step]):
    """Base class of the inference strategies, with FDM's `SamplingSchemeBase` bookkeeping.

    A strategy is an iterator of `(observed, target)` index lists that stops once all
    `video_length` frames are given or generated. Lists are passed on as FDM emits them:
    `observed` may be unsorted and may repeat an index; `target` never repeats one.

    Bookkeeping: `done` (given or generated frames), `given` (the observed prefix
    `range(obs_length)`; after an unconditional start, the frames generated in step 0),
    `current_step`. With `obs_length == 0` the first step is unconditional: no observed frames,
    target = `unconditional_indices()`. Every other step comes from `next_indices()`.

    Adding a strategy = one small subclass here that overrides `next_indices()` (and, where it
    has extra constraints, `check_settings()`), decorated with `@register("<name>")`, plus one
    yaml file `conf/inference/<name>.yaml` naming it.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, video_length: int, obs_length: int, max_frames: int, step_size: int) -> None:
        self.video_length = _as_int("video_length", video_length, minimum=1)
        self.obs_length = _as_int("obs_length", obs_length, minimum=0)
        self.max_frames = _as_int("max_frames", max_frames, minimum=1)
        self.step_size = _as_int("step_size", step_size, minimum=1)
        if self.obs_length > self.video_length:
            raise ValueError(
                f"{self._label}: obs_length={self.obs_length} exceeds video_length={self.video_length}"
            )
        if self.obs_length == self.video_length:
            raise ValueError(
                f"{self._label}: obs_length={self.obs_length} equals "
                f"video_length={self.video_length}; there is nothing to generate"
            )
        self.check_settings()
        self.done: set[int] = set(range(self.obs_length))
        self.given: list[int] = list(range(self.obs_length))
        self.current_step = 0

    # --- to override -------------------------------------------------------------------------

    def check_settings(self) -> None:
        """Raise ValueError for settings this strategy cannot run with (called by __init__)."""

    def unconditional_indices(self) -> list[int]:
        """Targets of the unconditional first step (obs_length == 0): FDM's range(max_frames), clipped."""
        return list(range(min(self.max_frames, self.video_length)))

    def next_indices(self) -> Step:
        """Return (observed, target) for the next conditional step; `done` is not yet updated."""
        raise NotImplementedError

    # --- shared machinery --------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """The settings that define this schedule, for manifests."""
        return {
            "name": self.name,
            "video_length": self.video_length,
            "obs_length": self.obs_length,
            "max_frames": self.max_frames,
            "step_size": self.step_size,
        }

    def is_done(self) -> bool:
        """True once every frame of the video is given or generated."""
        return len(self.done) >= self.video_length

    def __iter__(self) -> Strategy:
        return self

    def __next__(self) -> Step:
        if self.is_done():
            raise StopIteration
        if self.obs_length == 0 and self.current_step == 0:
            observed: list[int] = []
            target = _unique_ints(self.unconditional_indices())
            # FDM carries on as if these frames had been given.
            self.given = list(target)
        else:
            obs_raw, target_raw = self.next_indices()
            observed = [int(i) for i in obs_raw]
            # FDM repeats a target only in degenerate settings (hierarchy keyframes when fewer than
            # S frames remain, K > T at an unconditional start); generating a frame twice in one
            # step is pointless, so keep the first. `done` evolves exactly as in FDM either way.
            target = _unique_ints(target_raw)
        self._check_step(observed, target)
        self.done.update(target)
        self.current_step += 1
        return observed, target

    def _check_step(self, observed: list[int], target: list[int]) -> None:
        step = self.current_step
        not_done = [i for i in observed if i not in self.done]
        if not_done:
            raise RuntimeError(
                f"{self._describe()}: step {step} observes frames {not_done} that are neither "
                f"given nor generated yet (observed={observed})"
            )
        out_of_range = [i for i in target if not 0 <= i < self.video_length]
        if out_of_range:
            raise RuntimeError(
                f"{self._describe()}: step {step} targets frames {out_of_range} outside "
                f"[0, {self.video_length})"
            )
        if not set(target) - self.done:
            raise ScheduleError(
                f"{self._describe()}: step {step} generates no new frame (target={target}); "
                "the schedule would never finish"
            )

    @property
    def _label(self) -> str:
        return self.name or type(self).__name__

    def _describe(self) -> str:
        return (
            f"{self._label} (video_length={self.video_length}, obs_length={self.obs_length}, "
            f"max_frames={self.max_frames}, step_size={self.step_size})"
        )

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.params().items() if k != "name")
        return f"{type(self).__name__}({settings})"

    def _require_context_room(self) -> None:
        """For autoreg/long-range: K-S is the context size and FDM slices `[-(K-S):]`."""
        if self.step_size >= self.max_frames:
            raise ValueError(
                f"{self._label}: step_size={self.step_size} must be < "
                f"max_frames={self.max_frames}; FDM keeps the last max_frames-step_size done "
                "frames as context, and its slice [-0:] would then observe every done frame"
            )


@register("autoreg")
class Autoregressive(Strategy):
    """Generate the next S frames, observing the latest K-S done frames."""

    def check_settings(self) -> None:
        self._require_context_room()

    def next_indices(self) -> Step:
        observed = sorted(self.done)[-(self.max_frames - self.step_size) :]
        first = observed[-1] + 1
        return observed, list(range(first, min(first + self.step_size, self.video_length)))


@register("long-range")
class LongRange(Strategy):
    """FDM-new `long-range` (FDM-old `mixed-autoreg-independent`): like autoreg, but half the context
    is the latest done frames and the rest the latest *given* frames."""

    def check_settings(self) -> None:
        self._require_context_room()
        if (self.max_frames - self.step_size) // 2 == 0:
            n_cond = self.max_frames - self.step_size
            raise ValueError(
                f"{self._label}: max_frames-step_size={n_cond} must be >= 2 "
                f"(max_frames={self.max_frames}, step_size={self.step_size}); with "
                "(K-S)//2 == 0 FDM's slice [-0:] would observe every done frame"
            )

    def next_indices(self) -> Step:
        n_cond = self.max_frames - self.step_size
        cond = set(sorted(self.done)[-(n_cond // 2) :])
        # Top up with given frames, latest first, until n_cond distinct frames (or none left).
        for i in sorted(self.given, reverse=True):
            cond.add(i)
            if len(cond) == n_cond:
                break
        first = max(self.done) + 1
        return sorted(cond), list(range(first, min(first + self.step_size, self.video_length)))


class Hierarchy(Strategy):
    """FDM's `HierarchyNLevel`: level 1 places S keyframes over the rest of the video; each deeper
    level fills gaps on a finer grid (`sample_every`), the last level (N) frame by frame.

    `observed` is emitted in FDM's order: done frames inside the target span (ascending), then up
    to half the remaining room of the nearest done frames after it (ascending), then the nearest
    done frames before it (descending) -- or, on level 1, a linspace over the given frames, which
    repeats indices when few frames are given.
    """

    levels: ClassVar[int] = 2

    def __init__(self, **kw: int) -> None:
        super().__init__(**kw)
        # FDM sets level/last on the first step (unconditional or first conditional); placeholders.
        self.level = 1
        self.last = max(self.given) if self.given else self.video_length - 1

    def check_settings(self) -> None:
        if self.step_size < 2:
            raise ValueError(
                f"{self._label}: step_size={self.step_size} must be >= 2 (FDM's level spacing "
                "divides by step_size-1)"
            )

    def unconditional_indices(self) -> list[int]:
        self.level, self.last = 1, self.video_length - 1
        return [int(x) for x in np.linspace(0, self.video_length - 1, self.max_frames)]

    def sample_every(self, step_size: int) -> int:
        """Grid spacing on the current level: ((T - #given) / (S-1)) ** ((N - level) / (N - 1)), truncated."""
        level_1 = (self.video_length - len(self.given)) / (step_size - 1)
        return int(level_1 ** ((self.levels - self.level) / (self.levels - 1)))

    def next_indices(self) -> Step:
        return self._indices(self.step_size)

    def _indices(self, step_size: int) -> Step:
        T, done = self.video_length, self.done
        if len(done) == len(self.given):
            # First conditional step: start level 1 after the given frames. (The S-1 retry below
            # re-enters here, so this reset can apply again, undoing a level change of the failed try.)
            self.level, self.last = 1, max(self.given)
        n_cond = self.max_frames - step_size
        idx = self.last + self.sample_every(step_size)
        if all(i in done for i in range(idx, T)):
            # Level finished (nothing left at or after idx): go one level finer and restart the
            # grid just before the earliest missing frame. Note the new idx is not re-checked.
            self.level += 1
            self.last = 0
            idx = min(i for i in range(T) if i not in done) - 1 + self.sample_every(step_size)
        if self.level == 1:
            target = [int(x) for x in np.linspace(max(self.given) + 1, T - 0.001, step_size)]
        else:
            target = []
            while len(target) < step_size and idx < T:
                if idx in done:
                    idx += 1
                else:
                    target.append(idx)
                    idx += self.sample_every(step_size)
        if not target:
            raise ScheduleError(
                f"{self._describe()}: level {self.level} finds no frame to generate at step "
                f"{self.current_step} though frames remain; FDM would fail here"
            )
        lo, hi = min(target), max(target)
        # Emission order: done frames inside the span (ascending), future (ascending), past.
        observed = [i for i in range(lo, hi) if i in done]
        room = n_cond - len(observed)
        if room < 2:
            # No room left for context before *and* after the targets: FDM retries the whole step
            # with one target fewer (state as the failed try left it; sample_every and n_cond
            # recomputed with S-1). From S=2 FDM's retry divides by zero, so stop there.
            if step_size <= 2:
                raise ScheduleError(
                    f"{self._describe()}: step {self.current_step} cannot fit context before "
                    f"and after its targets within max_frames={self.max_frames}, even after "
                    "FDM's retry with fewer targets reached 2; increase max_frames"
                )
            return self._indices(step_size - 1)
        observed = self._context(observed, lo, hi, n_cond)
        self.last = hi
        return observed, target

    def _context(self, observed: list[int], lo: int, hi: int, n_cond: int) -> list[int]:
        """The observed frames of a step whose targets span [lo, hi], given the done frames inside it."""
        T, done = self.video_length, self.done
        observed = observed + [i for i in range(hi + 1, T) if i in done][: (n_cond - len(observed)) // 2]
        n_before = n_cond - len(observed)
        if self.level == 1:  # spread over the given frames (repeats them when few are given)
            return observed + [
                int(x) for x in np.linspace(0, max(self.given) + 0.999, n_before).astype(np.int32)
            ]
        return observed + [i for i in range(lo - 1, -1, -1) if i in done][:n_before]  # nearest first


@register("hierarchy-2")
class Hierarchy2(Hierarchy):
    """Two levels: keyframes, then left-to-right infill."""

    levels = 2


@register("hierarchy-3")
class Hierarchy3(Hierarchy):
    """Three levels."""

    levels = 3


@register("hierarchy-4")
class Hierarchy4(Hierarchy):
    """Four levels."""

    levels = 4


@register("hierarchy-5")
class Hierarchy5(Hierarchy):
    """Five levels."""

    levels = 5


# --- FDM's adaptive schemes: the targets above, each video's context chosen by `adaptive.Adaptive` ---


@register("adaptive-autoreg")
class AdaptiveAutoregressive(Adaptive, Autoregressive):
    """FDM's `adaptive-autoreg`: the next S frames; context = the latest frame, then farthest-first."""

    def next_indices(self) -> Step:
        _, target = super().next_indices()
        self.candidates, self.always = sorted(self.done, reverse=True), [0]
        self.count = self.max_frames - self.step_size
        return self.candidates[:1], target


class AdaptiveHierarchy(Adaptive, Hierarchy):
    """FDM's `adaptive-hierarchy-N`: the hierarchy's targets; context = done frames inside the span, the two
    nearest before it and the nearest after, then farthest-first over every done frame."""

    def check_settings(self) -> None:
        super().check_settings()
        if self.obs_length < 2:  # frames 0 and 1 are then done before any target
            raise ValueError(
                f"{self._label}: obs_length={self.obs_length} must be >= 2: every step observes the two done "
                "frames nearest before its targets (FDM's code loops forever without them)"
            )

    def _context(self, observed: list[int], lo: int, hi: int, n_cond: int) -> list[int]:
        done = self.done
        observed = observed + [j for j in range(lo - 1, -1, -1) if j in done][:2]  # the two nearest before
        after = next((j for j in range(hi, self.video_length) if j in done), None)  # the nearest after
        observed = (observed if after is None else [*observed, after])[:n_cond]  # FDM uses the first K-S
        self.candidates = list(done)  # FDM's list(set): CPython's set order, which `done` shares with FDM's
        self.always = [self.candidates.index(j) for j in observed]
        self.count = n_cond
        return observed


@register("adaptive-hierarchy-2")
class AdaptiveHierarchy2(AdaptiveHierarchy):
    """Two levels, adaptive context."""

    levels = 2


@register("adaptive-hierarchy-3")
class AdaptiveHierarchy3(AdaptiveHierarchy):
    """Three levels, adaptive context."""

    levels = 3


def _strategy_class(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown inference strategy {name!r}; known: {known}") from None


def build_strategy(
    name: str, *, video_length: int, obs_length: int, max_frames: int, step_size: int
) -> Strategy:
    """Return a fresh Strategy iterator for `name`; raise ValueError for settings it cannot complete.

    The whole schedule is dry-run once on a separate instance (cheap: indices only), so a setting
    where FDM's rules get stuck fails here, before any model is loaded.
    """
    cls = _strategy_class(name)
    kw = {
        "video_length": video_length,
        "obs_length": obs_length,
        "max_frames": max_frames,
        "step_size": step_size,
    }
    for _ in cls(**kw):
        pass
    return cls(**kw)


def schedule(name: str, **kw: int) -> list[Step]:
    """All steps of strategy `name` with settings `kw` (video_length, obs_length, max_frames, step_size)."""
    return list(_strategy_class(name)(**kw))


def schedule_for(inference: Mapping[str, Any]) -> list[Step]:
    """Every (observed, target) step of the run that resolved inference settings describe.

    `inference` holds the strategy's `name` and SETTINGS, with `max_frames` already filled in from the
    generator (`videxp.inference.loop.resolve_inference`). This is the one place that turns inference
    settings into a schedule; raises ValueError for settings the strategy cannot complete.
    """
    missing = [k for k in ("name", *SETTINGS) if inference.get(k) is None]
    if missing:
        raise ValueError(
            f"inference settings lack {missing} (resolve_inference fills max_frames in from the generator)"
        )
    return schedule(str(inference["name"]), **{k: int(inference[k]) for k in SETTINGS})


def _as_int(key: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if value < minimum:
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{key} must be {kind}, got {value}")
    return int(value)


def _unique_ints(indices: list[Any]) -> list[int]:
    return list(dict.fromkeys(int(i) for i in indices))
