"""Fetch, verify and unpack the official KTH, CLEVRER, HMDB51 and UCF101 archives into the raw layout."""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import logging
import os
import shlex
import shutil
import tempfile
import time
import urllib.error
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from videxp.data.archives import ARCHIVES, Archive, unsafe_name
from videxp.errors import VidexpError
from videxp.utils.io import atomic_path
from videxp.weights.registry import ChecksumError, digest_mismatches, download_file, file_digests, is_offline

try:
    import fcntl  # advisory file locks (POSIX)
except ImportError:  # pragma: no cover - non-POSIX: downloads run without the lock
    fcntl = None

log = logging.getLogger(__name__)

MIRROR_ENV = "VIDEXP_DATA_MIRROR"  # `<mirror>/<filename>` replaces each archive's URL
ARCHIVE_SUBDIR = "archives"  # downloads go to `<raw_dir>/archives/`
LEDGER_NAME = "checksums.json"  # `<raw_dir>/archives/checksums.json`: digests recorded on first use
MARKER_SUFFIX = ".extracted"  # `<raw_dir>/archives/<file>.extracted`: written once an extraction completes
EXTRACT_PREFIX = ".videxp-extract-"  # temporary extraction folders inside raw_dir
STALE_PART_S = 3600.0  # a `.part` file untouched this long is a leftover of a killed download
_RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")  # RAR 4 and RAR 5 signatures


class ManualStepsRequired(VidexpError, RuntimeError):
    """Something could not be done automatically; `steps` says exactly what to do by hand.

    Raised by `download_dataset` after everything else was done (other archives downloaded, verified
    and extracted). Calling `download_dataset` again after the steps checks the result.
    """

    def __init__(self, message: str, steps: str = "") -> None:
        super().__init__(message)
        self.steps = steps


class DatasetDownloadError(ManualStepsRequired):
    """Some archives could not be fetched (network / HTTP errors); `steps` says how to fetch them by hand."""


class DatasetChecksumError(ChecksumError):
    """An archive is truncated or does not match its expected digest (the bad file is set aside)."""


class DatasetArchiveError(VidexpError, RuntimeError):
    """An archive is not what it claims to be (not a zip / rar) or holds unsafe member names."""


# --------------------------------------------------------------------------- public entry point


def download_dataset(
    name: str,
    raw_dir: str | os.PathLike,
    *,
    extract: bool = True,
    archives: Sequence[Archive] | None = None,
    mirror: str | None = None,
) -> Path:
    """Download, verify and unpack dataset `name` into `raw_dir` (the layout the videxp catalogs read).

    Archives go to ``<raw_dir>/archives/``. A present archive that matches its checksum (published, or
    the sha256 recorded in ``archives/checksums.json`` on first use) is not fetched again; an archive
    already unpacked (completion marker ``archives/<file>.extracted`` for zips, the `done` paths for
    RARs) is skipped entirely. A mismatch raises `DatasetChecksumError` naming URL, file, expected and
    actual digests; the bad file is renamed ``<file>.corrupt``. Zips are unpacked into a temporary
    folder inside raw_dir (member names with ``..`` or absolute paths are rejected) and then moved into
    place; the marker is written last, so an interrupted extraction is redone. `archives` replaces the
    registry entry (`ARCHIVES[name]`); `mirror` (default ``$VIDEXP_DATA_MIRROR``) replaces every URL by
    ``<mirror>/<filename>``. Offline (`VIDEXP_OFFLINE=1`) nothing is downloaded, and archives placed by
    hand are verified and used. With ``extract=False`` archives are only downloaded and verified.

    Everything possible is done first; then `ManualStepsRequired` is raised if RARs need unpacking by
    hand or archives are missing offline (its `steps` holds the exact commands), or its subclass
    `DatasetDownloadError` if downloads failed. Concurrent calls on one raw_dir wait for each other.
    """
    if archives is None:
        key = name.lower()
        if key not in ARCHIVES:
            raise KeyError(f"unknown dataset {name!r}; known: {sorted(ARCHIVES)} (or pass archives=[...])")
        archives = ARCHIVES[key]
    archives = list(archives)
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV, "").strip() or None
    raw_dir = Path(raw_dir).expanduser().resolve()
    archive_dir = raw_dir / ARCHIVE_SUBDIR
    archive_dir.mkdir(parents=True, exist_ok=True)

    steps: list[str] = []
    failed: list[str] = []
    with _lock(archive_dir):
        for archive in archives:
            urls = _urls(archive, mirror)
            path = archive_dir / archive.filename
            if extract and _already_unpacked(archive, raw_dir, archive_dir):
                log.info("%s: %s is already unpacked in %s", name, archive.filename, raw_dir)
                continue
            _remove_stale_parts(path)
            try:
                available = _ensure_archive(name, archive, urls, path)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                failed.append(f"{archive.filename}: {type(err).__name__}: {err}")
                steps.append(_fetch_by_hand(archive, urls, path, f"the download failed ({err})"))
                if extract and archive.extract == "rar":
                    steps.append(_rar_steps(archive, path, raw_dir))
                continue
            if not available:
                steps.append(
                    _fetch_by_hand(archive, urls, path, "offline mode is on (VIDEXP_OFFLINE/HF_HUB_OFFLINE)")
                )
                if extract and archive.extract == "rar":
                    steps.append(_rar_steps(archive, path, raw_dir))
                continue
            if not extract or archive.extract is None:
                continue
            if archive.extract == "zip":
                _unpack_zip(name, archive, path, raw_dir, urls[0])
            else:
                steps.append(_rar_steps(archive, path, raw_dir))

    if steps:
        numbered = "\n\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        head = (
            f"dataset {name!r} in {raw_dir}: {len(steps)} step(s) could not be done automatically "
            "(everything else is done)"
        )
        if failed:
            head += ";\ndownloads failed:\n" + "\n".join(f"  - {f}" for f in failed)
        message = (
            f"{head}\n\n{numbered}\n\nThen call download_dataset({name!r}, {str(raw_dir)!r}) again to check."
        )
        log.warning("%s", message)
        raise (DatasetDownloadError if failed else ManualStepsRequired)(message, steps=numbered)
    log.info("%s: all archives in place under %s", name, raw_dir)
    return raw_dir


