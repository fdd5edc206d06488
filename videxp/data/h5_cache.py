"""HDF5 caches of a frozen network's encodings: settings manifests, resumable partial files, lazy reading."""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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

from videxp.data.datamodule import VideoDataModule
from videxp.data.order import training_order
from videxp.data.records import SPLITS
from videxp.data.sources import VideoSource
from videxp.data.transforms import ClipTransform
from videxp.video import VideoError

__all__ = [
    "PARTIAL",
    "CachedSplits",
    "VIDEOS",
    "ProcessLocalFile",
    "as_stored",
    "cache_videos",
    "dataset_settings",
    "deterministic_transform",
    "difference",
    "matching_cache",
    "network_settings",
    "open_partial",
    "plain",
    "read_manifest",
    "read_video",
    "state_fingerprint",
    "video_attrs",
    "writing",
]

log = logging.getLogger(__name__)

VIDEOS = "videos"  # group holding one entry per cached video, named by its source index (``000042``)
PARTIAL = ".partial"  # suffix of a cache being written; renamed onto the target when complete


# ----------------------------------------------------------------------------- settings


def state_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's state dict: per key (sorted) its name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def plain(obj: Any) -> Any:
    """`obj` as JSON-ready plain data (OmegaConf containers resolved, tuples as lists, others as str)."""
    if OmegaConf.is_config(obj):
        obj = OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def as_stored(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` as they read back from a manifest (plain JSON data), so that comparisons are exact."""
    return json.loads(json.dumps(plain(settings)))


def network_settings(module: nn.Module) -> dict[str, str]:
    """A frozen network's identity: its class and the fingerprint of its state dict."""
    return {
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "fingerprint": state_fingerprint(module),
    }


def dataset_settings(datamodule: VideoDataModule, split: str, source: VideoSource) -> dict[str, Any]:
    """What names the videos of a split: dataset name, split, root, source config, count, ids (hashed)."""
    ids = "\n".join(source.record(i).video_id for i in range(len(source)))
    describe = source.describe()
    return {
        "name": datamodule.name,
        "split": split,
        "root": describe.get("root"),
        "source": plain(getattr(datamodule.source, "keywords", None) or describe),
        "num_videos": len(source),
        "video_ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
    }


def difference(cached: Any, wanted: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted field, cached value, wanted value) where two settings trees differ, or None."""
    if isinstance(cached, dict) and isinstance(wanted, dict):
        for key in sorted(set(cached) | set(wanted)):
            field = f"{prefix}{key}"
            if key not in cached or key not in wanted:
                return field, cached.get(key, "<absent>"), wanted.get(key, "<absent>")
            found = difference(cached[key], wanted[key], f"{field}.")
            if found is not None:
                return found
        return None
    return None if cached == wanted else (prefix.rstrip("."), cached, wanted)


def deterministic_transform(
    datamodule: VideoDataModule, split: str, what: str, hint: str = ""
) -> ClipTransform:
    """The split's frame transform; an error naming `what` (e.g. "latent cache") when it is random: a cache
    stores one deterministic encoding of each frame. `hint` is appended to that error."""
    transform = datamodule.clip_transform(split)
    if transform.random:
        kind = f"augment={transform.augment!r}" if transform.augment else "resize_mode='random_crop'"
        raise ValueError(
            f"{what} of {datamodule.name}/{split}: the frame transform is random ({kind}); a cache stores "
            "one deterministic encoding per frame: use resize_mode squash / center_crop and no augmentation "
            f"(dataset.transform){hint}"
        )
    return transform


# ----------------------------------------------------------------------------- manifest


def read_manifest(path: str | os.PathLike, fmt: str, what: str, writer: str) -> dict[str, Any]:
    """The manifest of a finished cache of format `fmt`: ``format``, ``settings`` and ``summary``.

    `what` names the cache kind and `writer` the function that builds it, in the errors.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            manifest = json.loads(f.attrs["manifest"])
            summary = json.loads(f.attrs["summary"]) if "summary" in f.attrs else None
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a readable videxp {what} ({type(e).__name__}: {e})") from e
    if manifest.get("format") != fmt:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {fmt!r}")
    if summary is None:
        raise ValueError(f"{path}: unfinished {what} (no summary); rebuild it with {writer}")
    return {**manifest, "summary": summary}


def matching_cache(
    path: Path, settings: dict[str, Any], fmt: str, what: str, writer: str
) -> dict[str, Any] | None:
    """The manifest of the finished cache at `path` when its settings equal `settings`; None when there is
    none; an error naming the first differing field otherwise (a cache is never silently rebuilt)."""
    if not path.exists():
        return None
    manifest = read_manifest(path, fmt, what, writer)
    found = difference(manifest["settings"], settings)
    if found is not None:
        field, cached, wanted = found
        raise ValueError(
            f"{path}: {what} made with {field}={cached!r}, this run has {field}={wanted!r}; "
            "delete the file or use another cache folder"
        )
    log.info("%s: %s complete with matching settings; nothing to do", path, what)
    return manifest


# ----------------------------------------------------------------------------- writing


def open_partial(partial: Path, settings: dict[str, Any]) -> str:
    """h5py mode for the partial cache: ``a`` to resume one written with the same settings, else ``w``."""
    if not partial.exists():
        return "w"
    try:
        with h5py.File(partial, "r") as f:
            found = difference(json.loads(f.attrs["manifest"])["settings"], settings)
    except (OSError, KeyError, ValueError) as e:
        log.warning("%s: unreadable partial cache (%s: %s); starting over", partial, type(e).__name__, e)
        return "w"
    if found is not None:
        log.warning("%s: partial cache made with another %s (%r); starting over", partial, *found[:2])
        return "w"
    return "a"


@contextmanager
def writing(path: Path, settings: dict[str, Any], fmt: str) -> Iterator[h5py.File]:
    """The open partial file of the cache `path` (``path.partial``: resumed when its settings match, else
    started over with the manifest ``{format, settings}``), atomically renamed onto `path` when the block
    ends without an error; after an error it stays, to be resumed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + PARTIAL)
    mode = open_partial(partial, settings)
    with h5py.File(partial, mode) as f:
        if mode == "w":
            f.attrs["manifest"] = json.dumps({"format": fmt, "settings": settings})
        yield f
    os.replace(partial, path)


def read_video(
    source: VideoSource, transform: ClipTransform, i: int, indices: np.ndarray | None = None
) -> np.ndarray:
    """Frames `indices` (default: all) of video `i`, transformed: uint8 [T, h, w, C]; VideoError when the
    source returns another number of frames."""
    if indices is None:
        indices = np.arange(int(source.num_frames(i)))
    frames = source.read(i, indices)  # [T, H, W, 3] uint8
    if frames.shape[0] != len(indices):
        raise VideoError(f"read {frames.shape[0]} frames, expected {len(indices)}")
    return transform(frames)  # [T, h, w, C]


def video_attrs(source: VideoSource, i: int) -> dict[str, Any]:
    """The attributes of cached video `i`: ``video_id``, ``label`` (-1 without classes), ``class_name``,
    ``path``, ``num_frames``, ``fps`` (NaN when unknown) and ``source_index``."""
    record = source.record(i)
    fps = source.fps(i)
    return {
        "video_id": record.video_id,
        "label": -1 if record.label is None else int(record.label),
        "class_name": record.class_name or "",
        "path": record.path,
        "num_frames": int(source.num_frames(i)),
        "fps": math.nan if fps is None else float(fps),
        "source_index": i,
    }


def cache_videos(
    videos: h5py.Group,
    source: VideoSource,
    read: Callable[[int], Any],
    write: Callable[[h5py.Group, str, int, Any], h5py.HLObject],
    *,
    indices: list[int] | None = None,
    where: str = "",
    desc: str | None = None,
    progress: bool = True,
) -> tuple[int, int, list[dict[str, Any]]]:
    """Cache the videos `indices` (default: all) of `source` into the group `videos`, resumably.

    Per video ``i`` (entry name ``f"{i:06d}"``): an entry already marked ``complete`` is kept; a half-written
    one is deleted and redone; ``read(i)`` gives what ``write(videos, name, i, data)`` stores, and the
    returned dataset or group gets `video_attrs` and, last, ``complete=True`` (then the file is flushed).
    A video whose `read` raises is logged and listed, not cached. Returns (written, resumed, failed), failed
    as ``{index, video_id, reason}``; an error when no video is cached at all. `where` (the cache's path)
    starts the log lines, `desc` labels the progress bar.
    """
    written = resumed = 0
    failed: list[dict[str, Any]] = []
    todo = list(range(len(source))) if indices is None else list(indices)
    for i in tqdm(todo, desc=desc or where, disable=not progress):
        name = f"{i:06d}"
        if name in videos:
            if bool(videos[name].attrs.get("complete", False)):
                resumed += 1
                continue
            del videos[name]  # interrupted mid-video
        try:
            data = read(i)
        except Exception as e:  # noqa: BLE001 - any unreadable video is reported and skipped
            video_id = source.record(i).video_id
            reason = f"{type(e).__name__}: {e}"
            log.warning("%s: cannot read video %d (%s), skipped: %s", where, i, video_id, reason)
            failed.append({"index": i, "video_id": video_id, "reason": reason})
            continue
        node = write(videos, name, i, data)
        node.attrs.update(video_attrs(source, i))
        node.attrs["complete"] = True  # last: marks the video done for a resumed run
        videos.file.flush()
        written += 1
    if not len(videos):
        raise ValueError(
            f"{where}: no video could be read ({len(failed)} failed; first: {failed[0] if failed else None})"
        )
    if failed:
        log.warning("%s: %d of %d videos could not be read, not cached", where, len(failed), len(todo))
    return written, resumed, failed


# ----------------------------------------------------------------------------- reading


class ProcessLocalFile:
    """An HDF5 file opened read-only on first use in each process: h5py handles are not fork-safe, so a
    forked DataLoader worker never uses its parent's, and a pickled copy (spawned workers) holds none."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handles: dict[int, h5py.File] = {}  # pid -> handle

    def get(self) -> h5py.File:
        """This process's handle (opened now if needed)."""
        pid = os.getpid()
        if pid not in self._handles:
            self._handles[pid] = h5py.File(self.path, "r")
        return self._handles[pid]

    def close(self) -> None:
        """Close this process's handle (reopened on the next `get`)."""
        handle = self._handles.pop(os.getpid(), None)
        if handle is not None:
            handle.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_handles": {}}


# ----------------------------------------------------------------------------- loaders


class CachedSplits(L.LightningDataModule, abc.ABC):
    """Loaders over one cache file per split of a `VideoDataModule`, ``<cache_dir>/<split>.h5``.

    Subclasses say how a split's file is built or checked (`build`, returning its summary) and opened as a
    dataset (`open`). `prepare_data` (rank 0 under Lightning) builds every split; `setup` builds the splits
    this process has not (another rank: a check once built) and opens them; `summaries` holds each split's
    summary. Batch size, workers and pinning are the wrapped module's; the training order is the pixel
    loader's (`training_order`: a resumed run on one process continues it exactly). `video_dataset` gives
    the pixel clips, which validation sampling compares against.
    """

    def __init__(self, data: VideoDataModule, cache_dir: str | os.PathLike, splits: Sequence[str]):
        super().__init__()
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise ValueError(f"unknown splits {unknown}; expected some of {SPLITS}")
        self.data = data
        self.cache_dir = Path(cache_dir)
        self.splits = tuple(splits)
        self.summaries: dict[str, dict[str, Any]] = {}
        self._datasets: dict[str, Dataset] = {}

    @abc.abstractmethod
    def build(self, split: str) -> dict[str, Any]:
        """Write (or check) the cache of one split; its summary."""

    @abc.abstractmethod
    def open(self, split: str) -> Dataset:
        """The dataset over one split's finished cache."""

    def cache_path(self, split: str) -> Path:
        """The cache file of one split."""
        return self.cache_dir / f"{split}.h5"

    def prepare_data(self) -> None:
        for split in self.splits:
            self.summaries[split] = self.build(split)

    def setup(self, stage: str | None = None) -> None:
        for split in self.splits:
            if split not in self.summaries:
                self.summaries[split] = self.build(split)
            if split not in self._datasets:
                self._datasets[split] = self.open(split)

    def dataset(self, split: str) -> Dataset:
        """The cached dataset of one split (after `setup`)."""
        if split not in self._datasets:
            raise ValueError(f"split {split!r} is not set up (splits: {self.splits}); call setup() first")
        return self._datasets[split]

    def video_dataset(self, split: str) -> Dataset:
        """The wrapped pixel dataset of a split (what validation sampling compares against)."""
        return self.data.dataset(split)

    def _loader(self, split: str, sampler: Any = None) -> DataLoader:
        workers = self.data.num_workers
        return DataLoader(
            self.dataset(split),
            batch_size=self.data.batch_size,
            shuffle=split == "train" and sampler is None,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.data.pin_memory,
            drop_last=split == "train",
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        order = training_order(self.trainer, len(self.dataset("train")), self.data.batch_size)
        return self._loader("train", sampler=order)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
