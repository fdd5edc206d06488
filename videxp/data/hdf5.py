"""RIVER-layout HDF5 video shards (`<split>/shard_0001.hdf5`, `len/<i>`, `<i>/<j>` frames) with checksums."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from videxp.errors import CorruptDataError
from videxp.utils.io import atomic_path
from videxp.video import VideoError, check_video
from videxp.video.walk import entries

__all__ = ["CHECKSUMS", "SHARD_NAME", "HDF5Videos", "ShardWriter", "shard_files", "write_shards"]

log = logging.getLogger(__name__)

SHARD_NAME = "shard_{:04d}.hdf5"  # numbered from 1, as RIVER's convert_to_h5.py
SHARD_SUFFIXES = (".hdf5", ".h5")
# HDF5 >= 1.10 object formats: ~7x less overhead per frame dataset than the 1.8 default (B-tree v1 chunk
# index), same groups and datasets; readable by any h5py built on HDF5 >= 1.10 (2016).
_LIBVER = ("v110", "v110")
# Checksums: the file attribute CHECKSUMS marks a shard written with them; each video group `<i>` then holds
# the attribute FRAME_SHA256, uint8 [T, 32]: the sha256 digest of each frame's uint8 (H, W, 3) bytes.
CHECKSUMS = "videxp_checksums"
CHECKSUM_KIND = "frame_sha256/1"
FRAME_SHA256 = "frame_sha256"
_FIX = (
    "the shard is corrupt: re-create it (videxp-prepare ... overwrite=true, or delete it and re-materialise) "
    "or restore it from a good copy"
)
_warned_unverified: set[str] = set()  # shards without checksums already warned about (once per process)


def _open_dataset(group_id: h5py.h5g.GroupID, name: str) -> h5py.h5d.DatasetID | None:
    """The dataset `name` in a group (h5py low-level API: ~2x faster than Group[...] per frame), or None."""
    try:
        return h5py.h5d.open(group_id, name.encode())
    except (KeyError, ValueError):
        return None


def _frame_plist(frame_shape: tuple[int, ...], compress: bool) -> h5py.h5p.PropDCID:
    """Dataset creation properties: one LZF-compressed chunk per frame (what compression="lzf" sets), or
    contiguous uncompressed storage."""
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    if compress:
        plist.set_chunk(tuple(frame_shape))
        plist.set_filter(h5py.h5z.FILTER_LZF, h5py.h5z.FLAG_OPTIONAL)
    return plist


def frame_digests(video: np.ndarray) -> np.ndarray:
    """uint8 [T, 32]: the sha256 digest of each frame's C-ordered uint8 bytes of a [T, H, W, 3] video."""
    return np.stack(
        [np.frombuffer(hashlib.sha256(np.ascontiguousarray(f)).digest(), np.uint8) for f in video]
    )


def shard_files(split_dir: str | os.PathLike) -> list[Path]:
    """The `.hdf5`/`.h5` files of a folder, sorted by name; hidden (temporary) files are skipped."""
    folder = Path(split_dir)
    if not folder.is_dir():
        return []
    return [p for p in entries(folder)[1] if p.suffix.lower() in SHARD_SUFFIXES]


