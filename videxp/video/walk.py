"""Folder walks that follow symlinks, visit each real folder once and name symlink loops."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from videxp.errors import SymlinkLoopError

__all__ = ["entries", "walk"]

log = logging.getLogger(__name__)


def _stat(path: Path) -> os.stat_result | None:
    """stat() following symlinks; None for a dangling link; SymlinkLoopError for a loop."""
    try:
        return path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SymlinkLoopError(
                errno.ELOOP, f"{path}: symlink loop (the link resolves back onto itself); remove or fix it"
            ) from e
        if e.errno == errno.ENOENT and path.is_symlink():
            return None
        raise


def _listing(folder: Path, hidden: bool) -> list[tuple[Path, os.stat_result | None]]:
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if hidden or not e.name.startswith("."))
    return [(folder / name, _stat(folder / name)) for name in names]


def entries(folder: str | os.PathLike, *, hidden: bool = False) -> tuple[list[Path], list[Path]]:
    """(sub-folders, files) directly in `folder`, each sorted by name; symlinks are followed.

    Hidden names (a leading '.') are skipped unless `hidden`. A dangling symlink is listed as a file
    (reading it then fails naming it); a symlink loop (a -> b -> a) raises SymlinkLoopError naming it.
    """
    dirs, files = [], []
    for path, st in _listing(Path(folder), hidden):
        (dirs if st is not None and stat.S_ISDIR(st.st_mode) else files).append(path)
    return dirs, files


def walk(root: str | os.PathLike, *, hidden: bool = False) -> Iterator[tuple[Path, list[Path], list[Path]]]:
    """Top-down (folder, sub-folders, files) like os.walk, following symlinks, each real folder once.

    Paths stay under `root` as spelled (a linked folder's files keep the link's path). A folder already
    reached by another path (`ln -s . cyc`, two links to one folder) is skipped with a warning, so a
    symlink cycle cannot multiply files. Remove entries from the yielded sub-folder list to prune.
    """
    root = Path(root)
    seen = {_key(root.stat())}
    pending = [root]
    while pending:
        folder = pending.pop()
        dirs, files = [], []
        for path, st in _listing(folder, hidden):
            if st is None or not stat.S_ISDIR(st.st_mode):
                files.append(path)
            elif _key(st) in seen:
                log.warning("%s: skipped, a link to a folder this walk already visits", path)
            else:
                seen.add(_key(st))
                dirs.append(path)
        yield folder, dirs, files
        pending.extend(reversed(dirs))


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
