"""Dataset preparation: decode, resize and store splits as RIVER HDF5 shards (or npz / mp4) + manifest."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import av
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from videxp.data.clips import frame_step
from videxp.data.download import download_dataset
from videxp.data.hdf5 import ShardWriter, shard_files
from videxp.data.records import SPLITS, VideoRecord
from videxp.data.sources import MANIFEST, PREPARED_FORMAT, scan_records
from videxp.data.transforms import ClipTransform
from videxp.errors import VidexpError
from videxp.utils.io import atomic_path, remove_stale_temps, write_json
from videxp.utils.provenance import git_state, package_versions, provenance
from videxp.video import write_video
from videxp.video.decode import decode_frames, probe

log = logging.getLogger(__name__)

FORMATS = ("hdf5", "npz", "mp4")
MARKER = (
    ".videxp-prepare.json"  # written when a run starts, removed with the manifest written: run in progress
)
SPLIT_DONE = ".split.json"  # inside a finished split folder: its records, skipped files and fingerprint
PARTIAL = ".{split}.partial"  # a split being written; renamed onto <out_dir>/<split> when complete
_BAD_FILE_ERRORS = (OSError, ValueError, EOFError, av.error.FFmpegError)  # VideoError is a ValueError
_PACKAGES = ("videxp", "numpy", "av", "h5py", "pillow", "hydra-core", "omegaconf", "tqdm")


class PrepareError(VidexpError, RuntimeError):
    """The output folder conflicts with this run (other settings, foreign files) or the config is lacking."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that changes the stored pixels or frames (picklable: sent to the worker processes)."""

    size: tuple[int, int]  # (height, width)
    resize_mode: str
    interpolation: str
    stride: int = 1
    target_fps: float | None = None
    clip_length: int | None = None  # None = whole videos; n = one seeded window of n stored frames
    seed: int = 0

    def transform(self) -> ClipTransform:
        return ClipTransform(self.size, self.resize_mode, self.interpolation, channels=3)


class SkipVideo(ValueError):
    """A readable video that does not fit the preset (shorter than the window)."""


# ----------------------------------------------------------------------------- one video


def window_start(video_id: str, num_frames: int, length: int, seed: int) -> int:
    """Seeded start of a `length`-frame window in `num_frames` frames: a function of (seed, video_id) only."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(video_id.encode())])
    return int(rng.integers(0, num_frames - length + 1))


def prepare_video(record: VideoRecord, settings: Settings) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode, subsample, window and resize one record: (uint8 [T, h, w, 3], meta of what was stored).

    Raises VideoError / OSError for unreadable files and SkipVideo for videos shorter than the window.
    """
    source_fps = probe(record.path)["fps"]
    step = frame_step(source_fps, settings.stride, settings.target_fps)
    offset, stop = record.frame_range if record.frame_range is not None else (0, None)
    frames = decode_frames(record.path, offset, stop, step)  # [N, H, W, 3]: every step-th source frame
    start = 0
    if settings.clip_length is not None:
        n = frames.shape[0]
        if n < settings.clip_length:
            raise SkipVideo(
                f"{record.path}: {n} frames at step {step} (< the {settings.clip_length}-frame window)"
            )
        start = window_start(record.video_id, n, settings.clip_length, settings.seed)
        frames = frames[start : start + settings.clip_length]  # [L, H, W, 3]
    video = settings.transform()(frames)  # [T, h, w, 3]
    first = offset + start * step
    meta = {
        "fps": source_fps / step,  # stored rate
        "source_fps": source_fps,
        "step": step,
        "num_frames": int(video.shape[0]),
        "source_size": [int(frames.shape[1]), int(frames.shape[2])],  # [H, W] before the resize
    }
    return video, {"frame_range": (first, first + (video.shape[0] - 1) * step + 1), "meta": meta}


