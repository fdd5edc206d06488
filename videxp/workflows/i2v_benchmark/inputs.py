"""Benchmark inputs: N videos per class, starting frames (PNG + JSONL) and reference clips at the eval fps."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import Dataset

from videxp.utils.io import atomic_path, write_json, write_text
from videxp.video import read_image, to_float, to_uint8, write_video

log = logging.getLogger(__name__)

BENCHMARK_JSON = "benchmark.json"  # what the inputs are and how they were made
FRAMES_MANIFEST = "starting_frames_manifest.jsonl"  # one line per video: frame, prompt, source
STARTING_DIR = "starting_frames"  # <category>/<video_id>_frame0.png
REFERENCE_DIR = "reference_videos"  # <category>/<video_id>.<reference_format>
GENERATED_DIR = "generated_videos"  # <method>/<category>/<video_id>.mp4 at the evaluation fps
METHODS_DIR = "methods"  # <method>/samples (npy + manifest), videos (mp4 at the model's fps)
# settings that must agree before a second run reuses the inputs already written under a benchmark root
_IDENTITY = ("dataset", "split", "selection", "fps", "reference_frames", "reference_format", "frame_size")


def _category(record: Any) -> str:
    return record.class_name if record.class_name is not None else "all"


def select_clips(
    dataset: Any, per_class: int | None, max_videos: int | None, selection: str, seed: int
) -> list[int]:
    """Clip indices of `dataset`: `per_class` per class (None = all), in class then split order.

    `selection`: ``first`` takes each class's first clips in split order (W1 took the first 10 per
    category of its manifest); ``random`` draws them without replacement from a generator seeded by `seed`.
    """
    if selection not in ("first", "random"):
        raise ValueError(f"benchmark.selection must be first | random, got {selection!r}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"benchmark.per_class must be >= 1 or null, got {per_class}")
    by_class: dict[str, list[int]] = {}
    for i, window in enumerate(dataset.windows):
        by_class.setdefault(_category(dataset.source.record(window.video)), []).append(i)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for name in sorted(by_class):
        clips = by_class[name]
        if selection == "random":
            clips = sorted(rng.permutation(clips).tolist())
        chosen += clips[:per_class] if per_class is not None else clips
    if max_videos is not None:
        chosen = chosen[: int(max_videos)]
    if not chosen:
        raise ValueError("the benchmark selected no videos: the split is empty or every clip was too short")
    return chosen


def _file_stem(video_id: str) -> str:
    """A file name for `video_id` (kept as is, hostile characters included, but never a path)."""
    return video_id.replace("/", "_").replace("\\", "_")


def _write_png(path: Path, frame: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(frame).save(tmp, format="PNG")


def _identity(doc: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: doc.get(k) for k in _IDENTITY}, default=str))


def _complete(root: Path, doc: Mapping[str, Any]) -> bool:
    """Whether every file the benchmark.json lists is on disk."""
    rows = read_rows(root)
    return len(rows) == doc["num_videos"] and all(
        (root / r["frame_path"]).is_file() and (root / r["reference_path"]).exists() for r in rows
    )


def prepare_inputs(cfg: DictConfig) -> dict[str, Any]:
    """Write (or reuse) the starting frames, their JSONL and the reference clips; return benchmark.json.

    Idempotent and safe to run from several jobs at once: every file is written atomically and identically,
    and `benchmark.json` is written last. Inputs made with other settings are an error, never mixed.
    """
    b = cfg.benchmark
    root = Path(b.root)
    doc: dict[str, Any] = {
        "format": "videxp.i2v_benchmark/1",
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "split": b.split,
        "selection": {
            "per_class": b.per_class,
            "max_videos": b.max_videos,
            "rule": b.selection,
            "seed": int(cfg.seed),
        },
        "fps": float(b.fps),
        "reference_frames": int(b.reference_frames),
        "reference_format": b.reference_format,
        "frame_size": list(_frame_size(cfg.dataset.image_size)),
    }
    existing = root / BENCHMARK_JSON
    if existing.is_file():
        old = json.loads(existing.read_text())
        differ = [k for k in _IDENTITY if _identity(old)[k] != _identity(doc)[k]]
        if differ:
            raise ValueError(
                f"{existing} was made with different {', '.join(differ)}; use another benchmark.name "
                "(or delete that folder)"
            )
        if _complete(root, old):
            log.info("benchmark inputs already complete in %s (%d videos)", root, old["num_videos"])
            return old
    if b.reference_format not in ("mp4", "npy"):
        raise ValueError(f"benchmark.reference_format must be mp4 | npy, got {b.reference_format!r}")
    dataset = instantiate(cfg.dataset).dataset(b.split, evaluation=True)
    chosen = select_clips(dataset, b.per_class, b.max_videos, b.selection, int(cfg.seed))
    ids = [dataset.video_id(i) for i in chosen]
    rows, categories, steps = [], {}, set()
    for i, video_id in zip(chosen, ids, strict=True):
        window = dataset.windows[i]
        record = dataset.source.record(window.video)
        item = dataset[i]
        clip = to_uint8(item["video"])  # [T, H, W, C]
        if clip.shape[-1] == 1:
            clip = np.repeat(clip, 3, axis=-1)  # grey datasets: RGB files for the RGB generators
        category = _category(record)
        stem = _file_stem(video_id if ids.count(video_id) == 1 else f"{video_id}_clip{i}")
        frame_path = f"{STARTING_DIR}/{category}/{stem}_frame0.png"
        reference_path = f"{REFERENCE_DIR}/{category}/{stem}.{b.reference_format}"
        _write_png(root / frame_path, clip[0])
        write_video(root / reference_path, clip, fps=float(b.fps))
        source_fps = dataset.source.fps(window.video)
        frames = item["frames"].tolist()  # source frame indices of the clip
        step = frames[1] - frames[0] if len(frames) > 1 else 1
        steps.add(step)
        categories[category] = categories.get(category, 0) + 1
        rows.append(
            {
                "id": f"{category}/{stem}",
                "video_id": video_id,
                "category": category,
                "label": item["label"],
                "prompt": item["prompt"],
                "frame_path": frame_path,
                "reference_path": reference_path,
                "source": record.path,
                "source_fps": source_fps,
                "frame_step": step,
                "source_frames": frames,
                "dataset_index": i,
            }
        )
    write_text(root / FRAMES_MANIFEST, "".join(json.dumps(r) + "\n" for r in rows))
    doc.update(
        num_videos=len(rows),
        categories=categories,
        reference_resampling=(
            f"each reference clip is {b.reference_frames} frames taking every k-th source frame, "
            f"k = round(source fps / {b.fps}) (k = {sorted(steps)} here; per video in the JSONL), "
            f"written at {b.fps} fps; frame 0 is the starting frame"
        ),
    )
    write_json(existing, doc)
    log.info("benchmark inputs: %d videos in %d categories under %s", len(rows), len(categories), root)
    return doc


def _frame_size(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


def read_rows(root: str | Path) -> list[dict[str, Any]]:
    """The rows of `root`/starting_frames_manifest.jsonl (empty when it does not exist)."""
    path = Path(root) / FRAMES_MANIFEST
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON line: {e}") from e
    return rows


class StartingFrames(Dataset):
    """The benchmark's starting frames as sampling-loop items: frame 0 is the image, the rest is never read.

    Item: ``video`` [T, C, H, W] in [-1, 1] (the PNG repeated as a view: only the observed prefix is used),
    ``prompt``, ``label``, ``video_id`` (the row's ``category/stem`` id, the generated file's name).
    """

    def __init__(self, root: str | Path, video_length: int):
        self.root = Path(root)
        self.rows = read_rows(self.root)
        if not self.rows:
            raise FileNotFoundError(
                f"{self.root / FRAMES_MANIFEST}: missing or empty; prepare the inputs first"
            )
        self.video_length = int(video_length)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        frame = to_float(read_png(self.root / row["frame_path"])[None])  # [1, C, H, W]
        return {
            "video": frame.expand(self.video_length, -1, -1, -1),  # [T, C, H, W], a view
            "index": i,
            "video_id": row["id"],
            "label": row["label"],
            "prompt": row["prompt"],
        }


def read_png(path: Path) -> np.ndarray:
    """A starting frame as uint8 [H, W, 3]; an error naming the file when it is missing or unreadable."""
    try:
        return read_image(path)  # 16-bit PNGs scaled to 8 bits, never clipped
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the starting frame ({e})") from e
