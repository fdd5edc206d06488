"""Moving shapes: procedural bouncing sprites, deterministic by (seed, split, index); optionally sharded."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from videxp.data.hdf5 import HDF5Videos, shard_files, write_shards
from videxp.data.records import VideoRecord
from videxp.utils.seeding import derive_seed
from videxp.video import VideoError

__all__ = ["SHAPES", "SPLITS", "MovingShapes", "materialize"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_KEY = {"train": 0, "val": 1, "test": 2}  # mixed into the seed: splits never share videos
SHAPES = ("square", "circle", "triangle")
# Distinct saturated colours (RGB) and, for grayscale content, distinct grey levels; background is black.
COLOURS = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [255, 255, 255],
    ],
    dtype=np.uint8,
)
GREYS = np.array([255, 215, 175, 135, 95], dtype=np.uint8)
DEFAULT_NUM_VIDEOS = {"train": 10000, "val": 64, "test": 64}


@functools.cache
def _sprite_pixels(shape: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) offsets `[P]` of the pixels covered by a `shape` sprite in a `size` x `size` box."""
    y, x = np.mgrid[0:size, 0:size]  # [S, S] each
    centre = (size - 1) / 2
    if shape == "square":
        mask = np.ones((size, size), dtype=bool)
    elif shape == "circle":
        mask = (y - centre) ** 2 + (x - centre) ** 2 <= (size / 2) ** 2
    elif shape == "triangle":  # apex up, base on the bottom row
        mask = np.abs(x - centre) <= (y + 1) / 2
    else:
        raise ValueError(f"unknown sprite shape {shape!r} (known: {SHAPES})")
    ys, xs = np.nonzero(mask)
    return ys, xs


def _range(value: int | float | Sequence, name: str) -> tuple[float, float]:
    lo, hi = (value, value) if np.isscalar(value) else tuple(value)
    if lo > hi or lo < 0:
        raise ValueError(f"{name}: expected a number or a (min, max) range with 0 <= min <= max, got {value}")
    return lo, hi


