"""Generic video-folder catalog: any tree of videos, label = first-level subfolder, optional split lists."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from videxp.data.records import VideoRecord
from videxp.video.walk import walk

__all__ = ["EXTENSIONS", "list_videos", "scan"]

log = logging.getLogger(__name__)

EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif", ".npy")


def list_videos(root: str | os.PathLike, extensions: Sequence[str] = EXTENSIONS) -> dict[str, Path]:
    """{relative posix path: absolute path} of every video file under `root` (hidden entries skipped).

    Symlinks are followed, each real folder once (a symlink cycle cannot multiply videos).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: video folder not found")
    suffixes = tuple(e.lower() for e in extensions)
    found = {}
    for _, _, files in walk(root):
        for file in files:
            if file.name.lower().endswith(suffixes):
                path = file.absolute()
                found[path.relative_to(root.absolute()).as_posix()] = path
    if not found:
        raise FileNotFoundError(f"{root}: no video files with suffixes {', '.join(suffixes)}")
    return found


def _read_list(path: Path, videos: Mapping[str, Path]) -> list[str]:
    """Relative paths listed in `path` (blank and `#` lines skipped); each must be a scanned video."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list not found")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        rel = line.strip().replace("\\", "/")
        if not rel or rel.startswith("#"):
            continue
        if rel not in videos:
            raise FileNotFoundError(f"{path}:{n} lists {rel!r}, which is not a video under the root")
        out.append(rel)
    return out


def _select(
    videos: Mapping[str, Path],
    split: str,
    split_lists: Mapping[str, str | os.PathLike] | None,
    val_fraction: float,
    seed: int,
) -> list[str]:
    if split_lists is not None:
        key = split if split in split_lists else "test" if split == "val" and "test" in split_lists else None
        if key is None:
            raise ValueError(f"no split list for {split!r} (given: {', '.join(split_lists)})")
        return _read_list(Path(split_lists[key]), videos)
    names = sorted(videos)
    if val_fraction == 0:
        return names
    order = np.random.default_rng(seed).permutation(len(names))
    n_held = max(1, round(val_fraction * len(names)))
    held = {names[i] for i in order[:n_held]}
    return [n for n in names if (n in held) == (split != "train")]


def scan(
    root: str | os.PathLike,
    split: str,
    split_lists: Mapping[str, str | os.PathLike] | None = None,
    extensions: Sequence[str] = EXTENSIONS,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> list[VideoRecord]:
    """Records of `split` ('train' | 'val' | 'test') from any folder tree of videos, sorted by video_id.

    Label = index of the first-level subfolder among the sorted subfolders holding videos; videos directly
    in `root` get label None. video_id = relative path without suffix. `split_lists` maps a split to a text
    file of relative paths (a missing 'val' list falls back to 'test'). Without lists and with
    `val_fraction=0` every split returns ALL videos (no held-out data: fine for generation, not for
    evaluation); with `val_fraction > 0` a seeded fraction is held out and returned for both 'val' and
    'test', the rest for 'train'.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r} (known: train, val, test)")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    videos = list_videos(root, extensions)
    stems: dict[str, str] = {}
    for rel in videos:
        stem = rel[: -len(Path(rel).suffix)]
        if stem in stems:
            raise ValueError(f"{root}: {stems[stem]} and {rel} share the video_id {stem!r}; rename one")
        stems[stem] = rel
    classes = sorted({rel.split("/")[0] for rel in videos if "/" in rel})
    records = []
    for rel in _select(videos, split, split_lists, val_fraction, seed):
        cls = rel.split("/")[0] if "/" in rel else None
        records.append(
            VideoRecord(
                video_id=rel[: -len(Path(rel).suffix)],
                path=str(videos[rel]),
                split=split,
                label=None if cls is None else classes.index(cls),
                class_name=cls,
            )
        )
    if not records:
        raise ValueError(f"{root}: split {split!r} is empty")
    return sorted(records, key=lambda r: r.video_id)
