"""Latent cache: every frame of a split encoded once by a frozen autoencoder into HDF5, served as clips."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from videxp.data import h5_cache
from videxp.data.clips import ClipSampler
from videxp.data.datamodule import VideoDataModule
from videxp.data.h5_cache import (
    VIDEOS,
    ProcessLocalFile,
    as_stored,
    cache_videos,
    dataset_settings,
    deterministic_transform,
    network_settings,
    read_video,
    state_fingerprint,
)
from videxp.data.order import item_rng
from videxp.data.sources import VideoSource
from videxp.data.transforms import ClipTransform
from videxp.video import to_float

__all__ = [
    "FORMAT",
    "LatentClipDataset",
    "LatentDataModule",
    "read_manifest",
    "state_fingerprint",
    "write_latent_cache",
]

log = logging.getLogger(__name__)

FORMAT = "videxp.latent_cache/1"
DTYPES = ("float32", "float16")  # storage dtypes (HDF5 has no bfloat16)
# group VIDEOS (h5_cache) holds one dataset [T, C, h, w] per cached video, named by its source index


# ----------------------------------------------------------------------------- settings and manifest


def _eval_transform(datamodule: VideoDataModule, split: str) -> ClipTransform:
    """The split's frame transform; an error when it is random (one stored encoding per frame) or not RGB."""
    transform = deterministic_transform(datamodule, split, "latent cache")
    if transform.channels != 3:
        raise ValueError(
            f"latent cache of {datamodule.name}/{split}: the autoencoder takes RGB frames [N, 3, H, W], but "
            f"dataset.channels={transform.channels}; set dataset.channels=3"
        )
    return transform


