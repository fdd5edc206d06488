"""CLEVRER catalog: `root/video_{train,validation,test}/[video_{lo}-{hi}/]video_{id:05d}.mp4`, split by id."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from videxp.data.records import VideoRecord

__all__ = ["FOLDERS", "ID_RANGES", "scan", "split_of"]

log = logging.getLogger(__name__)

FOLDERS = {"train": "video_train", "val": "video_validation", "test": "video_test"}
ID_RANGES = {"train": (0, 10000), "val": (10000, 15000), "test": (15000, 20000)}  # [lo, hi) per split
_VIDEO = re.compile(r"^video_(\d{5})\.mp4$")
_BUCKET = re.compile(r"^video_(\d{5})-(\d{5})$")


def split_of(video_id: int) -> str:
    """'train' (< 10000), 'val' (< 15000) or 'test' (< 20000); ValueError outside [0, 20000)."""
    for split, (lo, hi) in ID_RANGES.items():
        if lo <= video_id < hi:
            return split
    raise ValueError(f"CLEVRER video id {video_id} is outside [0, 20000)")


def _videos_in(folder: Path) -> list[tuple[int, Path]]:
    """(id, path) of every `video_XXXXX.mp4` directly in `folder`; other files are warned about."""
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        match = _VIDEO.match(entry.name)
        if match is None:
            log.warning("CLEVRER: ignoring %s (not video_XXXXX.mp4)", entry.path)
            continue
        out.append((int(match.group(1)), Path(entry.path).absolute()))
    return out


def _check_bucket(bucket: Path, video_id: int, path: Path) -> None:
    match = _BUCKET.match(bucket.name)
    if match is None:
        raise ValueError(f"{path}: bucket folder {bucket.name!r} is not video_LLLLL-HHHHH")
    lo, hi = int(match.group(1)), int(match.group(2))
    if not lo <= video_id < hi:
        raise ValueError(f"{path}: video id {video_id} is outside its bucket {bucket.name} [{lo}, {hi})")


def _add(found: dict[int, Path], video_id: int, path: Path) -> None:
    if video_id in found:
        raise ValueError(f"{path}: video {video_id} is also at {found[video_id]}; keep one copy")
    found[video_id] = path


def scan(root: str | os.PathLike, split: str) -> list[VideoRecord]:
    """Records of CLEVRER `split` ('train' | 'val' | 'test') from its folder, sorted by video_id.

    Reads `root/video_train` for train, `root/video_validation` for val, `root/video_test` for test, with
    the official 1000-video buckets (`video_00000-01000/`) or flattened (videos directly in the folder).
    The split also follows from the id (train < 10000 <= val < 15000 <= test < 20000): a video in the wrong
    split folder, or in a bucket whose range does not contain its id, is a ValueError. No classes.
    """
    if split not in FOLDERS:
        raise ValueError(f"CLEVRER: unknown split {split!r} (known: train, val, test)")
    root = Path(root)
    folder = root / FOLDERS[split]
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: CLEVRER {split} videos not found (unzip {FOLDERS[split]}.zip from "
            f"http://data.csail.mit.edu/clevrer/videos/ into {root})"
        )
    found: dict[int, Path] = {}
    buckets = [Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]
    for bucket in sorted(buckets):
        for video_id, path in _videos_in(bucket):
            _check_bucket(bucket, video_id, path)
            _add(found, video_id, path)
    for video_id, path in _videos_in(folder):  # flattened layout
        _add(found, video_id, path)
    records = []
    for video_id, path in found.items():
        if split_of(video_id) != split:
            raise ValueError(
                f"{path}: video id {video_id} belongs to the {split_of(video_id)} split "
                f"(ids {ID_RANGES[split_of(video_id)]}), not {folder.name}"
            )
        records.append(VideoRecord(video_id=f"video_{video_id:05d}", path=str(path), split=split))
    if not records:
        raise FileNotFoundError(f"{folder}: no video_XXXXX.mp4 files (in buckets or flattened)")
    return sorted(records, key=lambda r: r.video_id)
