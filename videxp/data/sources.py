"""Clip sources: a dataset split read from its official tree (decoded on the fly) or from prepared shards."""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from videxp.data.hdf5 import HDF5Videos
from videxp.data.records import SPLITS, VideoRecord
from videxp.video import VideoError, video_info
from videxp.video.arrays import ARRAY_SUFFIXES, array_info, read_array_frames
from videxp.video.decode import decode_frames

log = logging.getLogger(__name__)

# dataset name -> catalog module (each has `scan(root, split, **options) -> list[VideoRecord]`)
CATALOGS = {
    "kth": "videxp.data.kth",
    "clevrer": "videxp.data.clevrer",
    "hmdb51": "videxp.data.hmdb51",
    "ucf101": "videxp.data.ucf101",
    "video_folder": "videxp.data.video_folder",
    "minerl": "videxp.data.fdm_layouts",
    "mazes_cwvae": "videxp.data.fdm_layouts",
    "carla_no_traffic": "videxp.data.fdm_layouts",
}
PREPARED_FORMAT = "videxp.prepared/1"
MANIFEST = "manifest.json"
FORMATS = ("auto", "raw", "prepared")
GENERIC_READERS = ("hdf5", "video_folder")  # datasets that read data prepared from any dataset


def is_prepared(root: str | os.PathLike) -> bool:
    """True when `root` holds a `videxp-prepare` manifest.json (format PREPARED_FORMAT)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == PREPARED_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class VideoSource(Protocol):
    """What a dataset split provides to `ClipDataset`: videos by index, read frame by frame."""

    def __len__(self) -> int: ...

    def record(self, i: int) -> VideoRecord: ...

    def num_frames(self, i: int) -> int: ...

    def fps(self, i: int) -> float | None: ...

    def read(self, i: int, indices: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def _contiguous(read_range, indices: np.ndarray) -> np.ndarray:
    """Frames at `indices` via one contiguous read `read_range(lo, hi)` of [lo, hi) (never seek per frame)."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0 or indices.min() < 0:
        raise ValueError(f"frame indices must be a non-empty 1-D array of non-negative ints, got {indices}")
    lo, hi = int(indices.min()), int(indices.max()) + 1
    return read_range(lo, hi)[indices - lo]  # [T, H, W, 3]


def _is_array(path: str) -> bool:
    """Whether a record's file is an array video (.npy / .pt), read by index rather than decoded."""
    return Path(path).suffix.lower() in ARRAY_SUFFIXES


def scan_records(dataset: str, root: str | os.PathLike, split: str, **options: Any) -> list[VideoRecord]:
    """The catalog of `dataset` for one split of the extracted official tree under `root`."""
    if dataset not in CATALOGS:
        raise ValueError(f"no catalog for dataset {dataset!r}; known: {sorted(CATALOGS)}")
    module = importlib.import_module(CATALOGS[dataset])
    return module.scan(root, split, **options)


