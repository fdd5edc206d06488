"""Evaluation report: metrics.json, per_frame.csv, per_frame.png (atomic writes) and a text summary table."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from videxp.metrics.base import FrameMetric, Metric
from videxp.utils.io import atomic_path, write_json


def _jsonable(obj: Any) -> Any:
    """Plain JSON types; numpy scalars/arrays converted, non-finite floats -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _frame_metrics(metrics: dict[str, Metric] | None) -> dict[str, FrameMetric]:
    return {name: m for name, m in (metrics or {}).items() if isinstance(m, FrameMetric)}


def _write_csv(path: Path, frame_metrics: dict[str, FrameMetric]) -> int:
    """One row per (video, sample, frame) over the union of all frame metrics; returns the row count."""
    rows: dict[tuple[int, int, int], dict[str, float]] = {}
    for name, metric in frame_metrics.items():
        for rec in metric.records():
            rows.setdefault((rec["video"], rec["sample"], rec["frame"]), {})[name] = rec["value"]
    names = list(frame_metrics)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "sample", "frame", *names])
        for key in sorted(rows):
            values = rows[key]
            writer.writerow([*key, *(repr(values[n]) if n in values else "" for n in names)])
    return len(rows)


_BASELINE_STYLE = {"repeat_last": "tab:red", "blank": "tab:gray"}


def _write_plot(
    path: Path, curves: dict[str, dict[str, Any]], baselines: dict[str, Any] | None = None
) -> None:
    """One subplot per metric: per-frame mean over videos/samples vs frame index, ±1 s.e. band; the
    baselines' per-frame means as dashed lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: only the plot needs matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0 * len(curves), 3.2), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (name, res) in zip(axes, curves.items()):
        frames = np.asarray(res["frames"], dtype=np.float64)
        mean = np.asarray(res["per_frame_mean"], dtype=np.float64)
        sem_list = res.get("per_frame_sem") or []
        sem = np.asarray([math.nan if v is None else v for v in sem_list], dtype=np.float64)
        ax.plot(frames, mean, marker="." if frames.size < 40 else None, lw=1.5, label="model")
        if sem.shape == mean.shape and np.isfinite(sem).any():
            ax.fill_between(frames, mean - sem, mean + sem, alpha=0.25, lw=0)
        for baseline, scores in _baseline_rows(baselines):
            res_b = scores.get(name) or {}
            if res_b.get("per_frame_mean") and res_b.get("frames"):
                colour = _BASELINE_STYLE.get(baseline)
                ax.plot(
                    res_b["frames"], res_b["per_frame_mean"], ls="--", lw=1.2, color=colour, label=baseline
                )
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize="small")
        ax.set_title(f"{name} = {res['value']:.4g}" if res.get("value") is not None else name)
        ax.set_xlabel("frame index")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_report(
    out_dir: str | os.PathLike,
    results: dict[str, dict[str, Any]],
    metrics: dict[str, Metric] | None = None,
    provenance: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    baselines: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the evaluation report into `out_dir`; return {kind: path} of the files written.

    - ``metrics.json``: one object per metric name (its `compute()` result: `value`, `settings`, ...),
      plus ``provenance`` and every key of `extra` (e.g. which frames were scored) at top level.
      Non-finite numbers are written as null.
    - ``per_frame.csv`` (needs `metrics`): columns video, sample, frame, then one per frame metric;
      one row per (video, sample, frame) scored by any of them, empty cells where one did not.
    - ``per_frame.png``: one subplot per result that has per-frame curves (`frames`, `per_frame_mean`).

    `baselines` (a `Baselines.compute()` result) goes into metrics.json under ``baselines`` and into the plot.
    """
    out_dir = Path(out_dir)
    extra = dict(extra or {})
    clash = sorted(set(extra) & (set(results) | {"provenance", "baselines"}))
    if clash:
        raise ValueError(f"extra keys clash with metric names or 'provenance': {clash}")
    for name, res in results.items():
        if not isinstance(res, dict) or "value" not in res:
            raise ValueError(f"results[{name!r}] must be a dict with a 'value' (a Metric.compute() result)")
    frame_metrics = _frame_metrics(metrics)
    missing = sorted(set(frame_metrics) - set(results))
    if missing:
        raise ValueError(f"metrics without results: {missing}")

    written: dict[str, Path] = {}
    doc: dict[str, Any] = {name: dict(res) for name, res in results.items()}
    doc["provenance"] = provenance or {}
    if baselines is not None:
        doc["baselines"] = baselines
    doc.update(extra)
    written["json"] = out_dir / "metrics.json"
    write_json(written["json"], _jsonable(doc))

    if frame_metrics:
        written["csv"] = out_dir / "per_frame.csv"
        _write_csv(written["csv"], frame_metrics)

    curves = {name: res for name, res in results.items() if res.get("per_frame_mean") and res.get("frames")}
    if curves:
        written["png"] = out_dir / "per_frame.png"
        _write_plot(written["png"], curves, baselines)
    return written


def _baseline_rows(baselines: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """(baseline name, {metric: result}) pairs of a `Baselines.compute()` result (its settings left out)."""
    return [(k, v) for k, v in (baselines or {}).items() if k != "settings" and isinstance(v, dict)]


def format_table(results: dict[str, dict[str, Any]], baselines: dict[str, Any] | None = None) -> str:
    """Fixed-width text table (metric, value, ±s.e., N videos, then one column per baseline) for the end of
    a run; a baseline's cell is empty for metrics it does not score (FVD)."""
    rows = _baseline_rows(baselines)
    header = f"{'metric':<20} {'value':>12} {'± s.e.':>10} {'N':>7}" + "".join(f" {b:>12}" for b, _ in rows)
    lines = [header, "-" * len(header)]
    for name, res in results.items():
        if not isinstance(res, dict) or "value" not in res:
            continue
        value = res["value"]
        sem = res.get("sem")
        n = res.get("num_videos", res.get("n"))
        value_s = "n/a" if value is None else f"{value:.4f}"
        sem_s = "" if sem is None or not math.isfinite(sem) else f"{sem:.4f}"
        n_s = "" if n is None else str(n)
        cells = ""
        for _, scores in rows:
            base = (scores.get(name) or {}).get("value")
            cells += f" {'' if base is None else f'{base:.4f}':>12}"
        lines.append(f"{name:<20} {value_s:>12} {sem_s:>10} {n_s:>7}{cells}")
    if rows:
        lines.append(f"blank = {(baselines or {}).get('settings', {}).get('blank', '?')}")
    return "\n".join(lines)
