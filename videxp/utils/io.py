"""Atomic file writes (a temporary name beside the target, then rename), their leftovers, writable folders."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from videxp.errors import RunFolderError
from videxp.utils.locks import lock_is_stale

TEMP_STALE_S = 24 * 3600.0  # a temp file of another machine older than this is a crashed writer's leftover
# `.<stem>.tmp-<pid>-<host>~<random><suffix>`: who is writing it, so a rerun knows a dead writer's leftovers
_TEMP = re.compile(r"^\..*\.tmp-(?P<pid>\d+)-(?P<host>[^~/]+)~[^~/]*$")


def current_umask() -> int:
    """The process umask now (Linux: read from /proc, no race; elsewhere set and put back)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # reading it means setting it: put it back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` if the block succeeds.

    The temporary name keeps the target's suffix (or `suffix`) so writers that pick a format
    from the extension (PyAV, PIL) still work. On error the temporary file is removed and any
    existing file at `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.stem}.tmp-{os.getpid()}-{socket.gethostname()}~"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix or path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 files; give what open() would
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temps(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temp files `atomic_path` left in `folders` (not recursive) when their writer is gone: a
    process of this host that no longer runs (killed mid-write), or a file of another host older than
    TEMP_STALE_S. A live writer's temp file is kept. Returns the files removed."""
    removed = []
    for folder in folders:
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            match = _TEMP.match(name)
            path = Path(folder) / name
            try:
                if match is None or not path.is_file():
                    continue
                info = {"pid": int(match["pid"]), "host": match["host"], "time": path.stat().st_mtime}
                if lock_is_stale(info, TEMP_STALE_S):
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue  # renamed into place or removed meanwhile
    return removed


def ensure_writable(folder: str | os.PathLike | None, key: str) -> Path | None:
    """Create `folder` if needed and prove a file can be written there (before any work starts); None: no-op.

    RunFolderError names the folder, the config `key` that chose it and why (read-only, a file in the way).
    """
    if folder is None:
        return None
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".videxp-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunFolderError(
            f"{folder}: cannot write there ({e.strerror or e}); make it writable or choose another {key}=..."
        ) from e
    return folder


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as .npy, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
