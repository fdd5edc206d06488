"""Resumable scoring in chunks of videos: each chunk's metric states saved atomically, merged at the end."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from videxp.metrics.base import Metric
from videxp.utils.io import remove_stale_temps, write_json

PARTIAL = "partial"  # <out>/partial/<run key>/chunk-<start>-<stop>/{<metric>.npz, state.json}
STATE = "state.json"  # written last: a chunk is complete when it exists


def run_key(doc: Mapping[str, Any]) -> str:
    """16 hex digits naming what a chunk's states depend on (metrics, data, tokenizer, seed)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def chunk_folder(out: Path, key: str, start: int, stop: int) -> Path:
    return Path(out) / PARTIAL / key / f"chunk-{start:06d}-{stop:06d}"


def load_chunk(folder: Path) -> dict[str, Any] | None:
    """A complete chunk's state (None when absent or half-written)."""
    try:
        return json.loads((folder / STATE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def save_chunk(folder: Path, metrics: Mapping[str, Metric], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Save every metric's state into `folder`, then state.json (metrics' descriptions + `extra`) last."""
    remove_stale_temps(folder)  # a killed run's half-written files
    folder.mkdir(parents=True, exist_ok=True)
    state = {"metrics": {name: m.save_state(folder, name) for name, m in metrics.items()}, **extra}
    write_json(folder / STATE, state)
    return state


def merge_chunks(metrics: Mapping[str, Metric], parts: list[tuple[Path, dict[str, Any]]]) -> None:
    """Merge the chunks' saved states into `metrics` (reset first); an inexact merge is an error."""
    for name, metric in metrics.items():
        metric.reset()
        if not metric.merge_saved([(folder, state["metrics"][name]) for folder, state in parts]):
            raise ValueError(
                f"metric {name!r} cannot merge chunked states exactly (its protocol caps or splits the "
                "videos); set reconstruction.chunk_size to cover every clip (or null)"
            )