class ShardWriter:
    """Write videos into RIVER shards under `split_dir`; each shard goes to a temp name, renamed when full.

    Layout per shard: group `len` with a scalar int64 dataset `len/<i>` (frame count) per video, an empty
    group `videos`, and per video a group `<i>` (index within the shard) holding one LZF-compressed
    (or, with `compress=False`, contiguous) uint8 `(H, W, 3)` dataset `<i>/<j>` per frame, and the
    attribute `frame_sha256` (uint8 [T, 32], each frame's sha256) that `HDF5Videos` verifies on read.
    Existing shards in `split_dir` are an error unless `overwrite`, in which case they are deleted when
    the writer opens.

        with ShardWriter(root / "train") as writer:
            for video in videos:
                writer.add(video)           # uint8 [T, H, W, 3]
        writer.num_videos, writer.shards
    """

    def __init__(
        self,
        split_dir: str | os.PathLike,
        videos_per_shard: int = 100000,
        overwrite: bool = False,
        compress: bool = True,
    ):
        if videos_per_shard < 1:
            raise ValueError(f"videos_per_shard must be >= 1, got {videos_per_shard}")
        self.split_dir = Path(split_dir)
        self.videos_per_shard = int(videos_per_shard)
        self.compress = bool(compress)
        existing = shard_files(self.split_dir)
        if existing and not overwrite:
            raise FileExistsError(
                f"{self.split_dir}: already holds {len(existing)} shard(s) "
                f"({existing[0].name}, ...); pass overwrite=True to replace them"
            )
        for old in existing:
            old.unlink()
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[Path] = []  # completed shard files
        self.num_videos = 0
        self.num_frames = 0
        self._stack: contextlib.ExitStack | None = None
        self._file: h5py.File | None = None
        self._in_shard = 0
        self._final: Path | None = None
        self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_shard(self) -> None:
        final = self.split_dir / SHARD_NAME.format(len(self.shards) + 1)
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(final))  # renamed onto `final` when the stack closes
        self._file = self._stack.enter_context(h5py.File(tmp, "w", libver=_LIBVER))
        self._file.create_group("len")
        self._file.create_group("videos")  # unused by RIVER's reader, kept for layout compatibility
        self._file.attrs[CHECKSUMS] = CHECKSUM_KIND
        self._in_shard = 0
        self._final = final

    def _finish_shard(self) -> None:
        assert self._stack is not None and self._final is not None
        self._stack.close()  # closes the h5py file, then renames the temp file onto the shard name
        self.shards.append(self._final)
        self._stack, self._file = None, None

    def add(self, video: np.ndarray) -> int:
        """Append one uint8 `[T, H, W, 3]` video (C = 1 is replicated); returns its global index."""
        if self._closed:
            raise RuntimeError(f"{self.split_dir}: ShardWriter is closed")
        video = check_video(video, f"video {self.num_videos} for {self.split_dir}")  # [T, H, W, 3]
        if self._file is None:
            self._open_shard()
        assert self._file is not None
        key = str(self._in_shard)
        self._file["len"].create_dataset(key, data=np.int64(video.shape[0]))
        group = self._file.create_group(key)
        group.attrs[FRAME_SHA256] = frame_digests(video)  # [T, 32]
        group_id = group.id
        plist, space = _frame_plist(video.shape[1:], self.compress), h5py.h5s.create_simple(video.shape[1:])
        for j, frame in enumerate(video):  # frame: [H, W, 3]
            dataset = h5py.h5d.create(group_id, str(j).encode(), h5py.h5t.NATIVE_UINT8, space, dcpl=plist)
            dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(frame))
        self._in_shard += 1
        self.num_videos += 1
        self.num_frames += int(video.shape[0])
        if self._in_shard == self.videos_per_shard:
            self._finish_shard()
        return self.num_videos - 1

    def close(self) -> int:
        """Finish the open shard (rename it into place); returns the number of videos written."""
        if not self._closed:
            if self._stack is not None:
                self._finish_shard()
            self._closed = True
        return self.num_videos

    def abort(self) -> None:
        """Drop the shard being written (its temp file is removed); completed shards stay."""
        if self._stack is not None:
            stack, self._stack, self._file = self._stack, None, None
            with contextlib.suppress(_Abort):
                stack.__exit__(_Abort, _Abort(), None)
        self._closed = True


class _Abort(Exception):
    """Raised into the shard's ExitStack so atomic_path discards the temp file."""


def write_shards(
    videos: Iterable[np.ndarray],
    split_dir: str | os.PathLike,
    videos_per_shard: int = 100000,
    overwrite: bool = False,
    compress: bool = True,
) -> int:
    """Write every uint8 `[T, H, W, 3]` video of `videos` into shards under `split_dir`; returns the count."""
    with ShardWriter(split_dir, videos_per_shard, overwrite=overwrite, compress=compress) as writer:
        for video in videos:
            writer.add(video)
    return writer.num_videos


