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

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from videxp.inference.shards import Plan, shard_tag, try_lock, unlock, wait_lock
from videxp.metrics.base import FrameMetric, Metric
from videxp.metrics.baselines import baselines_for, score_baselines
from videxp.metrics.frechet import FeatureStats
from videxp.metrics.report import format_table, write_report
from videxp.utils.io import atomic_path, write_json
from videxp.utils.provenance import provenance
from videxp.video import read_video, to_float, to_unit

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


def is_distribution(metric: Metric) -> bool:
    return hasattr(metric, "update_real") and hasattr(metric, "update_fake")


def build_metrics(cfg: DictConfig) -> dict[str, Metric]:
    """`cfg.metric` instantiated as videxp-evaluate does (FVD detector weights loaded now)."""
    from videxp.evaluate import build_metrics as build  # evaluate imports this package: import late

    return build(cfg)


def metrics_key(cfg: DictConfig, frames: range) -> str:
    """Identity of the metric selection and scored frames: partial states of another selection are stale."""
    doc = {"metric": OmegaConf.to_container(cfg.metric, resolve=True), "frames": [frames.start, frames.stop]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scored_range(cfg: DictConfig, header: dict[str, Any]) -> range:
    from videxp.evaluate import scored_frames

    return scored_frames(cfg.evaluate, header)


def _reference(dataset, video: int, T: int) -> torch.Tensor:  # [T, C, H, W] in [0, 1]
    return to_unit(dataset[video]["video"][:T])


def score_entries(
    samples_dir: Path,
    entries: list[dict[str, Any]],
    dataset,
    metrics: dict[str, Metric],
    frames: range,
    T: int,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> None:
    """Frame metrics: update(pred, real); distribution metrics: generated side only (update_fake)."""
    reference: dict[int, torch.Tensor] = {}  # the last video's clip: samples of one video are consecutive
    for i in range(0, len(entries), batch_size):
        group = entries[i : i + batch_size]
        preds, reals = [], []
        for e in group:
            path = samples_dir / e["file"]
            video = read_video(path)  # [T, H, W, C] uint8
            if video.shape[0] != T:
                raise ValueError(f"{path}: {video.shape[0]} frames, the manifest says video_length={T}")
            preds.append(to_float(video))
            if any(not is_distribution(m) for m in metrics.values()):
                if e["video"] not in reference:
                    reference = {e["video"]: _reference(dataset, e["video"], T)}
                reals.append(reference[e["video"]])
        full_pred = to_unit(torch.stack(preds)).to(device)  # [B, T, C, H, W] in [0, 1]
        full_real = torch.stack(reals).to(device) if reals else None
        vids, samples = [e["video"] for e in group], [e["sample"] for e in group]
        for metric in metrics.values():
            full = getattr(metric, "wants_full_video", False)
            sl = slice(None) if full else slice(frames.start, frames.stop)
            frame_index = list(range(T)) if full else list(frames)
            if is_distribution(metric):
                metric.update_fake(
                    full_pred[:, sl], video_index=vids, sample_index=samples, frame_index=frame_index
                )
            else:
                metric.update(
                    full_pred[:, sl],
                    full_real[:, sl],
                    video_index=vids,
                    sample_index=samples,
                    frame_index=frame_index,
                )


# ----------------------------------------------------------------------------- partial states


def partial_root(samples_dir: Path, run_id: str) -> Path:
    return Path(samples_dir) / PARTIAL / run_id


def _save_frame_metric(path: Path, metric: FrameMetric) -> None:
    """Per-frame values as float64 groups (rows sharing one frame list), atomically."""
    groups: dict[tuple[int, ...], list] = {}
    for video, sample, frame, values in metric._chunks:  # video [B], sample [B], frame [F], values [B, F]
        groups.setdefault(tuple(frame.tolist()), []).append((video, sample, values))
    arrays = {}
    for g, (frame, chunks) in enumerate(groups.items()):
        arrays[f"g{g}_frame"] = np.asarray(frame, np.int64)
        arrays[f"g{g}_video"] = np.concatenate([c[0] for c in chunks]).astype(np.int64)
        arrays[f"g{g}_sample"] = np.concatenate([c[1] for c in chunks]).astype(np.int64)
        arrays[f"g{g}_values"] = np.concatenate([c[2] for c in chunks]).astype(np.float64)  # [R, F]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, groups=np.int64(len(groups)), **arrays)


def _load_frame_metric(path: Path, metric: FrameMetric) -> None:
    """Add the values saved by `_save_frame_metric` to `metric` (as `FrameMetric.merge` would)."""
    if not path.is_file():
        raise FileNotFoundError(f"partial metric state missing: {path}")
    with np.load(path, allow_pickle=False) as z:
        for g in range(int(z["groups"])):
            metric._chunks.append((z[f"g{g}_video"], z[f"g{g}_sample"], z[f"g{g}_frame"], z[f"g{g}_values"]))
    metric._table_cache = None


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
    frames = scored_range(cfg, part)
    key = metrics_key(cfg, frames)
    items = [[e["video"], e["sample"]] for e in part["samples"]]
    state_path = folder / STATE
    if state_path.is_file():
        old = json.loads(state_path.read_text())
        if old.get("metrics_key") == key and old.get("items") == items:
            return folder, False
    metrics = build_metrics(cfg) if metrics is None else metrics
    T = int(part["inference"]["video_length"])
    score_entries(
        samples_dir, part["samples"], dataset, metrics, frames, T, int(cfg.evaluate.batch_size), device
    )
    saved: dict[str, Any] = {}
    for name, metric in metrics.items():
        if isinstance(metric, FrameMetric):
            _save_frame_metric(folder / f"{name}.npz", metric)
            saved[name] = {"kind": "frame", "file": f"{name}.npz"}
        elif is_distribution(metric):
            files = {}
            for k, stats in metric.fake_stats.items():
                stats.save(folder / f"{name}.fake-{k}.npz")
                files[str(k)] = f"{name}.fake-{k}.npz"
            saved[name] = {
                "kind": "distribution",
                "files": files,
                "skipped": metric._fake_skipped,
                "scored_frames": [list(f) for f in sorted(metric._scored_frames["fake"])],
            }
        else:
            raise ValueError(
                f"metric {name!r} ({type(metric).__name__}) has no partial state; use sample.finalise=false"
            )
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


def _merge_fvd(metric, name: str, root: Path, num_shards: int, states: dict[int, dict]) -> bool:
    """Load the merged generated-side statistics into `metric`; False if the protocol's per-trial
    capacity or arrival-order rules make merged sums differ from an unsharded run (then recompute)."""
    merged: dict[int, FeatureStats] = {}
    skipped = 0
    frames: set[tuple[int, ...]] = set()
    for k in range(num_shards):
        info = states[k]["metrics"][name]
        skipped += info["skipped"]
        frames |= {tuple(f) for f in info["scored_frames"]}
        folder = root / shard_tag(k, num_shards)
        for key, file in info["files"].items():
            merged.setdefault(int(key), FeatureStats()).merge(FeatureStats.load(folder / file))
    p = metric.protocol
    counts = {k: s.count for k, s in merged.items()}
    exact = skipped == 0 and all(n <= p["num_fake"] for n in counts.values())
    if not p["per_sample"]:
        exact = exact and p["trials"] == 1 and set(counts) <= {0}
    if not exact:
        return False
    metric._fake = merged
    metric._fake_count = sum(counts.values()) if not p["per_sample"] else 0
    metric._scored_frames["fake"] = frames
    return True


def _feed_reference(
    metric, dataset, videos: list[int], T: int, frames: range, batch_size: int, device
) -> None:
    """Reference statistics once (loaded from the FVD cache when present)."""
    full = getattr(metric, "wants_full_video", False)
    sl = slice(None) if full else slice(frames.start, frames.stop)
    frame_index = list(range(T)) if full else list(frames)
    paths = [metric.cache_path(t) for t in range(metric.protocol["trials"])] if metric.use_cache else [None]
    cached = all(p is not None and p.is_file() for p in paths)
    for i in range(0, len(videos), batch_size):
        group = videos[:1] if cached else videos[i : i + batch_size]  # a hit: one call loads the cache
        real = torch.stack([_reference(dataset, v, T) for v in group]).to(device)  # [B, T, C, H, W]
        metric.update_real(real[:, sl], video_index=group, frame_index=frame_index)
        if cached:
            break


def append_fvd_report(path: Path, row: dict[str, Any]) -> None:
    """Append one row to fvd_report.csv (header once), under a lock so concurrent writers don't interleave."""
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    wait_lock(lock, CSV_LOCK_STALE_S)
    try:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
        if not path.is_file() or path.stat().st_size == 0:
            writer.writeheader()
        writer.writerow({c: row.get(c, "") for c in CSV_COLUMNS})
        with open(path, "a", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
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
    `sample.lock_stale_s`, is broken (see `shards.lock_is_stale`). finalised.json makes it idempotent.
    """
    samples_dir = Path(samples_dir)
    root = partial_root(samples_dir, plan.run_id)
    frames = scored_range(cfg, header)
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
        metrics = (metrics_factory or (lambda: build_metrics(cfg)))()
        if dataset is None:
            dataset = instantiate(OmegaConf.create(header["dataset"])).dataset(header["split"])
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
        batch = int(cfg.evaluate.batch_size)
        for name, metric in metrics.items():
            if isinstance(metric, FrameMetric):
                for k in range(plan.num_shards):
                    _load_frame_metric(root / shard_tag(k, plan.num_shards) / f"{name}.npz", metric)
                modes[name] = "merged"
                continue
            metric.set_reference_identity(
                {
                    "dataset": header["dataset"],
                    "split": header["split"],
                    "videos": videos,
                    "video_length": T,
                    "frames": [0, T]
                    if getattr(metric, "wants_full_video", False)
                    else [frames.start, frames.stop],
                }
            )
            _feed_reference(metric, dataset, videos, T, frames, batch, device)
            if _merge_fvd(metric, name, root, plan.num_shards, states):
                modes[name] = "merged"
            else:
                log.warning(
                    "%s: protocol caps/trials need arrival order: recomputing generated features", name
                )
                score_entries(samples_dir, entries, dataset, {name: metric}, frames, T, batch, device)
                modes[name] = "recomputed"
        results = {name: m.compute() for name, m in metrics.items()}
        baselines = baselines_for(cfg.evaluate, metrics, int(header["inference"]["obs_length"]))
        base = score_baselines(baselines, dataset, videos, frames, T, batch) if baselines else None
        out_dir = Path(cfg.sample.out_dir)
        extra = {
            "eval_dir": str(samples_dir.resolve()),
            "scored_frames": [frames.start, frames.stop],
            "num_files": len(entries),
            "inference": header["inference"],
            "checkpoint": header.get("checkpoint"),
            "shards": {"run_id": plan.run_id, "num_shards": plan.num_shards, "finalised": modes},
        }
        write_report(
            out_dir, results, metrics=metrics, provenance=provenance(device), extra=extra, baselines=base
        )
        print(format_table(results, base))
        fvd_name = next((n for n, m in metrics.items() if is_distribution(m)), None)
        report = cfg.sample.get("fvd_report")
        if report:
            fvd = results.get(fvd_name, {}) if fvd_name else {}
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
                    "fvd": "" if fvd.get("value") is None else repr(fvd["value"]),
                },
            )
        write_json(
            done_path,
            {"metrics_key": key, "num_shards": plan.num_shards, "metrics": str(out_dir / "metrics.json")},
        )
        return {"status": "finalised", "results": results, "modes": modes}
    finally:
        unlock(lock)
