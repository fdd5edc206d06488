"""Per-shard partial metric states and the once-only finaliser that merges them into metrics.json."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from videxp.inference.loop import MANIFEST
from videxp.inference.shards import Plan, shard_tag
from videxp.metrics.base import DistributionMetric, Metric
from videxp.metrics.baselines import baselines_for
from videxp.metrics.report import format_table, write_report
from videxp.scoring.samples import (
    reference_clip,
    reference_dataset,
    samples_extra,
    score_baselines,
    score_entries,
)
from videxp.scoring.selection import (
    build_metrics,
    clip_frames,
    evaluate_settings,
    reference_identity,
    scored_frames,
)
from videxp.utils.io import remove_stale_temps, write_json, write_text
from videxp.utils.locks import try_lock, unlock, wait_lock
from videxp.utils.provenance import provenance

log = logging.getLogger(__name__)

PARTIAL = (
    "partial"  # samples/partial/<run_id>/shard-<k>-of-<n>/{<metric>.npz, <fvd>.fake-<key>.npz, state.json}
)
STATE = "state.json"  # written last: a shard's partial state is complete when it exists
DONE = "finalised.json"  # written last by the finaliser: the run's metrics are final
CSV_COLUMNS = (
    "time",
    "run_name",
    "model",
    "checkpoint",
    "dataset",
    "fvd_protocol",
    "num_real",
    "num_generated",
    "fvd",
)
CSV_LOCK_STALE_S = 120.0  # an fvd_report.csv lock older than this (or of a dead local pid) is broken


def metrics_key(cfg: DictConfig, frames: range) -> str:
    """Identity of the metric selection and scored frames: partial states of another selection are stale."""
    doc = {"metric": OmegaConf.to_container(cfg.metric, resolve=True), "frames": [frames.start, frames.stop]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- partial states


def partial_root(samples_dir: Path, run_id: str) -> Path:
    return Path(samples_dir) / PARTIAL / run_id


def save_partial(
    cfg: DictConfig,
    samples_dir: Path,
    plan: Plan,
    part: dict[str, Any],
    dataset,
    device: torch.device | str = "cpu",
    metrics: dict[str, Metric] | None = None,
) -> tuple[Path, bool]:
    """Score this shard's samples and save its partial state; (folder, whether anything was written).

    Skipped (nothing rewritten) when a complete state of the same metric selection and items exists.
    """
    folder = partial_root(samples_dir, plan.run_id) / plan.tag
    settings = evaluate_settings(cfg)
    frames = scored_frames(settings, part)
    key = metrics_key(cfg, frames)
    items = [[e["video"], e["sample"]] for e in part["samples"]]
    state_path = folder / STATE
    if state_path.is_file():
        old = json.loads(state_path.read_text())
        if old.get("metrics_key") == key and old.get("items") == items:
            return folder, False
    remove_stale_temps(folder)  # a killed scorer's half-written states
    metrics = build_metrics(cfg) if metrics is None else metrics
    T = int(part["inference"]["video_length"])
    score_entries(
        samples_dir,
        part["samples"],
        dataset,
        metrics,
        frames,
        T,
        int(settings.batch_size),
        device,
        reference_side=False,
    )
    saved = {name: metric.save_state(folder, name) for name, metric in metrics.items()}
    state = {
        "metrics_key": key,
        "shard": plan.shard,
        "num_shards": plan.num_shards,
        "items": items,
        "metrics": saved,
    }
    write_json(state_path, state)  # last: marks the shard's state complete
    return folder, True


# ----------------------------------------------------------------------------- finaliser


def _states(root: Path, num_shards: int, key: str) -> tuple[dict[int, dict], list[int]]:
    states, missing = {}, []
    for k in range(num_shards):
        path = root / shard_tag(k, num_shards) / STATE
        try:
            state = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            missing.append(k)
            continue
        if state.get("metrics_key") != key:
            missing.append(k)  # scored with another metric selection: that shard must be rerun
        else:
            states[k] = state
    return states, missing


def _feed_reference(
    metric: DistributionMetric, dataset, videos: list[int], T: int, frames: range, batch_size: int, device
) -> None:
    """Reference statistics once (one call loads them when the metric has them cached)."""
    fed = clip_frames(metric, frames, T)
    cached = metric.reference_cached()
    for i in range(0, len(videos), batch_size):
        group = videos[:1] if cached else videos[i : i + batch_size]
        real = torch.stack([reference_clip(dataset, v, T) for v in group]).to(device)  # [B, T, C, H, W]
        metric.update_real(real[:, fed.start : fed.stop], video_index=group, frame_index=list(fed))
        if cached:
            break


def sample_stat_means(samples_dir: Path, entries: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each per-sample generator stat (`stats` of the merged manifest's entries, e.g. LARP's NLL of
    the sampled sequences) over the scored items; {} when the generator records none."""
    path = Path(samples_dir) / MANIFEST
    if not path.is_file():
        return {}
    recorded = {(e["video"], e["sample"]): e.get("stats") for e in json.loads(path.read_text())["samples"]}
    rows = [recorded.get((e["video"], e["sample"])) for e in entries]
    if not rows or any(r is None for r in rows):
        return {}  # a statistic of some samples only would be a misleading mean
    names = set.intersection(*(set(r) for r in rows))
    return {n: sum(float(r[n]) for r in rows) / len(rows) for n in sorted(names)}