def _settings(
    datamodule: VideoDataModule,
    split: str,
    source: VideoSource,
    transform: ClipTransform,
    encoder: nn.Module,
    dtype: str,
) -> dict[str, Any]:
    """Everything that determines the cached latents (compared field by field before any reuse)."""
    settings = {
        "encoder": network_settings(encoder),
        "dataset": dataset_settings(datamodule, split, source),
        "transform": transform.settings(),
        "dtype": dtype,
    }
    return as_stored(settings)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a finished cache: ``format``, ``settings`` and ``summary`` (videos, frames, failed)."""
    return h5_cache.read_manifest(path, FORMAT, "latent cache", "write_latent_cache")


# ----------------------------------------------------------------------------- writing


def _encode_batches(
    encoder: nn.Module, clip: np.ndarray, batch_frames: int, device: str | torch.device
) -> Iterator[np.ndarray]:
    """Latents of a uint8 clip [T, h, w, 3], `batch_frames` frames at a time: float32 [B, C, h/f, w/f]."""
    param = next(iter(encoder.parameters()), None)
    dtype = torch.float32 if param is None else param.dtype
    for lo in range(0, clip.shape[0], batch_frames):
        x = to_float(clip[lo : lo + batch_frames]).to(device=device, dtype=dtype)  # [B, 3, h, w] in [-1, 1]
        z = encoder.encode(x)  # [B, C, h/f, w/f]
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[0] != x.shape[0]:
            raise TypeError(
                f"{type(encoder).__name__}.encode must return [N, C, h, w] for N={x.shape[0]} frames, got "
                f"{getattr(z, 'shape', type(z).__name__)}"
            )
        yield z.float().cpu().numpy()


def write_latent_cache(
    datamodule: VideoDataModule,
    split: str,
    encoder: nn.Module,
    path: str | os.PathLike,
    *,
    batch_frames: int = 64,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    progress: bool = True,
) -> dict[str, Any]:
    """Encode every frame of every video of `datamodule`'s `split` with `encoder` into the HDF5 file `path`.

    Frames go through the split's deterministic transform (an error if it crops randomly or augments),
    then `encoder.encode` under ``torch.no_grad()`` in eval mode on `device` (the encoder is moved there;
    its train/eval mode is restored after), `batch_frames` at a time, stored as `dtype`.

    Layout: group ``videos`` with one dataset ``<source index:06d>`` [T, C, h, w] per video (attributes
    ``video_id``, ``label`` (-1 without classes), ``class_name``, ``path``, ``num_frames``, ``fps`` (NaN
    when unknown), ``source_index``, ``complete``); file attributes ``manifest`` (JSON: format and the
    settings below) and ``summary`` (JSON: videos, frames, latent shape, failed videos).
    The settings are the encoder class and state-dict fingerprint, the dataset name / split / root /
    source config / video ids, the transform settings and `dtype`.

    Resumable: writes `path` + ``.partial`` (videos already complete there are kept), renamed onto `path`
    when done. An existing `path` with the same settings is left untouched (returns ``status="cached"``);
    with other settings it is an error naming the first differing field. A video that cannot be read is
    logged, listed in the summary's ``failed`` and skipped. Returns the summary with ``path``, ``status``
    (``written`` / ``cached``), ``written`` and ``resumed`` (videos encoded now / kept from the partial).
    """
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    path = Path(path)
    transform = _eval_transform(datamodule, split)
    source = datamodule.source(split=split)
    settings = _settings(datamodule, split, source, transform, encoder, dtype)
    manifest = h5_cache.matching_cache(path, settings, FORMAT, "latent cache", "write_latent_cache")
    if manifest is not None:
        return {**manifest["summary"], "path": str(path), "status": "cached", "written": 0, "resumed": 0}

    def write(videos: h5py.Group, name: str, i: int, clip: np.ndarray) -> h5py.Dataset:
        ds = None
        t = 0
        for z in _encode_batches(encoder, clip, batch_frames, device):  # [B, C, h, w]
            if ds is None:
                ds = videos.create_dataset(name, shape=(len(clip), *z.shape[1:]), dtype=dtype)
            ds[t : t + len(z)] = z
            t += len(z)
        return ds

    was_training = encoder.training
    encoder.eval().to(device)
    try:
        with h5_cache.writing(path, settings, FORMAT) as f, torch.no_grad():
            videos = f.require_group(VIDEOS)
            written, resumed, failed = cache_videos(
                videos,
                source,
                lambda i: read_video(source, transform, i),  # [T, h, w, 3]
                write,
                where=str(path),
                desc=f"latents {datamodule.name}/{split}",
                progress=progress,
            )
            names = sorted(videos)
            summary = {
                "num_videos": len(names),
                "num_frames": int(sum(videos[n].shape[0] for n in names)),
                "latent_shape": list(videos[names[0]].shape[1:]),  # [C, h, w] per frame
                "failed": failed,
            }
            f.attrs["summary"] = json.dumps(summary)
    finally:
        encoder.train(was_training)
    log.info("%s: %d videos encoded, %d kept from a partial cache", path, written, resumed)
    return {**summary, "path": str(path), "status": "written", "written": written, "resumed": resumed}


# ----------------------------------------------------------------------------- reading


class LatentClipDataset(Dataset):
    """Clips of cached latents, windows chosen by `ClipSampler` exactly as `ClipDataset` chooses frames.

    Item: ``latents`` float32 [clip_length, C, h, w]; ``index`` (clip index); ``video_id``; ``label``
    (-1 without classes); ``frames`` (int64 [clip_length] source frame indices). `stride`, `target_fps`,
    `mode`, `num_clips`, `seed` and `pad` mean what they mean for `ClipSampler`; ``random`` windows draw
    their start from torch's generator (DataLoader worker seeding applies). Window ``video`` indices are
    positions among the cached videos, so they equal the pixel path's when no video failed to cache.
    The HDF5 file is opened lazily, once per process (h5py handles are not fork-safe).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        clip_length: int,
        *,
        stride: int = 1,
        mode: str = "random",
        seed: int = 0,
        target_fps: float | None = None,
        num_clips: int | None = None,
        pad: str = "error",
    ):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.sampler = ClipSampler(
            length=clip_length,
            stride=stride,
            target_fps=target_fps,
            mode=mode,
            num_clips=num_clips,
            seed=seed,
            pad=pad,
        )
        with h5py.File(self.path, "r") as f:
            group = f[VIDEOS]
            self.names = sorted(group)
            attrs = [group[n].attrs for n in self.names]
            self.video_ids = [str(a["video_id"]) for a in attrs]
            self.labels = [int(a["label"]) for a in attrs]
            self._frames = [int(group[n].shape[0]) for n in self.names]
            fps = [None if math.isnan(float(a["fps"])) else float(a["fps"]) for a in attrs]
        self.windows = self.sampler.plan(self._frames, fps if target_fps is not None else None)
        for video, reason in self.sampler.skipped:
            log.warning("%s: skipped %s: %s", self.path, self.video_ids[video], reason)
        if not self.windows:
            raise ValueError(
                f"{self.path}: no clip of {clip_length} latent frames fits any of the {len(self.names)} "
                f"cached videos ({len(self.sampler.skipped)} skipped as too short)"
            )
        self._file = ProcessLocalFile(self.path)  # opened lazily, once per process

    def __len__(self) -> int:
        return len(self.windows)

    def _videos(self) -> h5py.Group:
        return self._file.get()[VIDEOS]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Clip `key`, or `(clip, draw)` from ResumableShuffle (random windows seeded by the draw)."""
        i, draw = key if isinstance(key, tuple) else (key, None)
        window = self.windows[i]
        n = self._frames[window.video]
        rng = item_rng(self.sampler.seed, i, draw, self.sampler.mode == "random")
        start = self.sampler.draw_start(window, n, rng)
        indices = self.sampler.frame_indices(window, start, n)  # [T]
        lo, hi = int(indices.min()), int(indices.max()) + 1
        block = self._videos()[self.names[window.video]][lo:hi]  # [hi - lo, C, h, w], one contiguous read
        latents = block[indices - lo].astype(np.float32, copy=False)  # [T, C, h, w]
        return {
            "latents": torch.from_numpy(latents),
            "index": i,
            "video_id": self.video_ids[window.video],
            "label": self.labels[window.video],
            "frames": torch.from_numpy(indices),
        }

    def close(self) -> None:
        """Close this process's file handle (reopened on the next access)."""
        self._file.close()


class LatentDataModule(h5_cache.CachedSplits):
    """Loaders of cached latent clips for a `VideoDataModule` (`CachedSplits`: ``<cache_dir>/<split>.h5``
    per split, built with `encoder` or checked against it; clips cut with the wrapped module's clip length
    and clip settings)."""

    def __init__(
        self,
        data: VideoDataModule,
        cache_dir: str | os.PathLike,
        encoder: nn.Module,
        *,
        splits: Sequence[str] = ("train", "val"),
        batch_frames: int = 64,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        progress: bool = True,
    ):
        super().__init__(data, cache_dir, splits)
        self.encoder = encoder
        self.options = {"batch_frames": batch_frames, "device": device, "dtype": dtype, "progress": progress}

    def build(self, split: str) -> dict[str, Any]:
        return write_latent_cache(self.data, split, self.encoder, self.cache_path(split), **self.options)

    def open(self, split: str) -> LatentClipDataset:
        settings = self.data.sampler(split).settings()
        settings.pop("length")
        return LatentClipDataset(self.cache_path(split), self.data.video_length, **settings)