@dataclass(frozen=True)
class MovingShapes:
    """Bouncing squares, circles and triangles on black; clip `i` of `split` depends only on (seed, split, i).

    Sprites keep a constant velocity (`speed` pixels/frame, random direction) and reflect off the
    borders; later sprites are drawn over earlier ones. `grayscale` draws grey levels, stored
    replicated to 3 channels. With `root`, clips are read from shards written by `materialize`
    under `<root>/<split>` instead of being generated.
    """

    split: str = "train"
    num_videos: int | Mapping[str, int] | None = None  # per split; None: DEFAULT_NUM_VIDEOS
    video_length: int = 20
    image_size: int = 64
    num_sprites: int = 2
    sprite_size: int | tuple[int, int] = (8, 16)  # inclusive range of sprite box sizes (pixels)
    speed: float | tuple[float, float] = (1.0, 3.0)  # pixels per frame
    grayscale: bool = False
    seed: int = 0
    root: str | os.PathLike | None = None
    verify_checksums: bool = True  # with `root`: check each frame read against its stored sha256

    def __post_init__(self) -> None:
        if self.split not in _SPLIT_KEY:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        counts = DEFAULT_NUM_VIDEOS if self.num_videos is None else self.num_videos
        if isinstance(counts, Mapping):
            if self.split not in counts:
                raise ValueError(f"num_videos has no entry for split {self.split!r}: {dict(counts)}")
            counts = counts[self.split]
        if int(counts) < 0:
            raise ValueError(f"num_videos must be >= 0, got {counts}")
        object.__setattr__(self, "_count", int(counts))
        lo, hi = _range(self.sprite_size, "sprite_size")
        if lo < 1 or hi >= self.image_size or lo != int(lo) or hi != int(hi):
            raise ValueError(
                f"sprite_size must be whole pixels in [1, image_size - 1 = "
                f"{self.image_size - 1}], got {self.sprite_size}"
            )
        _range(self.speed, "speed")
        palette = GREYS if self.grayscale else COLOURS
        if not 1 <= self.num_sprites <= len(palette):
            raise ValueError(
                f"num_sprites must be in [1, {len(palette)}] (distinct colours), got {self.num_sprites}"
            )
        if self.video_length < 1:
            raise ValueError(f"video_length must be >= 1, got {self.video_length}")
        store = None
        if self.root is not None:
            store = HDF5Videos(Path(self.root) / self.split, verify_checksums=self.verify_checksums)
            if len(store) != self._count:
                raise VideoError(
                    f"{store.path}: holds {len(store)} videos, this {self.split} split has "
                    f"{self._count} (num_videos); re-run materialize or fix num_videos"
                )
            bad = np.flatnonzero(store.lengths != self.video_length)
            if len(bad):
                raise VideoError(
                    f"{store.path}: video {bad[0]} has {store.lengths[bad[0]]} frames, "
                    f"expected video_length = {self.video_length}"
                )
        object.__setattr__(self, "_store", store)

    def __len__(self) -> int:
        return self._count

    def for_split(self, split: str) -> MovingShapes:
        """The same dataset definition for another split, generated (root=None)."""
        return replace(self, split=split, root=None)

    def video_id(self, i: int) -> str:
        """A stable name for clip `i`, e.g. 'train_000042'."""
        return f"{self.split}_{self._index(i):06d}"

    def _index(self, i: int) -> int:
        if not -self._count <= i < self._count:
            raise IndexError(f"moving_shapes {self.split}: index {i} out of range ({self._count} videos)")
        return int(i) % self._count

    def clip(self, i: int) -> np.ndarray:
        """Clip `i` as uint8 `[video_length, image_size, image_size, 3]`."""
        i = self._index(i)
        if self._store is None:
            return self.generate(i)
        video = self._store.read(i)  # [T, H, W, 3]
        expected = (self.video_length, self.image_size, self.image_size, 3)
        if video.shape != expected:
            file, local = self._store.locate(i)
            raise VideoError(f"{file}: video {local} has shape {video.shape}, expected {expected}")
        return video

    def __getitem__(self, i: int) -> np.ndarray:
        return self.clip(i)

    # the VideoSource interface of videxp.data.sources

    def record(self, i: int) -> VideoRecord:
        """Catalog entry of clip `i` (no classes; `path` names the shard folder or says generated)."""
        return VideoRecord(
            video_id=self.video_id(i),
            path=str(Path(self.root) / self.split) if self.root is not None else "<generated>",
            split=self.split,
        )

    def num_frames(self, i: int) -> int:
        return self.video_length

    def fps(self, i: int) -> float | None:
        return None

    def read(self, i: int, indices: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3] frames at `indices` of clip `i`."""
        return self.clip(i)[np.asarray(indices, dtype=np.int64)]

    def describe(self) -> dict:
        return {
            "kind": "moving_shapes",
            "root": None if self.root is None else str(self.root),
            "num_videos": len(self),
        }

    def generate(self, i: int) -> np.ndarray:
        """Render clip `i` from its seed (ignores `root`); uint8 `[T, H, W, 3]`."""
        rng = np.random.default_rng(derive_seed(self.seed, _SPLIT_KEY[self.split], i))
        n, t_len, size = self.num_sprites, self.video_length, self.image_size
        lo, hi = _range(self.sprite_size, "sprite_size")
        kinds = rng.integers(0, len(SHAPES), n)  # [N]
        sizes = rng.integers(int(lo), int(hi) + 1, n)  # [N]
        palette = GREYS[:, None].repeat(3, axis=1) if self.grayscale else COLOURS  # [K, 3]
        colours = palette[rng.permutation(len(palette))[:n]]  # [N, 3], distinct
        span = (size - sizes).astype(np.float64)[:, None, None]  # [N, 1, 1] free room, >= 1
        start = rng.random((n, 1, 2)) * span  # [N, 1, 2] top-left (y, x)
        angle = rng.random(n) * 2 * np.pi
        speed = rng.uniform(*_range(self.speed, "speed"), n)
        direction = np.stack([np.sin(angle), np.cos(angle)], axis=-1)  # [N, 2] (dy, dx)
        velocity = (speed[:, None] * direction)[:, None, :]  # [N, 1, 2]
        frames = np.arange(t_len, dtype=np.float64)[None, :, None]  # [1, T, 1]
        # Reflection off both borders = a triangle wave of period 2 * span.
        unfolded = np.mod(start + velocity * frames, 2 * span)  # [N, T, 2]
        position = np.rint(span - np.abs(unfolded - span)).astype(np.int64)  # [N, T, 2], in [0, span]
        video = np.zeros((t_len, size, size, 3), dtype=np.uint8)  # [T, H, W, 3]
        t_index = np.arange(t_len)[:, None]  # [T, 1]
        for k in range(n):
            ys, xs = _sprite_pixels(SHAPES[kinds[k]], int(sizes[k]))  # [P] each
            video[t_index, position[k, :, 0:1] + ys, position[k, :, 1:2] + xs] = colours[k]  # [T, P] <- [3]
        return video


def _stored_matches(source: MovingShapes, split_dir: Path) -> bool:
    """True when `split_dir` holds exactly `source`'s videos; False when it is missing, partial or unreadable.

    Shards holding other videos (another seed or size) are an error, never silently replaced.
    """
    if not shard_files(split_dir):
        return False
    try:
        store = HDF5Videos(split_dir)
        first = store.read(0) if len(store) else None
    except (VideoError, OSError) as e:
        log.warning("%s: unreadable shards, rewriting: %s", split_dir, e)
        return False
    if first is not None and len(source) and not np.array_equal(first, source.generate(0)):
        raise VideoError(
            f"{split_dir}: stored video 0 differs from this moving_shapes config "
            f"(seed/size/sprites changed?); use another root or delete the shards"
        )
    complete = len(store) == len(source) and bool(np.all(store.lengths == source.video_length))
    if not complete:
        log.info("%s: %d of %d videos stored, rewriting", split_dir, len(store), len(source))
    return complete


def materialize(
    source: MovingShapes,
    root: str | os.PathLike,
    splits: Sequence[str] = SPLITS,
    videos_per_shard: int = 100000,
) -> dict[str, int]:
    """Write each split of `source` as RIVER shards under `<root>/<split>/`; returns videos written per split.

    A split whose shards already hold all its videos is skipped (0); a partial or unreadable one is
    rewritten. Each shard is written atomically.
    """
    written: dict[str, int] = {}
    for split in splits:
        dataset = source.for_split(split)
        split_dir = Path(root) / split
        if _stored_matches(dataset, split_dir):
            log.info("%s: complete (%d videos), skipping", split_dir, len(dataset))
            written[split] = 0
            continue
        videos = (dataset.generate(i) for i in range(len(dataset)))
        written[split] = write_shards(videos, split_dir, videos_per_shard, overwrite=True)
    return written
