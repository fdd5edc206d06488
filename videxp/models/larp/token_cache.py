"""Token cache: a frozen LARP tokenizer's ids of a deterministic set of clip windows per video, in HDF5."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from videxp.data import h5_cache
from videxp.data.clips import ClipSampler, Window, span
from videxp.data.datamodule import VideoDataModule
from videxp.data.h5_cache import VIDEOS, ProcessLocalFile
from videxp.data.order import item_rng
from videxp.data.records import SPLITS
from videxp.video import to_float

__all__ = [
    "FORMAT",
    "ClipTokenizer",
    "TokenClipDataset",
    "TokenDataModule",
    "id_dtype",
    "plan_windows",
    "read_manifest",
    "write_token_cache",
]

log = logging.getLogger(__name__)

FORMAT = "videxp.token_cache/1"
ITEMS = "items"  # int64 [num_items, 2]: (source index of the video, window row; -1 = a random row per access)
# what LARPModule.clip does to a window before the tokenizer (a change to it must change this string)
PREPROCESSING = "first frame_num frames, bilinear antialiased to input_size, grey to RGB, [-1, 1] to [0, 1]"
FLIP_HINT = "; for horizontal flips set model.token_cache_options.flip=true (the cache stores both views)"


class ClipTokenizer(Protocol):
    """What the cache needs of a `LARPModule` (its own pre-processing and encoding, so one definition)."""

    tokenizer: nn.Module  # LARPTokenizer: frame_num, input_size, codebook_size, bottleneck_token_num
    cond_frames: int

    @property
    def frame_prediction(self) -> bool: ...

    def clip(self, video: torch.Tensor) -> torch.Tensor: ...

    def tokens(self, clip: torch.Tensor) -> torch.Tensor: ...

    def observed(self, clip: torch.Tensor) -> torch.Tensor: ...


def id_dtype(codebook_size: int) -> str:
    """The smallest storage dtype of ids below `codebook_size`: uint8, uint16 or int32."""
    for dtype in ("uint8", "uint16"):
        if codebook_size <= np.iinfo(dtype).max + 1:
            return dtype
    return "int32"


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a finished token cache: ``format``, ``settings`` and ``summary``."""
    return h5_cache.read_manifest(path, FORMAT, "token cache", "write_token_cache")


# ----------------------------------------------------------------------------- which windows


@dataclass(frozen=True)
class WindowPlan:
    """The windows a split's cache holds and the items its reader serves.

    `starts[v]` are the first source frames of video `v`'s windows (its rows), `steps[v]` their frame step;
    `items` are (video, row) pairs in the pixel dataset's item order, row -1 meaning a random row per access;
    `skipped` are the (video, reason) pairs of videos too short for a clip.
    """

    starts: dict[int, list[int]]
    steps: dict[int, int]
    items: list[tuple[int, int]]
    skipped: list[tuple[int, str]]