# --------------------------------------------------------------------------- fetching and verifying


def _urls(archive: Archive, mirror: str | None) -> list[str]:
    if mirror:
        return [f"{mirror.rstrip('/')}/{archive.filename}"]
    return [archive.url, *archive.alt_urls]


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An advisory lock on `<folder>/.lock` (POSIX only; elsewhere no lock)."""
    if fcntl is None:  # pragma: no cover - non-POSIX
        yield
        return
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another download_dataset working in %s", folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_parts(path: Path) -> None:
    """Delete `.part` leftovers of killed downloads of `path` (untouched for `STALE_PART_S`)."""
    prefix = f".{path.stem}."
    now = time.time()
    for part in path.parent.iterdir():
        if part.name.startswith(prefix) and part.name.endswith(".part") and part.is_file():
            with contextlib.suppress(OSError):
                if now - part.stat().st_mtime > STALE_PART_S:
                    log.info("removing the leftover partial download %s", part)
                    part.unlink()


def _load_ledger(archive_dir: Path) -> dict[str, dict]:
    try:
        data = json.loads((archive_dir / LEDGER_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_ledger(archive_dir: Path, ledger: dict[str, dict]) -> None:
    with atomic_path(archive_dir / LEDGER_NAME) as tmp:
        tmp.write_text(json.dumps(ledger, indent=2, sort_keys=True) + "\n")


def _expected(archive: Archive, archive_dir: Path) -> tuple[str | None, str | None, bool]:
    """(md5, sha256, from_ledger): the published digests, else the sha256 recorded on first use."""
    if archive.published:
        return archive.md5, archive.sha256, False
    entry = _load_ledger(archive_dir).get(archive.filename)
    sha = entry.get("sha256") if isinstance(entry, dict) else None
    return None, (sha if isinstance(sha, str) else None), sha is not None


def _record(archive: Archive, path: Path, url: str, digests: dict[str, str | int]) -> None:
    ledger = _load_ledger(path.parent)
    if archive.filename in ledger and ledger[archive.filename].get("sha256") == digests["sha256"]:
        return
    ledger[archive.filename] = {
        "sha256": digests["sha256"],
        "md5": digests["md5"],
        "size": digests["size"],
        "url": url,
        "published": archive.published,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _save_ledger(path.parent, ledger)


def _forget(archive: Archive, archive_dir: Path) -> None:
    ledger = _load_ledger(archive_dir)
    if ledger.pop(archive.filename, None) is not None:
        _save_ledger(archive_dir, ledger)


def _set_aside(path: Path) -> Path:
    """Rename a bad archive to `<file>.corrupt` (and drop its digest sidecar) so it no longer looks valid."""
    bad = path.with_name(path.name + ".corrupt")
    os.replace(path, bad)
    path.with_name(path.name + ".verified").unlink(missing_ok=True)
    return bad


def _ensure_archive(name: str, archive: Archive, urls: list[str], path: Path) -> bool:
    """Make sure a verified copy of `archive` is at `path`; False when it is missing and offline.

    Network errors of the last URL propagate; checksum and format problems raise at once.
    """
    md5, sha256, from_ledger = _expected(archive, path.parent)
    origin = (
        "recorded in archives/checksums.json on first use (no checksum is published)"
        if from_ledger
        else "published"
    )
    if path.is_file():
        digests = file_digests(path)
        bad = digest_mismatches(digests, md5=md5, sha256=sha256)
        if bad:
            moved = _set_aside(path)
            raise DatasetChecksumError(
                f"dataset {name!r}: the archive {path} (from {urls[0]}) does not match its {origin} checksum "
                f"({'; '.join(bad)}); it was renamed to {moved.name}. Call download_dataset again to fetch "
                "it afresh, or replace it by a good copy."
            )
        _check_format(name, archive, path, urls[0])
        _record(archive, path, urls[0], digests)
        log.info("%s: %s is present and verified", name, archive.filename)
        return True
    if is_offline():
        return False
    for i, url in enumerate(urls):
        log.info("%s: downloading %s from %s", name, archive.filename, url)
        try:
            digests = download_file(url, path, md5=md5, sha256=sha256, user_agent="videxp-data")
        except ChecksumError as err:
            raise DatasetChecksumError(
                f"dataset {name!r}: {err} (expected digest: {origin}; file {path})"
            ) from err
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            if i == len(urls) - 1:
                raise
            log.warning("%s: %s failed (%s); trying %s", name, url, err, urls[i + 1])
            continue
        _check_format(name, archive, path, url)
        _record(archive, path, url, digests)
        return True
    raise AssertionError("unreachable")  # pragma: no cover


def _check_format(name: str, archive: Archive, path: Path, url: str) -> None:
    """Reject a file that is not the zip / rar it should be (e.g. an HTML error page served as 200)."""
    if archive.extract == "zip":
        ok = zipfile.is_zipfile(path)
    elif archive.extract == "rar":
        with open(path, "rb") as f:
            head = f.read(8)
        ok = any(head.startswith(magic) for magic in _RAR_MAGIC)
    else:
        return
    if not ok:
        moved = _set_aside(path)
        _forget(archive, path.parent)
        raise DatasetArchiveError(
            f"dataset {name!r}: {archive.filename} from {url} is not a {archive.extract} archive "
            f"(an error page or a broken copy?); it was renamed to {moved}"
        )


def _fetch_by_hand(archive: Archive, urls: list[str], path: Path, reason: str) -> str:
    if archive.md5:
        identity = f"expected md5 {archive.md5}"
    elif archive.sha256:
        identity = f"expected sha256 {archive.sha256}"
    else:
        identity = "no checksum is published; its sha256 is recorded on first use"
    lines = [
        f"{archive.filename}: {reason}. Download it from",
        *(f"     {u}" for u in urls),
        "   and put it at exactly",
        f"     {path}",
        f"   ({identity}).",
    ]
    if archive.note:
        lines.append(f"   {archive.note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- unpacking


def _marker(archive_dir: Path, archive: Archive) -> Path:
    return archive_dir / (archive.filename + MARKER_SUFFIX)


def _already_unpacked(archive: Archive, raw_dir: Path, archive_dir: Path) -> bool:
    if archive.extract == "rar":
        return bool(archive.done) and all((raw_dir / rel).exists() for rel in archive.done)
    if archive.extract != "zip":
        return False
    try:
        info = json.loads(_marker(archive_dir, archive).read_text())
        placed = info["placed"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(placed, list) and all((raw_dir / rel).exists() for rel in placed)


def _unpack_zip(name: str, archive: Archive, path: Path, raw_dir: Path, url: str) -> None:
    """Unpack a verified zip into `raw_dir / archive.into` via a temporary folder; write the marker last."""
    dest = raw_dir / archive.into if archive.into != "." else raw_dir
    for stale in raw_dir.glob(f"{EXTRACT_PREFIX}{glob.escape(archive.filename)}-*"):
        log.info("removing the leftover extraction folder %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:  # pragma: no cover - `_check_format` catches most
        raise DatasetArchiveError(f"dataset {name!r}: {path} (from {url}) is not a valid zip: {err}") from err
    with zf:
        members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
        unsafe = [m.filename for m in members if unsafe_name(m.filename)]
        if unsafe:
            raise DatasetArchiveError(
                f"dataset {name!r}: {path} (from {url}) has member names outside the target folder "
                f"(absolute or with '..'): {unsafe[:5]}; refusing to unpack it"
            )
        log.info("%s: unpacking %s (%d members) into %s", name, archive.filename, len(members), dest)
        tmp = Path(tempfile.mkdtemp(prefix=f"{EXTRACT_PREFIX}{archive.filename}-", dir=raw_dir))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; it may be renamed into place
        try:
            for member in members:
                target = (tmp / member.filename).resolve()
                if not target.is_relative_to(tmp.resolve()):  # belt and braces after `_unsafe_name`
                    raise DatasetArchiveError(f"dataset {name!r}: {path}: unsafe member {member.filename!r}")
                try:
                    zf.extract(member, tmp)
                except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
                    raise DatasetArchiveError(
                        f"dataset {name!r}: {path} (from {url}) is damaged at {member.filename!r}: {err}"
                    ) from err
            root = tmp
            entries = list(tmp.iterdir())
            only = entries[0] if len(entries) == 1 else None
            if archive.into != "." and only is not None and only.is_dir() and only.name == dest.name:
                root = only  # the zip already holds `<into>/...`: do not nest it twice
            placed = [archive.into] if archive.into != "." else sorted(e.name for e in root.iterdir())
            _move_into(root, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    digests = file_digests(path)
    with atomic_path(_marker(path.parent, archive)) as tmp_marker:
        tmp_marker.write_text(
            json.dumps(
                {
                    "archive": archive.filename,
                    "sha256": digests["sha256"],
                    "into": archive.into,
                    "placed": placed,
                    "members": len(members),
                },
                indent=2,
            )
            + "\n"
        )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _move_into(src: Path, dest: Path) -> None:
    """Move the contents of `src` into `dest` (renames; an existing file of the same name is replaced)."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return
    if not dest.is_dir():
        raise DatasetArchiveError(f"cannot unpack into {dest}: it exists and is not a folder")
    for entry in list(src.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if target.exists() and not target.is_dir():
                raise DatasetArchiveError(f"cannot unpack folder {entry.name} over the file {target}")
            _move_into(entry, target)
        else:
            if target.is_dir():
                raise DatasetArchiveError(f"cannot unpack file {entry.name} over the folder {target}")
            os.replace(entry, target)


def _rar_steps(archive: Archive, path: Path, raw_dir: Path) -> str:
    """The exact shell commands that unpack a RAR archive (and its nested RARs) into the expected layout."""
    dest = raw_dir / archive.into if archive.into != "." else raw_dir
    q_arc, q_dest = shlex.quote(str(path)), shlex.quote(str(dest))
    lines = [
        f"{archive.filename} is a RAR archive, which cannot be unpacked with Python's standard library.",
        "   Unpack it with ONE of these tools (Debian/Ubuntu: `apt-get install unar`, or "
        "`libarchive-tools` for bsdtar; `unrar` is in non-free):",
        f"     unrar x {q_arc} {q_dest}/",
        f"     unar -D -f -o {q_dest} {q_arc}",
        f"     bsdtar -xf {q_arc} -C {q_dest}",
    ]
    if archive.nested:
        lines += [
            f"   It holds one RAR per class; unpack each into {dest}/ (and delete it) with the same tool:",
            f'     cd {q_dest} && for f in *.rar; do unrar x "$f" ./ && rm "$f"; done',
            f'     cd {q_dest} && for f in *.rar; do unar -D -f -o . "$f" && rm "$f"; done',
            f'     cd {q_dest} && for f in *.rar; do bsdtar -xf "$f" -C . && rm "$f"; done',
            f"   (e.g. `unrar x brush_hair.rar {q_dest}/` gives {dest}/brush_hair/*.avi).",
        ]
    if archive.unpack_note:
        lines.append("   " + archive.unpack_note.replace("<raw_dir>", str(raw_dir)))
    if archive.done:
        shown = ", ".join(archive.done[:3]) + (
            f", ... ({len(archive.done)} in all)" if len(archive.done) > 3 else ""
        )
        lines.append(f"   Afterwards these must exist under {raw_dir}: {shown}.")
    missing = [rel for rel in archive.done if not (raw_dir / rel).exists()]
    if missing and len(missing) < len(archive.done):
        lines.append(f"   Still missing: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}.")
    return "\n".join(lines)
