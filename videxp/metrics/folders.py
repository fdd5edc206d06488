"""Video folders for evaluation: list videos by relative stem, pair two folders, read with checks."""

from __future__ import annotations

import os
from pathlib import Path

from videxp.video import CONTAINER_SUFFIXES, FRAME_SUFFIXES, VideoError

VIDEO_SUFFIXES = (*CONTAINER_SUFFIXES, ".gif", ".npy")
MAX_LISTED = 5  # ids named per side in a mismatch error


def _is_frame_folder(path: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir())


def list_videos(folder: str | os.PathLike) -> dict[str, Path]:
    """{id: path} of every video under `folder`, sorted by id.

    Videos are files ending in .mp4/.avi/.mkv/.webm/.mov/.gif/.npy and folders that directly hold
    .png/.jpg frames (not searched further). The search is recursive; hidden entries are skipped. The id
    is the path relative to `folder` without its suffix, with `/` separators (`cat/clip_001`).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such video folder")
    found: dict[str, Path] = {}

    def visit(d: Path) -> None:
        for p in sorted(d.iterdir()):
            if p.name.startswith("."):
                continue
            if p.is_dir():
                if _is_frame_folder(p):
                    add(p, p.relative_to(root).as_posix())
                else:
                    visit(p)
            elif p.suffix.lower() in VIDEO_SUFFIXES:
                add(p, p.relative_to(root).with_suffix("").as_posix())

    def add(p: Path, vid: str) -> None:
        if vid in found:
            raise VideoError(f"{root}: two videos share the id {vid!r}: {found[vid].name} and {p.name}")
        found[vid] = p

    visit(root)
    if not found:
        raise VideoError(
            f"{root}: no videos found (looked for {', '.join(VIDEO_SUFFIXES)} files and frame folders)"
        )
    return dict(sorted(found.items()))


def pair_folders(real_dir: str | os.PathLike, fake_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """[(id, real path, fake path)] for two folders holding the same ids; ValueError naming the mismatch."""
    real, fake = list_videos(real_dir), list_videos(fake_dir)
    only_real = sorted(set(real) - set(fake))
    only_fake = sorted(set(fake) - set(real))
    if only_real or only_fake:

        def few(ids: list[str]) -> str:
            more = f" (+{len(ids) - MAX_LISTED} more)" if len(ids) > MAX_LISTED else ""
            return (", ".join(ids[:MAX_LISTED]) or "-") + more

        raise ValueError(
            f"frame metrics pair videos by id, but the folders differ: {len(only_real)} only in "
            f"{real_dir}: {few(only_real)}; {len(only_fake)} only in {fake_dir}: {few(only_fake)}"
        )
    return [(vid, real[vid], fake[vid]) for vid in real]


def folder_identity(folder: str | os.PathLike, videos: dict[str, Path]) -> dict:
    """A reference-set identity for caching: resolved folder, ids, and each file's size and mtime."""

    def stamp(p: Path) -> list[int]:
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        st = [f.stat() for f in files]
        return [sum(s.st_size for s in st), max(s.st_mtime_ns for s in st)]

    return {
        "folder": str(Path(folder).resolve()),
        "videos": {vid: stamp(p) for vid, p in videos.items()},
    }