def plan_windows(
    sampler: ClipSampler,
    num_frames: Sequence[int],
    fps: Sequence[float | None] | None = None,
    windows_per_video: int | None = None,
) -> WindowPlan:
    """The windows of `sampler`'s clips over videos of `num_frames` frames (at `fps`), to be cached.

    ``random`` mode (training): one item per video, its window drawn per access among its rows; the rows are
    every start ``0 .. num_frames - span`` the sampler may draw (`windows_per_video` None: the same uniform
    draw as the pixel path), or `windows_per_video` = K starts spread evenly over that range (the rule of
    mode ``uniform``, repeats dropped: at most every start). Other modes: exactly the sampler's windows as
    items, in its order, each video's distinct starts as its rows (`windows_per_video` must be None).
    """
    if windows_per_video is not None and windows_per_video < 1:
        raise ValueError(f"windows_per_video must be None or >= 1, got {windows_per_video}")
    windows = sampler.plan(num_frames, fps)
    starts: dict[int, list[int]] = {}
    steps: dict[int, int] = {}
    items: list[tuple[int, int]] = []
    if sampler.mode == "random":
        spread: dict[int, set[int]] | None = None
        if windows_per_video is not None:
            uniform = ClipSampler(**{**sampler.settings(), "mode": "uniform", "num_clips": windows_per_video})
            spread = {}
            for u in uniform.plan(num_frames, fps):
                spread.setdefault(u.video, set()).add(u.start)
        for w in windows:
            last = max(0, int(num_frames[w.video]) - span(sampler.length, w.step))  # latest full-window start
            starts[w.video] = list(range(last + 1)) if spread is None else sorted(spread[w.video])
            steps[w.video] = w.step
            items.append((w.video, -1))
        return WindowPlan(starts, steps, items, list(sampler.skipped))
    if windows_per_video is not None:
        raise ValueError(
            f"windows_per_video={windows_per_video} spreads the starts of random training windows; clip mode "
            f"{sampler.mode!r} plans its own windows (set windows_per_video to null)"
        )
    for w in windows:
        rows = starts.setdefault(w.video, [])
        if w.start not in rows:
            rows.append(w.start)
        steps[w.video] = w.step
        items.append((w.video, rows.index(w.start)))
    return WindowPlan(starts, steps, items, list(sampler.skipped))


def _window_settings(
    sampler: ClipSampler, training: bool, windows_per_video: int | None, flip: bool
) -> dict[str, Any]:
    """The clip settings that decide which windows are cached (a random mode's seed only decides reads)."""
    clips = sampler.settings()
    if sampler.mode == "random":
        clips.pop("seed")
        clips.pop("num_clips")
    return {
        "rule": "train" if training else "eval",
        **clips,
        "windows_per_video": windows_per_video,
        "flip": flip,
    }


# ----------------------------------------------------------------------------- writing


def _checked(ids: torch.Tensor, B: int, tokenizer: nn.Module) -> np.ndarray:
    """Tokenizer ids [B, N] as numpy; an error when the shape or a value is off (they are stored narrow)."""
    z = ids.cpu().numpy()
    N, K = int(tokenizer.bottleneck_token_num), int(tokenizer.codebook_size)
    if z.shape != (B, N) or z.min() < 0 or z.max() >= K:
        raise ValueError(
            f"tokenizer ids of shape {z.shape}, range [{z.min()}, {z.max()}]: expected [{B}, {N}] in [0, {K})"
        )
    return z