class HDF5Videos:
    """Random access to the videos of one RIVER shard file or a folder of shards (sorted by name).

    Global index i maps to (shard, local index) through cumulative per-shard counts. Files are
    opened lazily, once per process, so an instance can be used in DataLoader workers (fork or
    spawn): handles are never pickled and are re-opened after a fork. With `verify_checksums` every
    frame read is checked against the sha256 the writer stored (`CorruptDataError` naming the shard,
    video and frame on a mismatch); shards written without checksums still read, with one warning
    per shard. A chunk that cannot be decoded is a `CorruptDataError` naming the shard and video too.
    """

    def __init__(self, path: str | os.PathLike, verify_checksums: bool = True):
        self.path = Path(path)
        self.verify_checksums = bool(verify_checksums)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such HDF5 shard file or folder")
        if self.path.is_dir():
            self.files = shard_files(self.path)
            if not self.files:
                raise VideoError(f"{self.path}: folder has no {'/'.join(SHARD_SUFFIXES)} shards")
        elif self.path.suffix.lower() in SHARD_SUFFIXES:
            self.files = [self.path]
        else:
            raise VideoError(f"{self.path}: expected a {'/'.join(SHARD_SUFFIXES)} file or a folder of them")
        lengths = [self._read_lengths(f) for f in self.files]
        self._lengths = np.concatenate(lengths).astype(np.int64) if lengths else np.zeros(0, np.int64)
        self._ends = np.cumsum([len(x) for x in lengths]).astype(np.int64)  # exclusive end per shard
        self._handles: dict[int, h5py.File] = {}
        self._checked: dict[int, bool] = {}  # shard -> written with checksums
        self._pid = os.getpid()

    @staticmethod
    def _read_lengths(file: Path) -> np.ndarray:
        try:
            with h5py.File(file, "r") as h5:
                if "len" not in h5:
                    raise VideoError(f"{file}: no 'len' group (not a RIVER video shard)")
                group = h5["len"]
                lengths = np.empty(len(group), dtype=np.int64)
                for i in range(len(lengths)):
                    dataset = _open_dataset(group.id, str(i))
                    if dataset is None or dataset.shape != ():
                        raise VideoError(
                            f"{file}: 'len/{i}' missing or not a scalar ({len(lengths)} keys in 'len')"
                        )
                    dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, lengths[i : i + 1].reshape(()))
        except OSError as e:
            raise VideoError(f"{file}: cannot open as HDF5: {e}") from e
        return lengths

    def __len__(self) -> int:
        return int(len(self._lengths))

    def __repr__(self) -> str:
        return f"HDF5Videos({str(self.path)!r}, videos={len(self)}, shards={len(self.files)})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}  # h5py handles cannot cross processes
        state["_checked"] = {}
        return state

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: video index {i} out of range ({n} videos)")
        return int(i) % n

    def locate(self, i: int) -> tuple[Path, int]:
        """(shard file, index within that shard) of global video index `i`."""
        i = self._index(i)
        shard = int(np.searchsorted(self._ends, i, side="right"))
        first = int(self._ends[shard - 1]) if shard else 0
        return self.files[shard], i - first

    @property
    def lengths(self) -> np.ndarray:
        """Frame counts of all videos, int64 `[N]` (read-only view)."""
        view = self._lengths.view()
        view.flags.writeable = False
        return view

    def num_frames(self, i: int) -> int:
        """Frame count of video `i` (from `len/<i>`, no pixel reads)."""
        return int(self._lengths[self._index(i)])

    def _handle(self, file: Path) -> h5py.File:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours to use
            self._handles, self._checked, self._pid = {}, {}, os.getpid()
        key = self.files.index(file)
        if key not in self._handles:
            try:
                self._handles[key] = h5py.File(file, "r")
            except OSError as e:
                raise VideoError(f"{file}: cannot open as HDF5: {e}") from e
            self._checked[key] = self._handles[key].attrs.get(CHECKSUMS) is not None
            if self.verify_checksums and not self._checked[key] and str(file) not in _warned_unverified:
                _warned_unverified.add(str(file))
                log.warning(
                    "%s: written without checksums (before videxp stored them): its pixels are read "
                    "unverified; re-create it with videxp-prepare to get them checked",
                    file,
                )
        return self._handles[key]

    def _digests(self, file: Path, group_id: h5py.h5g.GroupID, local: int, i: int, length: int) -> np.ndarray:
        """The stored uint8 [T, 32] frame digests of video `local` in `file`."""
        where = f"{file}: video {local} (index {i} of {self.path})"
        try:
            attr = h5py.h5a.open(group_id, FRAME_SHA256.encode())
        except KeyError as e:
            raise CorruptDataError(
                f"{where}: no {FRAME_SHA256} attribute although the shard has checksums; {_FIX}"
            ) from e
        if attr.shape != (length, 32) or attr.dtype != np.uint8:
            raise CorruptDataError(
                f"{where}: {FRAME_SHA256} is {attr.dtype} {attr.shape}, expected uint8 ({length}, 32); {_FIX}"
            )
        digests = np.empty((length, 32), dtype=np.uint8)
        try:
            attr.read(digests)
        except OSError as e:
            raise CorruptDataError(f"{where}: cannot read its checksums ({e}); {_FIX}") from e
        return digests

    def read(self, i: int, start: int | None = 0, stop: int | None = None, step: int = 1) -> np.ndarray:
        """Frames `[start:stop:step]` (Python slice rules) of video `i` as uint8 `[T, H, W, 3]`.

        Only the selected frame datasets are read (and, with `verify_checksums`, checked).
        """
        i = self._index(i)
        file, local = self.locate(i)
        length = self.num_frames(i)
        if step == 0:
            raise ValueError(f"{file}: video {local}: step must not be zero")
        indices = range(length)[slice(start, stop, step)]
        if len(indices) == 0:
            raise VideoError(
                f"{file}: video {local} has {length} frames; [{start}:{stop}:{step}] selects none"
            )
        h5 = self._handle(file)
        try:
            group_id = h5py.h5g.open(h5.id, str(local).encode())
        except (KeyError, ValueError) as e:
            raise VideoError(
                f"{file}: group '{local}' missing or not a group (len/{local} = {length})"
            ) from e
        h5_key = self.files.index(file)
        digests = None
        if self.verify_checksums and self._checked[h5_key]:
            digests = self._digests(file, group_id, local, i, length)
        out: np.ndarray | None = None
        for k, j in enumerate(indices):
            key = f"{local}/{j}"
            dataset = _open_dataset(group_id, str(j))
            if dataset is None:
                raise VideoError(f"{file}: frame dataset '{key}' missing (len/{local} = {length})")
            shape, dtype = dataset.shape, dataset.dtype
            if out is None:
                if len(shape) != 3 or shape[-1] != 3 or dtype != np.uint8:
                    raise VideoError(f"{file}: '{key}' is {dtype} {shape}, expected uint8 (H, W, 3)")
                out = np.empty((len(indices), *shape), dtype=np.uint8)  # [T, H, W, 3]
            elif shape != out.shape[1:] or dtype != np.uint8:
                raise VideoError(
                    f"{file}: '{key}' is {dtype} {shape}, earlier frames are uint8 {out.shape[1:]}"
                )
            try:
                dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, out[k])
            except OSError as e:
                raise CorruptDataError(
                    f"{file}: video {local} (index {i} of {self.path}), frame {j}: its stored data cannot be "
                    f"decoded (HDF5: {str(e).splitlines()[0] if str(e) else type(e).__name__}); {_FIX}"
                ) from e
            if digests is not None and hashlib.sha256(out[k]).digest() != digests[j].tobytes():
                raise CorruptDataError(
                    f"{file}: video {local} (index {i} of {self.path}), frame {j} does not match its stored "
                    f"sha256: {_FIX} (dataset.source.verify_checksums=false reads without this check)"
                )
        assert out is not None
        return out

    def __getitem__(self, i: int) -> np.ndarray:
        """The whole video `i`, uint8 `[T, H, W, 3]`."""
        return self.read(i)

    def close(self) -> None:
        """Close the files this process opened (they reopen on the next read)."""
        if os.getpid() == self._pid:
            for h5 in self._handles.values():
                h5.close()
        self._handles = {}
