"""File locks for run folders shared by several processes or machines: O_EXCL claims with a staleness rule."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_is_stale(info: dict, stale_after: float, now: float | None = None) -> bool:
    """The staleness rule: the holder ran on this host and its pid is gone, or the lock is older than
    `stale_after` seconds (a holder on another machine that crashed)."""
    now = time.time() if now is None else now
    if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1))):
        return True
    return now - float(info.get("time", 0)) > stale_after


def try_lock(path: str | os.PathLike, stale_after: float) -> bool:
    """Claim `path` with O_CREAT|O_EXCL (atomic on local and NFSv3+ filesystems); break a stale one once.

    A stale lock is renamed away to a unique name (only one breaker's rename succeeds); if what was
    renamed turns out not to be the stale lock read before (someone re-took it meanwhile), it is put back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                seen = path.read_text()
                if not seen.strip():
                    raise ValueError("empty")  # created, body not written yet
                info = json.loads(seen)
            except FileNotFoundError:
                continue  # released meanwhile: try again
            except ValueError:
                try:
                    info, seen = {"time": path.stat().st_mtime}, None  # half-written: judge by age
                except FileNotFoundError:
                    continue
            if not lock_is_stale(info, stale_after):
                return False
            aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            if seen is not None and aside.read_text() != seen:  # took a fresh lock: restore it
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
                aside.unlink(missing_ok=True)
                return False
            aside.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(body)
        return True
    return False


def wait_lock(path: str | os.PathLike, stale_after: float, timeout: float = 600.0) -> None:
    """Block until `path` is claimed (short critical sections: manifest merge, CSV append)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not try_lock(path, stale_after):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: lock held for over {timeout:.0f} s; delete it if its holder is gone")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def unlock(path: str | os.PathLike) -> None:
    Path(path).unlink(missing_ok=True)