def model_columns(model: dict[str, Any], stats: dict[str, float], run: dict[str, Any]) -> dict[str, Any]:
    """The extra fvd_report.csv columns a generator asks for (`report_columns` of its describe()), each from
    its fixed `report` values, else the mean per-sample stat of that name, else the run's value (`run`:
    num_samples, fvd, ...); a column none of them has is left empty."""
    fixed = model.get("report") or {}
    out = {}
    for col in model.get("report_columns") or ():
        out[col] = fixed[col] if col in fixed else stats[col] if col in stats else run.get(col)
    return out


def append_fvd_report(path: Path, row: dict[str, Any]) -> None:
    """Append one row to fvd_report.csv (header once), under a lock so concurrent writers don't interleave.

    Columns: CSV_COLUMNS, then a model's extra columns (`model_columns`) in the order first written; a row
    with columns the file lacks rewrites the file with the wider header (older rows get empty cells). A row
    equal to one already there in every column but `time` is not added again: a finaliser killed between its
    append and its `finalised.json` adds nothing when rerun.
    """
    path = Path(path)
    columns = [*CSV_COLUMNS, *(c for c in row if c not in CSV_COLUMNS)]
    values = {c: "" if row.get(c) is None else str(row.get(c)) for c in columns}  # as csv reads them back
    lock = path.with_name(path.name + ".lock")
    wait_lock(lock, CSV_LOCK_STALE_S)
    try:
        fresh = not path.is_file() or path.stat().st_size == 0
        old_rows: list[dict[str, str]] = []
        header = list(CSV_COLUMNS)
        if not fresh:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                old_rows = list(reader)
                header = list(reader.fieldnames or CSV_COLUMNS)
            if any(all((old.get(c) or "") == values[c] for c in columns if c != "time") for old in old_rows):
                return
        wider = [*header, *(c for c in columns if c not in header)]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=wider, restval="")
        if fresh or wider != header:
            writer.writeheader()
            writer.writerows(old_rows)
        writer.writerow(values)
        if fresh or wider == header:
            with open(path, "a", newline="") as f:
                f.write(buf.getvalue())  # one write: concurrent readers never see half a row
                f.flush()
        else:  # a wider header: the whole file, replaced at once
            write_text(path, buf.getvalue())
    finally:
        unlock(lock)