class RawSource:
    """Videos of a catalog, decoded with PyAV on access (frame counts from the container header).

    Each read decodes the contiguous range that covers the requested frames from the start of the file;
    prepared shards (`videxp-prepare`) are the fast path for training.
    """

    def __init__(self, records: list[VideoRecord], *, name: str, root: str | os.PathLike | None = None):
        if not records:
            raise ValueError(f"{name}: the catalog under {root} has no videos for this split")
        self.records = list(records)
        self.name = name
        self.root = None if root is None else str(root)
        self._info: dict[int, tuple[int, float | None]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int) -> VideoRecord:
        return self.records[i]

    def _meta(self, i: int) -> tuple[int, float | None]:
        if i not in self._info:
            rec = self.records[i]
            info = array_info(rec.path) if _is_array(rec.path) else video_info(rec.path)
            n = info["num_frames"] if rec.frame_range is None else rec.frame_range[1] - rec.frame_range[0]
            self._info[i] = (int(n), info.get("fps"))
        return self._info[i]

    def num_frames(self, i: int) -> int:
        return self._meta(i)[0]

    def fps(self, i: int) -> float | None:
        return self._meta(i)[1]

    def read(self, i: int, indices: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3] frames at `indices` (0-based within the record's frame range)."""
        rec = self.records[i]
        offset = 0 if rec.frame_range is None else rec.frame_range[0]
        read = read_array_frames if _is_array(rec.path) else decode_frames
        return _contiguous(lambda lo, hi: read(rec.path, offset + lo, offset + hi), indices)

    def describe(self) -> dict[str, Any]:
        return {"kind": "raw", "dataset": self.name, "root": self.root, "num_videos": len(self)}


class VideoFiles:
    """The per-video files of a split prepared with `format=npz` or `format=mp4` (one file per record)."""

    def __init__(self, folder: Path, records: list[VideoRecord], size: tuple[int, int]):
        self.path = folder
        self.size = size  # stored [height, width]; mp4 frames of odd size were edge-padded by one pixel
        self.files, self.counts = [], []
        for r in records:
            if "file" not in r.meta or "stored_frames" not in r.meta:
                raise VideoError(
                    f"{folder}: record {r.video_id!r} names no stored file and frame count; "
                    "re-run videxp-prepare"
                )
            self.files.append(folder / r.meta["file"])
            self.counts.append(int(r.meta["stored_frames"]))

    def __len__(self) -> int:
        return len(self.files)

    def num_frames(self, i: int) -> int:
        return self.counts[i]

    def read(self, i: int, start: int, stop: int) -> np.ndarray:
        """uint8 [stop - start, H, W, 3] frames of video `i`."""
        path = self.files[i]
        if not path.is_file():
            raise VideoError(f"{path}: prepared video file is missing")
        if path.suffix == ".npz":
            try:
                with np.load(path) as npz:
                    frames = npz["frames"]  # [T, H, W, 3]
            except (OSError, ValueError, KeyError) as e:
                raise VideoError(f"{path}: cannot read the 'frames' array ({e})") from e
            if frames.shape[0] < stop:
                raise VideoError(f"{path}: holds {frames.shape[0]} frames, [{start}, {stop}) requested")
            return frames[start:stop]
        h, w = self.size
        return decode_frames(path, start, stop)[:, :h, :w]  # [T, H, W, 3] without the odd-size padding


class PreparedSource:
    """Videos of one prepared split, with their records: RIVER-layout HDF5 shards
    (`<root>/<split>/shard_*.hdf5`) or `videxp-prepare`'s per-video npz / mp4 files.

    With a `videxp-prepare` manifest (`<root>/manifest.json`) the records (ids, labels, source files and
    frame ranges) come from it; plain RIVER-layout shards get numbered ids and no labels.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        name: str,
        split_dirs: dict[str, str] | None = None,
        fps: float | None = None,
        verify_checksums: bool = True,
    ):
        self.root = Path(root)
        self.name = name
        folder = (split_dirs or {}).get(split, split)
        manifest_path = self.root / MANIFEST
        self.manifest: dict[str, Any] | None = None
        if manifest_path.is_file():
            self.manifest = json.loads(manifest_path.read_text())
            if self.manifest.get("format") != PREPARED_FORMAT:
                raise VideoError(f"{manifest_path}: not a videxp prepared-data manifest ({PREPARED_FORMAT})")
            made_from = self.manifest.get("dataset")
            if name not in (*GENERIC_READERS, made_from):
                raise VideoError(
                    f"{manifest_path}: prepared from dataset {made_from!r}, but dataset={name!r} was selected"
                )
            entries = self.manifest["splits"].get(split)
            if entries is None:
                raise VideoError(
                    f"{manifest_path}: no {split!r} split (has {sorted(self.manifest['splits'])})"
                )
            self.records = [VideoRecord.from_dict(r) for r in entries["records"]]
            self._fps = [r.meta.get("fps") for r in self.records]
            settings = self.manifest.get("settings", {})
            if settings.get("format", "hdf5") == "hdf5":
                self.store = HDF5Videos(self.root / folder, verify_checksums=verify_checksums)
            else:
                size = tuple(settings["size"])
                self.store = VideoFiles(self.root / folder, self.records, size)
        else:
            self.store = HDF5Videos(self.root / folder, verify_checksums=verify_checksums)
            self.records = [
                VideoRecord(video_id=f"{folder}/{i:06d}", path=str(self.store.locate(i)[0]), split=split)
                for i in range(len(self.store))
            ]
            self._fps = [fps] * len(self.records)
        if len(self.records) != len(self.store):
            raise VideoError(
                f"{self.store.path}: holds {len(self.store)} videos, the manifest lists {len(self.records)}; "
                "re-run videxp-prepare"
            )

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int) -> VideoRecord:
        return self.records[i]

    def num_frames(self, i: int) -> int:
        return self.store.num_frames(i)

    def fps(self, i: int) -> float | None:
        return self._fps[i]

    def read(self, i: int, indices: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3] frames at `indices` of stored video `i`; errors name its video_id."""
        try:
            return _contiguous(lambda lo, hi: self.store.read(i, lo, hi), indices)
        except VideoError as e:
            raise type(e)(f"{e} [video_id {self.records[i].video_id!r}]") from e

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "prepared", "root": str(self.root), "num_videos": len(self)}
        if self.manifest is not None:
            out["prepared_with"] = self.manifest.get("settings")
        return out


def build_source(
    *,
    split: str,
    name: str,
    root: str | os.PathLike | None,
    format: str = "auto",
    options: dict[str, Any] | None = None,
    split_dirs: dict[str, str] | None = None,
    fps: float | None = None,
    verify_checksums: bool = True,
) -> RawSource | PreparedSource:
    """The source of one split: `root` is an extracted official tree (`raw`) or prepared shards (`prepared`).

    `format="auto"` picks `prepared` when `<root>/manifest.json` is a `videxp-prepare` manifest or the
    dataset is `hdf5`; `raw` on such a root is an error naming the fix. `options` go to the catalog's
    `scan` (fold, protocol, split lists, ...). `verify_checksums` checks each frame read from HDF5 shards
    against its stored sha256.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if root is None:
        raise ValueError(
            f"dataset {name!r} needs dataset.source.root: the extracted official tree or prepared shards"
        )
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset {name!r}: root {root} does not exist")
    prepared = is_prepared(root)
    if format == "auto":
        format = "prepared" if prepared or name == "hdf5" else "raw"
    elif format == "raw" and prepared:
        raise ValueError(
            f"dataset {name!r}: {root} holds videxp-prepare output ({root / MANIFEST}), but "
            "dataset.source.format=raw reads it as a tree of source videos; set dataset.source.format=auto "
            "(or prepared) to read the prepared data"
        )
    if format == "prepared":
        return PreparedSource(
            root, split, name=name, split_dirs=split_dirs, fps=fps, verify_checksums=verify_checksums
        )
    options = dict(options or {})
    if CATALOGS.get(name) == "videxp.data.fdm_layouts":
        options.setdefault("layout", name)  # the one catalog reads FDM's three layouts
    return RawSource(scan_records(name, root, split, **options), name=name, root=root)
