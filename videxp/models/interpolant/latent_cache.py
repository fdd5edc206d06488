"""Latent cache: every frame of a split encoded once by a frozen autoencoder into HDF5, served as clips."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from videxp.data.clips import ClipSampler
from videxp.data.datamodule import VideoDataModule
from videxp.data.records import SPLITS
from videxp.data.sources import VideoSource
from videxp.data.transforms import ClipTransform
from videxp.video import VideoError, to_float

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
VIDEOS = "videos"  # group holding one dataset [T, C, h, w] per cached video, named by source index
PARTIAL = ".partial"  # suffix of a cache being written; renamed onto the target when complete


# ----------------------------------------------------------------------------- settings and manifest


def state_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's state dict: per key (sorted) its name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _plain(obj: Any) -> Any:
    """`obj` as JSON-ready plain data (OmegaConf containers resolved, tuples as lists, others as str)."""
    if OmegaConf.is_config(obj):
        obj = OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _eval_transform(datamodule: VideoDataModule, split: str) -> ClipTransform:
    """The split's frame transform; an error when it is random (one stored encoding per frame) or not RGB."""
    transform = datamodule.clip_transform(split)
    where = f"latent cache of {datamodule.name}/{split}"
    if transform.random:
        what = f"augment={transform.augment!r}" if transform.augment else "resize_mode='random_crop'"
        raise ValueError(
            f"{where}: the frame transform is random ({what}); a cache stores one deterministic encoding "
            "per frame: use resize_mode squash / center_crop and no augmentation (dataset.transform)"
        )
    if transform.channels != 3:
        raise ValueError(
            f"{where}: the autoencoder takes RGB frames [N, 3, H, W], but dataset.channels="
            f"{transform.channels}; set dataset.channels=3"
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
    ids = "\n".join(source.record(i).video_id for i in range(len(source)))
    describe = source.describe()
    settings = {
        "encoder": {
            "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
            "fingerprint": state_fingerprint(encoder),
        },
        "dataset": {
            "name": datamodule.name,
            "split": split,
            "root": describe.get("root"),
            "source": _plain(getattr(datamodule.source, "keywords", None) or describe),
            "num_videos": len(source),
            "video_ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
        },
        "transform": transform.settings(),
        "dtype": dtype,
    }
    return json.loads(json.dumps(_plain(settings)))  # as it reads back from the file


def _difference(cached: Any, wanted: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted field, cached value, wanted value) where two settings trees differ, or None."""
    if isinstance(cached, dict) and isinstance(wanted, dict):
        for key in sorted(set(cached) | set(wanted)):
            field = f"{prefix}{key}"
            if key not in cached or key not in wanted:
                return field, cached.get(key, "<absent>"), wanted.get(key, "<absent>")
            found = _difference(cached[key], wanted[key], f"{field}.")
            if found is not None:
                return found
        return None
    return None if cached == wanted else (prefix.rstrip("."), cached, wanted)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a finished cache: ``format``, ``settings`` and ``summary`` (videos, frames, failed)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            manifest = json.loads(f.attrs["manifest"])
            summary = json.loads(f.attrs["summary"]) if "summary" in f.attrs else None
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a readable videxp latent cache ({type(e).__name__}: {e})") from e
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if summary is None:
        raise ValueError(f"{path}: unfinished latent cache (no summary); rebuild it with write_latent_cache")
    return {**manifest, "summary": summary}


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


def _read_video(source: VideoSource, transform: ClipTransform, i: int) -> np.ndarray:
    """All frames of video `i`, transformed: uint8 [T, h, w, 3]; VideoError when the count is off."""
    n = int(source.num_frames(i))
    frames = source.read(i, np.arange(n))  # [T, H, W, 3] uint8
    if frames.shape[0] != n:
        raise VideoError(f"read {frames.shape[0]} frames, the source reports {n}")
    return transform(frames)  # [T, h, w, 3]


def _open_partial(partial: Path, settings: dict[str, Any]) -> str:
    """h5py mode for the partial cache: ``a`` to resume one written with the same settings, else ``w``."""
    if not partial.exists():
        return "w"
    try:
        with h5py.File(partial, "r") as f:
            found = _difference(json.loads(f.attrs["manifest"])["settings"], settings)
    except (OSError, KeyError, ValueError) as e:
        log.warning("%s: unreadable partial cache (%s: %s); starting over", partial, type(e).__name__, e)
        return "w"
    if found is not None:
        log.warning("%s: partial cache made with another %s (%r); starting over", partial, *found[:2])
        return "w"
    return "a"


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
    if path.exists():
        manifest = read_manifest(path)
        found = _difference(manifest["settings"], settings)
        if found is not None:
            field, cached, wanted = found
            raise ValueError(
                f"{path}: latent cache made with {field}={cached!r}, this run has {field}={wanted!r}; "
                "delete the file or use another cache folder"
            )
        log.info("%s: latent cache complete with matching settings; nothing to do", path)
        return {**manifest["summary"], "path": str(path), "status": "cached", "written": 0, "resumed": 0}

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + PARTIAL)
    mode = _open_partial(partial, settings)
    was_training = encoder.training
    encoder.eval().to(device)
    failed: list[dict[str, Any]] = []
    written = resumed = 0
    try:
        with h5py.File(partial, mode) as f, torch.no_grad():
            if mode == "w":
                f.attrs["manifest"] = json.dumps({"format": FORMAT, "settings": settings})
            videos = f.require_group(VIDEOS)
            bar = tqdm(range(len(source)), desc=f"latents {datamodule.name}/{split}", disable=not progress)
            for i in bar:
                name = f"{i:06d}"
                if name in videos:
                    if bool(videos[name].attrs.get("complete", False)):
                        resumed += 1
                        continue
                    del videos[name]  # interrupted mid-video
                record = source.record(i)
                try:
                    clip = _read_video(source, transform, i)  # [T, h, w, 3]
                except Exception as e:  # noqa: BLE001 - any unreadable video is reported and skipped
                    reason = f"{type(e).__name__}: {e}"
                    log.warning(
                        "%s: cannot read video %d (%s), skipped: %s", path, i, record.video_id, reason
                    )
                    failed.append({"index": i, "video_id": record.video_id, "reason": reason})
                    continue
                ds = None
                t = 0
                for z in _encode_batches(encoder, clip, batch_frames, device):  # [B, C, h, w]
                    if ds is None:
                        ds = videos.create_dataset(name, shape=(len(clip), *z.shape[1:]), dtype=dtype)
                    ds[t : t + len(z)] = z
                    t += len(z)
                ds.attrs.update(
                    {
                        "video_id": record.video_id,
                        "label": -1 if record.label is None else int(record.label),
                        "class_name": record.class_name or "",
                        "path": record.path,
                        "num_frames": len(clip),
                        "fps": math.nan if source.fps(i) is None else float(source.fps(i)),
                        "source_index": i,
                    }
                )
                ds.attrs["complete"] = True  # last: marks the video done for a resumed run
                f.flush()
                written += 1
            names = sorted(videos)
            if not names:
                raise ValueError(
                    f"{path}: no video of {datamodule.name}/{split} could be read ({len(failed)} failed; "
                    f"first: {failed[0] if failed else None})"
                )
            summary = {
                "num_videos": len(names),
                "num_frames": int(sum(videos[n].shape[0] for n in names)),
                "latent_shape": list(videos[names[0]].shape[1:]),  # [C, h, w] per frame
                "failed": failed,
            }
            f.attrs["summary"] = json.dumps(summary)
    finally:
        encoder.train(was_training)
    os.replace(partial, path)
    if failed:
        log.warning("%s: %d of %d videos could not be read, not cached", path, len(failed), len(source))
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
        self._files: dict[int, h5py.File] = {}  # pid -> handle; a forked worker never uses its parent's

    def __len__(self) -> int:
        return len(self.windows)

    def _videos(self) -> h5py.Group:
        pid = os.getpid()
        if pid not in self._files:
            self._files[pid] = h5py.File(self.path, "r")
        return self._files[pid][VIDEOS]

    def _rng(self, i: int) -> np.random.Generator:
        if self.sampler.mode == "random":
            return np.random.default_rng(int(torch.randint(0, 2**62, ())))
        return np.random.default_rng([self.sampler.seed & 0xFFFFFFFF, i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        window = self.windows[i]
        n = self._frames[window.video]
        start = self.sampler.draw_start(window, n, self._rng(i))
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
        handle = self._files.pop(os.getpid(), None)
        if handle is not None:
            handle.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}  # spawned workers open their own handle
        return state


class LatentDataModule(L.LightningDataModule):
    """Loaders of cached latent clips for a `VideoDataModule`: ``<cache_dir>/<split>.h5`` per split.

    `prepare_data` (rank 0 under Lightning) builds each split's cache with `encoder` or checks that the
    existing one matches it; `setup` does the same (a no-op once built) and opens the datasets with the
    wrapped module's clip length, clip settings, batch size and workers.
    """

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
        super().__init__()
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise ValueError(f"unknown splits {unknown}; expected some of {SPLITS}")
        self.data = data
        self.cache_dir = Path(cache_dir)
        self.encoder = encoder
        self.splits = tuple(splits)
        self.options = {"batch_frames": batch_frames, "device": device, "dtype": dtype, "progress": progress}
        self.summaries: dict[str, dict[str, Any]] = {}
        self._datasets: dict[str, LatentClipDataset] = {}

    def cache_path(self, split: str) -> Path:
        """The cache file of one split."""
        return self.cache_dir / f"{split}.h5"

    def prepare_data(self) -> None:
        for split in self.splits:
            self.summaries[split] = write_latent_cache(
                self.data, split, self.encoder, self.cache_path(split), **self.options
            )

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        for split in self.splits:
            if split not in self._datasets:
                settings = self.data.sampler(split).settings()
                settings.pop("length")
                self._datasets[split] = LatentClipDataset(
                    self.cache_path(split), self.data.video_length, **settings
                )

    def dataset(self, split: str) -> LatentClipDataset:
        """The latent clip dataset of one split (after `setup`)."""
        if split not in self._datasets:
            raise ValueError(f"split {split!r} is not set up (splits: {self.splits}); call setup() first")
        return self._datasets[split]

    def video_dataset(self, split: str):
        """The wrapped pixel dataset of a split (what validation sampling compares against)."""
        return self.data.dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        workers = self.data.num_workers
        return DataLoader(
            self.dataset(split),
            batch_size=self.data.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=self.data.pin_memory,
            drop_last=shuffle,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