def _job(record: dict[str, Any], settings: Settings) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Worker entry: (video, info) or (None, {"reason": ...}) for a bad or too-short file."""
    try:
        return prepare_video(VideoRecord.from_dict(record), settings)
    except _BAD_FILE_ERRORS as e:
        return None, {"reason": f"{type(e).__name__}: {e}"}


def _ordered(
    records: list[VideoRecord], settings: Settings, workers: int
) -> Iterator[tuple[VideoRecord, np.ndarray | None, dict[str, Any]]]:
    """`_job` over `records`, results in catalog order; at most 4 jobs per worker in flight."""
    if workers <= 0:
        for rec in records:
            yield rec, *_job(rec.to_dict(), settings)
        return
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        todo = iter(records)
        pending: deque[tuple[VideoRecord, Future]] = deque()

        def submit() -> None:
            rec = next(todo, None)
            if rec is not None:
                pending.append((rec, pool.submit(_job, rec.to_dict(), settings)))

        for _ in range(4 * workers):
            submit()
        while pending:
            rec, future = pending.popleft()
            submit()
            yield rec, *future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- one split


def _file_name(video_id: str) -> str:
    """A file stem for a video id (catalog ids are unique; '/' is not allowed in file names)."""
    return video_id.replace(os.sep, "__")


class _Writer:
    """Stores videos of one split in `folder` as HDF5 shards or one npz / mp4 file per video."""

    def __init__(self, folder: Path, fmt: str, videos_per_shard: int, mp4_crf: int):
        if fmt not in FORMATS:
            raise PrepareError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.folder, self.fmt, self.crf = folder, fmt, mp4_crf
        self.shards = ShardWriter(folder, videos_per_shard) if fmt == "hdf5" else None

    def add(self, video_id: str, video: np.ndarray, fps: float) -> str | None:
        """Store uint8 [T, h, w, 3]; returns the file name for per-video formats."""
        if self.shards is not None:
            self.shards.add(video)
            return None
        name = f"{_file_name(video_id)}.{self.fmt}"
        if self.fmt == "npz":
            with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, frames=video)  # frames: [T, h, w, 3] uint8
        else:
            write_video(self.folder / name, video, fps=fps, crf=self.crf, pad_odd=True)
        return name

    def close(self) -> None:
        if self.shards is not None:
            self.shards.close()

    def abort(self) -> None:
        if self.shards is not None:
            self.shards.abort()


def _prepare_split(
    split: str,
    records: list[VideoRecord],
    out_dir: Path,
    settings: Settings,
    fingerprint: dict[str, Any],
    cfg: DictConfig,
) -> dict[str, Any]:
    """Write one split into `<out_dir>/.<split>.partial`, then rename it onto `<out_dir>/<split>`."""
    tmp = out_dir / PARTIAL.format(split=split)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writer = _Writer(tmp, cfg.format, int(cfg.videos_per_shard), int(cfg.mp4_crf))
    kept: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    frames = 0
    results = _ordered(records, settings, int(cfg.workers))
    bar = tqdm(results, total=len(records), desc=f"{cfg.dataset.name} {split}", disable=not cfg.progress)
    try:
        for rec, video, info in bar:
            if video is None:
                skipped.append({"split": split, "video_id": rec.video_id, "path": rec.path, **info})
                log.warning("skipped %s: %s", rec.video_id, info["reason"])
                continue
            meta = {**rec.meta, **info["meta"]}
            file = writer.add(rec.video_id, video, meta["fps"])
            if file is not None:
                meta["file"] = file
                meta["stored_frames"] = int(video.shape[0])  # per-video files: frame count without decoding
            kept.append(dataclasses.replace(rec, frame_range=info["frame_range"], meta=meta).to_dict())
            frames += int(video.shape[0])
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if not kept:
        log.warning("%s: no video of split %r was stored (%d skipped)", out_dir, split, len(skipped))
    entry = {
        "folder": split,
        "same_as": None,
        "num_videos": len(kept),
        "num_frames": frames,
        "records": kept,
        "skipped": skipped,
    }
    _finish_split(tmp, out_dir / split, entry, fingerprint)
    return entry


def _readable(path: Path) -> None:
    """Give a file written through a private temp file (mode 0600) the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _finish_split(tmp: Path, final: Path, entry: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    write_json(tmp / SPLIT_DONE, {"fingerprint": fingerprint, "entry": entry})
    for file in tmp.iterdir():
        if file.is_file() and file.stat().st_nlink == 1:  # hard links share the original's mode
            _readable(file)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _link_split(
    split: str, same_as: str, done: dict[str, Any], out_dir: Path, fingerprint: dict[str, Any]
) -> dict:
    """A split whose catalog equals `same_as`'s: hard links to its files (copies across file systems)."""
    tmp = out_dir / PARTIAL.format(split=split)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file in sorted((out_dir / same_as).iterdir()):
        if file.name == SPLIT_DONE or not file.is_file():
            continue
        try:
            os.link(file, tmp / file.name)
        except OSError:
            shutil.copy2(file, tmp / file.name)
    entry = {
        **done,
        "folder": split,
        "same_as": same_as,
        "records": [{**r, "split": split} for r in done["records"]],
        "skipped": [{**s, "split": split} for s in done["skipped"]],
    }
    _finish_split(tmp, out_dir / split, entry, fingerprint)
    return entry


def _reusable(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The entry of a split finished by an interrupted run with the same settings, else None."""
    done = folder / SPLIT_DONE
    if not done.is_file():
        return None
    try:
        state = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    return state["entry"] if state.get("fingerprint") == fingerprint else None


# ----------------------------------------------------------------------------- the run


def settings_from_cfg(cfg: DictConfig) -> Settings:
    """The pixel/frame settings of `cfg.preset`."""
    p = cfg.preset
    size = p.size
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != 2:
        raise PrepareError(f"preset.size must be an int or [height, width], got {p.size}")
    clip_length = None if p.get("clip_length") is None else int(p.clip_length)
    if clip_length is not None and clip_length < 1:
        raise PrepareError(f"preset.clip_length must be >= 1 or null, got {clip_length}")
    settings = Settings(
        size=size,  # type: ignore[arg-type]
        resize_mode=str(p.resize_mode),
        interpolation=str(p.interpolation),
        stride=int(p.get("stride", 1)),
        target_fps=None if p.get("target_fps") is None else float(p.target_fps),
        clip_length=clip_length,
        seed=int(p.get("seed", 0)),
    )
    if settings.resize_mode not in ("squash", "center_crop"):
        raise PrepareError(f"preset.resize_mode must be squash or center_crop, got {settings.resize_mode!r}")
    settings.transform()  # validates the interpolation
    if settings.stride < 1 or (settings.target_fps is not None and settings.stride != 1):
        raise PrepareError(
            f"preset: give stride >= 1 or target_fps, not both (got {settings.stride}, {settings.target_fps})"
        )
    return settings


def manifest_settings(settings: Settings, cfg: DictConfig) -> dict[str, Any]:
    """JSON settings recorded in the manifest (and compared on a rerun)."""
    window = None
    if settings.clip_length is not None:
        window = (
            "one window per video, start = np.random.default_rng([seed, crc32(video_id)]).integers(n - L + 1)"
        )
    return {
        "size": list(settings.size),  # [height, width]
        "resize_mode": settings.resize_mode,
        "interpolation": settings.interpolation,
        "channels": 3,
        "stride": settings.stride,
        "target_fps": settings.target_fps,
        "clip_length": settings.clip_length,
        "window": window,
        "seed": settings.seed,
        "format": str(cfg.format),
        "videos_per_shard": int(cfg.videos_per_shard) if cfg.format == "hdf5" else None,
        "mp4_crf": int(cfg.mp4_crf) if cfg.format == "mp4" else None,
        "transform": settings.transform().settings(),
    }


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def _clear(out_dir: Path, splits: list[str]) -> None:
    """Remove what videxp-prepare wrote in `out_dir` (manifest first, so a crash leaves no stale manifest)."""
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for split in splits:
        shutil.rmtree(out_dir / split, ignore_errors=True)
        shutil.rmtree(out_dir / PARTIAL.format(split=split), ignore_errors=True)


def _check_out_dir(
    out_dir: Path, fingerprint: dict[str, Any], splits: list[str], overwrite: bool
) -> dict | None:
    """The manifest when `out_dir` is already prepared with these settings; clears or refuses others."""
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except ValueError as e:
            raise PrepareError(f"{manifest_path}: unreadable manifest ({e}); pass overwrite=true") from e
        if old.get("format") == PREPARED_FORMAT and old.get("fingerprint") == fingerprint:
            return old
        if not overwrite:
            changes = _diff(old.get("fingerprint", {}), fingerprint) or ["(manifest without a fingerprint)"]
            raise PrepareError(
                f"{out_dir} already holds data prepared with other settings ({'; '.join(changes[:6])}); "
                "pass overwrite=true to replace it, or choose another out_dir"
            )
        _clear(out_dir, sorted(set(splits) | set(old.get("splits", {}))))
    elif not (out_dir / MARKER).is_file():  # not ours: refuse to mix with foreign split folders
        foreign = [s for s in splits if (out_dir / s).exists()]
        if foreign and not overwrite:
            raise PrepareError(
                f"{out_dir} has {', '.join(foreign)} folder(s) but no {MANIFEST} from videxp-prepare; "
                "pass overwrite=true to replace them, or choose another out_dir"
            )
        _clear(out_dir, splits)
    for split in splits:  # an interrupted run's half-written splits; its finished ones may be reused
        shutil.rmtree(out_dir / PARTIAL.format(split=split), ignore_errors=True)
    return None


def _catalog_key(records: list[VideoRecord]) -> list[tuple]:
    return [(r.video_id, r.path, r.frame_range) for r in records]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Prepare `cfg.dataset` from `cfg.raw_dir` into `cfg.out_dir` per `cfg.preset`.

    Returns {"status": "prepared" | "up_to_date", "out_dir", "manifest"}.
    """
    name = str(cfg.dataset.name)
    if cfg.raw_dir is None:
        raise PrepareError(f"{name}: set raw_dir=<the extracted official tree> (or dataset.source.root)")
    if cfg.out_dir is None:
        raise PrepareError(f"{name}: set out_dir=<folder for the prepared shards>")
    raw_dir = Path(str(cfg.raw_dir)).expanduser().resolve()
    out_dir = Path(str(cfg.out_dir)).expanduser().resolve()
    if raw_dir == out_dir:
        raise PrepareError(f"out_dir {out_dir} must differ from raw_dir")
    splits = [str(s) for s in cfg.splits]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or len(set(splits)) != len(splits):
        raise PrepareError(f"splits must be distinct names from {SPLITS}, got {splits}")
    if cfg.download:
        download_dataset(name, raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{name}: raw_dir {raw_dir} does not exist")
    settings = settings_from_cfg(cfg)
    options = OmegaConf.to_container(cfg.dataset.source.get("options") or {}, resolve=True)
    fingerprint = json.loads(
        json.dumps(
            {
                "dataset": name,
                "settings": manifest_settings(settings, cfg),
                "source": {"root": str(raw_dir), "options": options},
                "splits": splits,
            }
        )
    )  # JSON round trip: compared with the manifest's copy on a rerun

    remove_stale_temps(out_dir)  # a killed run's half-written manifest or marker
    existing = _check_out_dir(out_dir, fingerprint, splits, bool(cfg.overwrite))
    if existing is not None:
        (out_dir / MARKER).unlink(missing_ok=True)  # a run killed after writing its manifest
        print(f"{out_dir}: already prepared with these settings ({MANIFEST}); nothing to do")
        return {"status": "up_to_date", "out_dir": str(out_dir), "manifest": existing}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / MARKER, {"fingerprint": fingerprint})

    catalogs = {s: scan_records(name, raw_dir, s, **options) for s in splits}
    order = sorted(splits, key=lambda s: (s == "val" and "test" in splits, splits.index(s)))  # val after test
    entries: dict[str, dict[str, Any]] = {}
    for split in order:
        reused = _reusable(out_dir / split, fingerprint)
        if reused is not None:
            log.info("%s: split %s finished by an earlier run with these settings; kept", out_dir, split)
            entries[split] = reused
            continue
        same = next((s for s in entries if _catalog_key(catalogs[s]) == _catalog_key(catalogs[split])), None)
        if same is not None and catalogs[split]:
            log.info("%s: split %s has the same videos as %s; hard-linking its files", out_dir, split, same)
            entries[split] = _link_split(split, same, entries[same], out_dir, fingerprint)
        else:
            entries[split] = _prepare_split(split, catalogs[split], out_dir, settings, fingerprint, cfg)

    manifest = _manifest(cfg, fingerprint, {s: entries[s] for s in splits})
    write_json(out_dir / MANIFEST, manifest)  # last: its presence means the folder is complete
    _readable(out_dir / MANIFEST)
    (out_dir / MARKER).unlink(missing_ok=True)
    _summary(out_dir, manifest, int(cfg.report_skipped))
    return {"status": "prepared", "out_dir": str(out_dir), "manifest": manifest}


def _manifest(
    cfg: DictConfig, fingerprint: dict[str, Any], entries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    prov = provenance()
    prov.update(git=git_state(), packages=package_versions(_PACKAGES))
    skipped = [s for split, e in entries.items() if e["same_as"] is None for s in e["skipped"]]
    return {
        "format": PREPARED_FORMAT,
        "dataset": fingerprint["dataset"],
        "preset": cfg.preset.get("name"),
        "settings": fingerprint["settings"],
        "source": fingerprint["source"],
        "stored_step_note": (
            "frames are stored every meta.step source frames (meta.fps = source_fps / step); "
            "the loader's clips.stride applies on top of the stored frames"
        ),
        "splits": entries,
        "skipped": skipped,
        "fingerprint": fingerprint,
        "provenance": prov,
    }


def _summary(out_dir: Path, manifest: dict[str, Any], show: int) -> None:
    for split, e in manifest["splits"].items():
        same = f" (same videos as {e['same_as']}, hard-linked)" if e["same_as"] else ""
        print(
            f"{split}: {e['num_videos']} videos, {e['num_frames']} frames, {len(e['skipped'])} skipped{same}"
        )
    skipped = manifest["skipped"]
    if skipped:
        print(f"skipped {len(skipped)} file(s) (all listed in {out_dir / MANIFEST} under 'skipped'):")
        for s in skipped[:show]:
            print(f"  {s['split']} {s['video_id']}: {s['reason']}")
        if len(skipped) > show:
            print(f"  ... and {len(skipped) - show} more")
    print(f"prepared: {out_dir}")


def existing_shards(out_dir: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of a prepared split (for checks and tests)."""
    return shard_files(Path(out_dir) / split)