def _encode_windows(
    module: ClipTokenizer,
    frames: np.ndarray,
    pos: np.ndarray,
    flips: Sequence[bool],
    batch_clips: int,
    device: torch.device,
    dtype: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Ids of windows `pos` [W, F] (rows of `frames` [U, h, w, C] uint8), one view per `flips` entry:
    ids [W, V, N] and, for a frame-prediction AR, the ids of each view's observed clip [W, V, N]."""
    t = module.tokenizer
    W, V, N = len(pos), len(flips), int(t.bottleneck_token_num)
    ids = np.empty((W, V, N), dtype=dtype)
    cond = np.empty((W, V, N), dtype=dtype) if module.frame_prediction else None
    for lo in range(0, W, batch_clips):
        x = frames[pos[lo : lo + batch_clips]]  # [B, F, h, w, C] uint8
        for v, flip in enumerate(flips):
            view = x[:, :, :, ::-1] if flip else x  # mirrored along W, as albumentations HorizontalFlip
            clip = module.clip(to_float(view).to(device))  # [B, 3, F, S, S] in [0, 1]
            ids[lo : lo + len(x), v] = _checked(module.tokens(clip), len(x), t)  # [B, N]
            if cond is not None:
                cond[lo : lo + len(x), v] = _checked(
                    module.tokens(module.observed(clip)), len(x), t
                )  # [B, N]
    return ids, cond


def write_token_cache(
    datamodule: VideoDataModule,
    split: str,
    module: ClipTokenizer,
    path: str | os.PathLike,
    *,
    windows_per_video: int | None = None,
    flip: bool = False,
    batch_clips: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Encode a deterministic set of clip windows of each video of `datamodule`'s `split` with `module`'s
    frozen LARP tokenizer into the HDF5 file `path`.

    Windows: those of the split's clip sampler as the loaders use it (`plan_windows`): for the "train" split
    (random windows) every start it may draw, or `windows_per_video` evenly spread starts, and with `flip`
    also each window mirrored left-right (the flip of albumentations' HorizontalFlip on the transformed
    frames: the augmentation videxp's datasets offer, done here so both views are stored); val / test hold
    exactly the windows of the evaluation sampler (`clips.eval_mode`, `num_clips`, `seed`), unflipped, so a
    cached validation loss is the pixel one. Frames go through the split's deterministic transform (an
    error if it crops randomly or augments), then `module.clip` (resize to the tokenizer's input size, grey
    to RGB, [0, 1]) and `module.tokens` in batches of `batch_clips` windows, the tokenizer in eval mode on
    `device` (then back where it was). A frame-prediction AR's condition ids are the ids of
    `module.observed(clip)` (its first `cond_frames` frames padded with the last; the separator is not
    stored).

    Layout: group ``videos`` with one group ``<source index:06d>`` per video holding ``frames`` int64
    [W, frame_num] (source frames of each window), ``ids`` [W, V, N] and for frame prediction ``cond_ids``
    [W, V, N] (V = 2 views with `flip`: unflipped, flipped), stored as `id_dtype`; attributes as the latent
    cache's (``video_id``, ``label``, ..., ``complete``). ``items`` int64 [I, 2]: (source index, row; -1 =
    random). File attributes ``manifest`` (JSON: format, settings) and ``summary``. The settings: tokenizer
    class, state fingerprint, deterministic ids, frame_num / input_size / codebook; the pre-processing;
    dataset name / split / root / source / video ids; the transform; the window rule, clip settings,
    `windows_per_video`, `flip`; `cond_frames` (null without frame prediction); the dtype.

    Reuse, resumption and unreadable videos as `write_latent_cache`: a finished `path` with the same
    settings is kept (``status="cached"``), other settings are an error naming the first differing field;
    ``path.partial`` is resumed video by video and renamed when done; an unreadable video is logged,
    listed in the summary's ``failed`` and skipped. Returns the summary with ``path``, ``status``,
    ``written`` and ``resumed``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if batch_clips < 1:
        raise ValueError(f"batch_clips must be >= 1, got {batch_clips}")
    path, device, where = Path(path), torch.device(device), f"token cache of {datamodule.name}/{split}"
    t, training = module.tokenizer, split == "train"  # the loaders' rule (VideoDataModule.dataset)
    if datamodule.video_length < t.frame_num:
        raise ValueError(
            f"{where}: clips of dataset.video_length={datamodule.video_length} frames are shorter than the "
            f"tokenizer's frame_num={t.frame_num}"
        )
    transform = h5_cache.deterministic_transform(datamodule, split, "token cache", FLIP_HINT)
    if not training:
        windows_per_video, flip = None, False  # evaluation windows: the pixel sampler's, unflipped
    if not t.ids_deterministic:
        log.warning("%s: the tokenizer samples its ids; the cache keeps one draw per window", where)
    sampler = datamodule.sampler(split)
    source = datamodule.source(split=split)
    num_frames = [int(source.num_frames(i)) for i in range(len(source))]
    fps = [source.fps(i) for i in range(len(source))] if sampler.target_fps is not None else None
    plan = plan_windows(sampler, num_frames, fps, windows_per_video)
    dtype = id_dtype(int(t.codebook_size))
    settings = h5_cache.as_stored(
        {
            "tokenizer": {
                **h5_cache.network_settings(t),
                "deterministic": bool(t.ids_deterministic),
                "frame_num": int(t.frame_num),
                "input_size": int(t.input_size),
                "codebook_size": int(t.codebook_size),
                "num_tokens": int(t.bottleneck_token_num),
            },
            "preprocessing": PREPROCESSING,
            "dataset": h5_cache.dataset_settings(datamodule, split, source),
            "transform": transform.settings(),
            "windows": _window_settings(sampler, training, windows_per_video, bool(flip)),
            "cond_frames": int(module.cond_frames) if module.frame_prediction else None,
            "dtype": dtype,
        }
    )
    manifest = h5_cache.matching_cache(path, settings, FORMAT, "token cache", "write_token_cache")
    if manifest is not None:
        return {**manifest["summary"], "path": str(path), "status": "cached", "written": 0, "resumed": 0}

    flips = (False, True) if flip else (False,)

    def read(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        step, n = plan.steps[i], num_frames[i]
        windows = np.stack(
            [sampler.frame_indices(Window(i, s, step), s, n)[: t.frame_num] for s in plan.starts[i]]
        )  # [W, F] source frames of each window (F = frame_num)
        needed, pos = np.unique(windows, return_inverse=True)  # [U], [W * F]: each frame read once
        frames = h5_cache.read_video(source, transform, i, needed)  # [U, h, w, C] uint8
        return windows, frames, pos.reshape(windows.shape)  # pos: [W, F] rows of frames

    def write(videos: h5py.Group, name: str, i: int, data: Any) -> h5py.Group:
        windows, frames, pos = data
        ids, cond = _encode_windows(module, frames, pos, flips, batch_clips, device, dtype)
        group = videos.create_group(name)
        group.create_dataset("frames", data=windows)  # int64 [W, F]
        group.create_dataset("ids", data=ids)  # [W, V, N]
        if cond is not None:
            group.create_dataset("cond_ids", data=cond)  # [W, V, N]
        return group

    previous, was_training = t.device, t.training
    t.eval().to(device)
    try:
        with h5_cache.writing(path, settings, FORMAT) as f, torch.no_grad():
            videos = f.require_group(VIDEOS)
            written, resumed, failed = h5_cache.cache_videos(
                videos,
                source,
                read,
                write,
                indices=sorted(plan.starts),
                where=str(path),
                desc=f"tokens {datamodule.name}/{split}",
                progress=progress,
            )
            items = np.array([(v, r) for v, r in plan.items if f"{v:06d}" in videos], dtype=np.int64)
            if ITEMS in f:
                del f[ITEMS]
            f.create_dataset(ITEMS, data=items.reshape(-1, 2))  # [I, 2]
            names = sorted(videos)
            summary = {
                "num_videos": len(names),
                "num_windows": int(sum(videos[n]["ids"].shape[0] for n in names)),
                "num_items": len(items),
                "views": len(flips),
                "num_tokens": int(t.bottleneck_token_num),
                "failed": failed,
                "too_short": [
                    {"index": v, "video_id": source.record(v).video_id, "reason": r} for v, r in plan.skipped
                ],
            }
            f.attrs["summary"] = json.dumps(summary)
    finally:
        t.to(previous).train(was_training)
    log.info("%s: %d videos encoded, %d kept from a partial cache", path, written, resumed)
    return {**summary, "path": str(path), "status": "written", "written": written, "resumed": resumed}


# ----------------------------------------------------------------------------- reading


class TokenClipDataset(Dataset):
    """Cached ids as training items, one per item of the pixel dataset of the cached split.

    Item: ``ids`` int64 [N]; ``cond_ids`` int64 [N] (frame prediction: the observed frames' ids, no
    separator); ``index``; ``video_id``; ``label`` (-1 without classes); ``frames`` int64 [frame_num] (source
    frames of the window); ``flipped`` (bool). A random-window item (the train split) draws one of its video's
    cached windows, and with a flipped view stored one of the two views, per access: from torch's
    generator (DataLoader worker seeding applies), or for a key ``(index, draw)`` from ResumableShuffle
    from ``(seed, draw, index)``, as `ClipDataset` draws its random starts. Evaluation items (val / test)
    are fixed: the evaluation sampler's windows, unflipped. The HDF5 file is opened lazily, once per process.
    """

    def __init__(self, path: str | os.PathLike, *, seed: int = 0):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.seed = int(seed)
        with h5py.File(self.path, "r") as f:
            group = f[VIDEOS]
            self.names = sorted(group)
            attrs = [group[n].attrs for n in self.names]
            self.video_ids = [str(a["video_id"]) for a in attrs]
            self.labels = [int(a["label"]) for a in attrs]
            self.rows = [int(group[n]["ids"].shape[0]) for n in self.names]
            self.views = int(group[self.names[0]]["ids"].shape[1])
            self.conditioned = "cond_ids" in group[self.names[0]]
            position = {int(n): p for p, n in enumerate(self.names)}
            self.items = [(position[int(v)], int(r)) for v, r in f[ITEMS][()]]  # (video position, row)
        if not self.items:
            raise ValueError(f"{self.path}: a token cache without items")
        self._file = ProcessLocalFile(self.path)  # opened lazily, once per process

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item `key`, or `(item, draw)` from ResumableShuffle (random choices seeded by the draw)."""
        i, draw = key if isinstance(key, tuple) else (key, None)
        p, row = self.items[i]
        rng = item_rng(self.seed, i, draw) if row < 0 or self.views > 1 else None
        if row < 0:
            row = int(rng.integers(0, self.rows[p]))
        view = int(rng.integers(0, self.views)) if self.views > 1 else 0
        group = self._file.get()[VIDEOS][self.names[p]]
        item = {
            "ids": torch.from_numpy(group["ids"][row, view].astype(np.int64)),  # [N]
            "index": i,
            "video_id": self.video_ids[p],
            "label": self.labels[p],
            "frames": torch.from_numpy(group["frames"][row].astype(np.int64)),  # [frame_num]
            "flipped": view == 1,
        }
        if self.conditioned:
            item["cond_ids"] = torch.from_numpy(group["cond_ids"][row, view].astype(np.int64))  # [N]
        return item

    def close(self) -> None:
        """Close this process's file handle (reopened on the next access)."""
        self._file.close()


class TokenDataModule(h5_cache.CachedSplits):
    """Loaders of cached LARP ids for a `VideoDataModule` (`CachedSplits`: ``<cache_dir>/<split>.h5`` per
    split, built with `module`'s tokenizer or checked against it). `device="auto"` encodes on the trainer's
    device (cpu without a trainer)."""

    def __init__(
        self,
        data: VideoDataModule,
        cache_dir: str | os.PathLike,
        module: ClipTokenizer,
        *,
        splits: Sequence[str] = ("train", "val"),
        windows_per_video: int | None = None,
        flip: bool = False,
        batch_clips: int = 32,
        device: str | torch.device = "auto",
        progress: bool = True,
    ):
        super().__init__(data, cache_dir, splits)
        self.module = module
        self.encode_on = device
        self.options = {
            "windows_per_video": windows_per_video,
            "flip": bool(flip),
            "batch_clips": int(batch_clips),
            "progress": progress,
        }

    def encode_device(self) -> torch.device:
        """Where the tokenizer encodes while building: `device`, or for "auto" the trainer's (cpu without)."""
        if str(self.encode_on) != "auto":
            return torch.device(self.encode_on)
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def build(self, split: str) -> dict[str, Any]:
        path = self.cache_path(split)
        return write_token_cache(
            self.data, split, self.module, path, device=self.encode_device(), **self.options
        )

    def open(self, split: str) -> TokenClipDataset:
        return TokenClipDataset(self.cache_path(split), seed=self.data.sampler(split).seed)