def finalise(
    cfg: DictConfig,
    samples_dir: Path,
    plan: Plan,
    header: dict[str, Any],
    dataset=None,
    device: torch.device | str = "cpu",
    metrics_factory: Callable[[], dict[str, Metric]] | None = None,
) -> dict[str, Any]:
    """Merge every shard's partial state into the run's metrics.json and one fvd_report.csv row, once.

    Returns {"status": "waiting" | "busy" | "done" | "finalised", ...}. Claims
    samples/partial/<run_id>/finalise.lock with O_EXCL; a lock whose local pid is gone, or older than
    `sample.lock_stale_s`, is broken (see `utils.locks.lock_is_stale`). finalised.json makes it idempotent.
    """
    samples_dir = Path(samples_dir)
    root = partial_root(samples_dir, plan.run_id)
    settings = evaluate_settings(cfg)
    frames = scored_frames(settings, header)
    key = metrics_key(cfg, frames)
    states, missing = _states(root, plan.num_shards, key)
    if missing:
        return {"status": "waiting", "missing": missing}
    done_path, lock = root / DONE, root / "finalise.lock"

    def finished() -> bool:
        try:
            done = json.loads(done_path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        return done.get("metrics_key") == key and done.get("num_shards") == plan.num_shards

    if finished():
        return {"status": "done"}
    if not try_lock(lock, float(cfg.sample.get("lock_stale_s", 3600))):
        return {"status": "busy"}
    try:
        if finished():  # another process finalised between our check and our claim
            return {"status": "done"}
        remove_stale_temps(root, cfg.sample.out_dir)  # a killed finaliser's half-written report
        metrics = (metrics_factory or (lambda: build_metrics(cfg)))()
        if dataset is None:
            dataset = reference_dataset(header, samples_dir / MANIFEST)
        T = int(header["inference"]["video_length"])
        entries = sorted(
            (
                {"file": f"sample_{v:04d}-{s}.npy", "video": v, "sample": s}
                for st in states.values()
                for v, s in st["items"]
            ),
            key=lambda e: (e["video"], e["sample"]),
        )
        videos = sorted({e["video"] for e in entries})
        modes = {}
        batch = int(settings.batch_size)
        for name, metric in metrics.items():
            parts = [
                (root / shard_tag(k, plan.num_shards), states[k]["metrics"][name])
                for k in range(plan.num_shards)
            ]
            if isinstance(metric, DistributionMetric):
                metric.set_reference_identity(reference_identity(header, videos, frames, metric))
                _feed_reference(metric, dataset, videos, T, frames, batch, device)
            if metric.merge_saved(parts):
                modes[name] = "merged"
            else:
                log.warning(
                    "%s: protocol caps/trials need arrival order: recomputing generated features", name
                )
                score_entries(
                    samples_dir,
                    entries,
                    dataset,
                    {name: metric},
                    frames,
                    T,
                    batch,
                    device,
                    reference_side=False,
                )
                modes[name] = "recomputed"
        results = {name: m.compute() for name, m in metrics.items()}
        baselines = baselines_for(settings, metrics, int(header["inference"]["obs_length"]))
        base = score_baselines(baselines, dataset, videos, frames, T, batch) if baselines else None
        out_dir = Path(cfg.sample.out_dir)
        extra = {
            **samples_extra(samples_dir, frames, header, len(entries)),
            "shards": {"run_id": plan.run_id, "num_shards": plan.num_shards, "finalised": modes},
        }
        means = sample_stat_means(samples_dir, entries)  # generator stats per sample, e.g. LARP's NLL
        if means:
            extra["sample_stats"] = {"mean": means, "num_samples": len(entries)}
        write_report(
            out_dir, results, metrics=metrics, provenance=provenance(device), extra=extra, baselines=base
        )
        print(format_table(results, base))
        fvd_name = next((n for n, m in metrics.items() if isinstance(m, DistributionMetric)), None)
        report = cfg.sample.get("fvd_report")
        if report:
            fvd = results.get(fvd_name, {}) if fvd_name else {}
            fvd_value = "" if fvd.get("value") is None else repr(fvd["value"])
            run = {"num_samples": len(entries), "fvd": fvd_value}
            append_fvd_report(
                Path(report),
                {
                    "time": datetime.now(UTC).isoformat(timespec="seconds"),
                    "run_name": cfg.get("run_name"),
                    "model": (header.get("model") or {}).get("class"),
                    "checkpoint": header.get("checkpoint"),
                    "dataset": header["dataset"].get("name") or header["dataset"].get("_target_"),
                    "fvd_protocol": fvd.get("protocol", ""),
                    "num_real": fvd.get("num_real", ""),
                    "num_generated": fvd.get("num_fake", len(entries)),
                    "fvd": fvd_value,
                    **model_columns(header.get("model") or {}, means, run),
                },
            )
        write_json(
            done_path,
            {"metrics_key": key, "num_shards": plan.num_shards, "metrics": str(out_dir / "metrics.json")},
        )
        return {"status": "finalised", "results": results, "modes": modes}
    finally:
        unlock(lock)
