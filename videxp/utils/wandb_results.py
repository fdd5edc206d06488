"""Sampling and evaluation results on wandb: values, baselines, tables, per-frame curves, grid videos."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from videxp.utils.wandb_run import is_wandb, prepare

log = logging.getLogger(__name__)

TABLE_FILES = ("comparison.json", "benchmark_summary.json")  # cross-run tables a workflow writes
MAX_GRIDS = 8  # grid videos uploaded per run


def wandb_logger(cfg: DictConfig) -> DictConfig | None:
    """The run's WandbLogger config node (logger=wandb), or None."""
    loggers = cfg.get("logger") or {}
    return next((node for node in loggers.values() if is_wandb(node)), None)


def values(doc: dict[str, Any]) -> dict[str, float]:
    """Summary values of a metrics.json: `<metric>` and `baselines/<baseline>/<metric>`."""
    out = {name: res["value"] for name, res in doc.items() if isinstance(res, dict) and "value" in res}
    for base, scores in (doc.get("baselines") or {}).items():
        if base == "settings" or not isinstance(scores, dict):
            continue
        for name, res in scores.items():
            if isinstance(res, dict) and res.get("value") is not None:
                out[f"baselines/{base}/{name}"] = res["value"]
    return {k: v for k, v in out.items() if v is not None}


def read_rows(path: Path) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of a per_frame.csv, numbers as floats (empty cells as None)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [[float(c) if c else None for c in row] for row in reader]
    return header, rows


def _means(header: list[str], rows: list[list[Any]], key: slice) -> list[list[Any]]:
    """Rows of (key columns, mean of each metric column) grouped by `key` of a per_frame.csv row, sorted."""
    groups: dict[tuple, list[list[float]]] = defaultdict(lambda: [[] for _ in header[3:]])
    for row in rows:
        for i, v in enumerate(row[3:]):
            if v is not None:
                groups[tuple(int(k) for k in row[key])][i].append(v)
    return [[*k, *(sum(c) / len(c) if c else None for c in cols)] for k, cols in sorted(groups.items())]


def per_video(header: list[str], rows: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """Mean over frames per (video, sample) of every metric column of a per_frame.csv."""
    return ["video", "sample", *header[3:]], _means(header, rows, slice(0, 2))


def per_frame_mean(header: list[str], rows: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """Mean over (video, sample) per frame of every metric column: the per-frame curves."""
    return ["frame", *header[3:]], _means(header, rows, slice(2, 3))


def flat_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]] | None:
    """One row per run of a comparison.json (its metric values) or per method of a benchmark summary (its
    scalar fields); None for another document."""
    if isinstance(doc.get("methods"), dict):
        runs = {
            name: {k: v for k, v in fields.items() if isinstance(v, (int, float, str))}
            for name, fields in doc["methods"].items()
        }
    elif isinstance(doc.get("metrics"), dict) and isinstance(doc.get("runs"), list):
        runs = {
            name: {m: row["values"].get(name) for m, row in doc["metrics"].items()} for name in doc["runs"]
        }
    else:
        return None
    columns = sorted({k for fields in runs.values() for k in fields})
    return ["run", *columns], [[name, *(fields.get(c) for c in columns)] for name, fields in runs.items()]


def log_results(cfg: DictConfig, folder: str | Path) -> str | None:
    """With logger=wandb, log every metrics.json under `folder` (summary values, baselines, a table per
    video and the per-frame curves from its per_frame.csv, keys prefixed by the sub-folder), the workflow's
    comparison tables and up to `MAX_GRIDS` grid videos to one wandb run; returns its id (None: no wandb).

    The run follows the training logger's rules: project and mode from `logger.wandb`, the id from the run
    folder, group = the sweep (run_name), name = a sweep job's overrides, job_type = the task."""
    node = wandb_logger(cfg)
    if node is None:
        return None
    import wandb  # deferred: only logger=wandb needs it

    settings = prepare(node, cfg)
    folder = Path(folder)
    run = wandb.init(
        project=settings.get("project"),
        entity=settings.get("entity"),
        id=settings.id,
        name=settings.name,
        group=settings.get("group"),
        job_type=settings.get("job_type"),
        tags=list(settings.get("tags") or []),
        dir=str(settings.get("save_dir") or folder),
        mode=settings.get("mode", "offline"),
        resume="allow",
        reinit="finish_previous",
    )
    try:
        logged: dict[str, Any] = {}
        for path in sorted(folder.rglob("metrics.json")):
            rel = path.parent.relative_to(folder).as_posix()
            prefix = "" if rel == "." else f"{rel}/"
            doc = json.loads(path.read_text())
            run.summary.update({prefix + k: v for k, v in values(doc).items()})
            frames_csv = path.parent / "per_frame.csv"
            if frames_csv.is_file():
                header, rows = read_rows(frames_csv)
                cols, table = per_video(header, rows)
                logged[f"{prefix}per_video"] = wandb.Table(columns=cols, data=table)
                cols, table = per_frame_mean(header, rows)
                curves = wandb.Table(columns=cols, data=table)
                logged[f"{prefix}per_frame"] = curves
                for metric in cols[1:]:
                    logged[f"{prefix}per_frame/{metric}"] = wandb.plot.line(
                        curves, "frame", metric, title=f"{prefix}{metric} per frame"
                    )
        for name in TABLE_FILES:
            for path in sorted(folder.rglob(name)):
                flat = flat_rows(json.loads(path.read_text()))
                if flat is not None:
                    logged[Path(name).stem] = wandb.Table(columns=flat[0], data=flat[1])
        for path in sorted(folder.rglob("grid_*.gif"))[:MAX_GRIDS]:
            logged[f"grids/{path.stem}"] = wandb.Video(str(path), format="gif")
        if logged:
            run.log(logged)
        return run.id
    finally:
        run.finish()
