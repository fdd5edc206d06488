"""The model-agnostic sampling loop: batches of videos, a strategy's index steps, a generator, files."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from videxp.errors import RunFolderError
from videxp.inference.adaptive import Embed
from videxp.inference.generator import Generator
from videxp.inference.schedule_plot import plot_schedule
from videxp.inference.shards import Plan, batch_blocks, plan_shard
from videxp.inference.strategies import SETTINGS, STRATEGIES, Step, build_strategy, schedule_for
from videxp.utils.io import remove_stale_temps, write_json, write_npy
from videxp.utils.locks import unlock, wait_lock
from videxp.utils.provenance import provenance
from videxp.utils.seeding import derive_seed
from videxp.video import to_uint8, write_filmstrip, write_grid, write_video

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTS = "manifest.parts"  # samples/manifest.parts/<run_id>/shard-<k>-of-<n>.json: one per shard
MERGE_LOCK_STALE_S = 120.0  # a manifest merge lock older than this (or of a dead local pid) is broken
SCHEDULE_PNG = "schedule.png"
__all__ = ["batch_blocks", "plan_sampling", "run_sampling", "sample_name", "MANIFEST"]
FORMAT = "videxp.samples/1"  # the samples manifest's format tag
SEED_RULE = "derive_seed(seed, video, sample, step)"  # how each sample's randomness is derived
IDENTITY = "identity.json"  # samples/identity.json: the settings identity, written before the first sample
# manifest entries that must agree before new samples join an existing folder
_IDENTITY_KEYS = ("dataset", "split", "inference", "model", "checkpoint", "checkpoint_sha256", "seed")
_SHOW_CHARS = 120  # a differing value longer than this is cut in error messages


def manifest_header(
    dataset: dict[str, Any], split: str, loaded: dict[str, Any], device: torch.device | str, **extra: Any
) -> dict[str, Any]:
    """The entries every samples manifest starts with: format, what was continued (`dataset`, `split`),
    the checkpoint (`loaded` as `build_generator` returns it: path or `random`, sha256, step, where the
    weights came from), the seed rule and the provenance; `extra` entries (e.g. `model`, merged into the
    generator's description) follow."""
    return {
        "format": FORMAT,
        "dataset": dataset,
        "split": split,
        "checkpoint": loaded.get("checkpoint"),
        "checkpoint_sha256": loaded.get("checkpoint_sha256"),
        "checkpoint_step": loaded.get("step"),
        "weights": loaded.get("weights"),
        "seed_rule": SEED_RULE,
        "provenance": provenance(device),
        **extra,
    }


def resolve_inference(params: dict[str, Any], generator: Generator) -> dict[str, Any]:
    """Fill `max_frames` from the generator; a requested value may only lower the generator's limit."""
    params = dict(params)
    limit = generator.capabilities.max_frames
    requested = params.get("max_frames")
    if requested is None:
        params["max_frames"] = limit
    elif int(requested) > limit:
        raise ValueError(f"inference.max_frames={requested} exceeds the generator's limit of {limit} frames")
    supported = generator.capabilities.strategies
    if supported is not None and params["name"] not in supported:
        raise ValueError(
            f"{type(generator).__name__} supports inference={list(supported)}, not {params['name']!r}"
        )
    return params


def plan_sampling(generator: Generator, inference: dict[str, Any]) -> tuple[dict[str, Any], list[Step]]:
    """Start a sampling run: the inference settings resolved against `generator`, and the strategy's whole
    schedule, computed once and handed to the generator (`Generator.accept_schedule`), which may reject it.

    Returns (resolved settings, steps). Take `generator.describe()` only after this: it may record the
    per-call plans the generator made from the schedule.
    """
    params = resolve_inference(inference, generator)
    steps = schedule_for(params)
    generator.accept_schedule(
        steps, video_length=int(params["video_length"]), obs_length=int(params["obs_length"])
    )
    return params, steps


def complete_videos(
    generator: Generator,
    videos: torch.Tensor,  # [B, T, C, H, W] in [-1, 1]: real videos; only the observed prefix is read
    params: dict[str, Any],
    seed: int,
    video_indices: Sequence[int],
    sample_index: int,
    cond: dict[str, Any] | None = None,
    steps: Sequence[Step] | None = None,
    embed: Embed | None = None,
) -> torch.Tensor:  # [B, T, C, H, W]: the observed prefix copied, every other frame generated
    """Run one inference strategy to completion for a batch of videos: its `steps` (from `plan_sampling`),
    or the schedule of the resolved settings `params`. FDM's adaptive schemes choose each video's context
    frames as they go, with `embed` (frames [N, C, H, W] in [-1, 1] -> [N, D], e.g. `LPIPS.embed`)."""
    T, n_obs = int(params["video_length"]), int(params["obs_length"])
    if videos.shape[1] < T:
        raise ValueError(f"videos have {videos.shape[1]} frames; inference.video_length is {T}")
    out = torch.zeros_like(videos[:, :T])
    out[:, :n_obs] = videos[:, :n_obs]
    if getattr(STRATEGIES[params["name"]], "adaptive", False):
        return _complete_adaptive(
            generator, out, params, seed, video_indices, sample_index, cond or {}, embed
        )
    if steps is None:
        steps = schedule_for(params)
    for step, (obs_idx, tgt_idx) in enumerate(steps):
        observed, target = list(obs_idx), list(tgt_idx)  # the generator gets its own lists
        seeds = [derive_seed(seed, v, sample_index, step) for v in video_indices]
        frames = generator.generate(out[:, observed], observed, target, cond or {}, seeds)
        if frames.shape != (out.shape[0], len(target), *out.shape[2:]):
            raise ValueError(f"generator returned {tuple(frames.shape)} for {len(target)} target frames")
        if not torch.isfinite(frames).all():
            raise ValueError(
                f"generator produced NaN/inf for videos {list(video_indices)}, step {step}: {target}"
            )
        out[:, target] = frames.to(out)
    return out


def _complete_adaptive(
    generator: Generator,
    out: torch.Tensor,  # [B, T, C, H, W]: the observed prefix filled in
    params: dict[str, Any],
    seed: int,
    video_indices: Sequence[int],
    sample_index: int,
    cond: dict[str, Any],
    embed: Embed | None,
) -> torch.Tensor:
    """An adaptive scheme: per step, each video's observed frames from its own frame embeddings; videos that
    chose the same frames share a generator call (per-video seeds, so grouping changes nothing)."""
    name = params["name"]
    if embed is None:
        raise ValueError(f"inference={name} chooses context frames by LPIPS distance and needs an embedder")
    strategy = build_strategy(name, **{k: int(params[k]) for k in SETTINGS})
    embedded: list[dict[int, torch.Tensor]] = [{} for _ in range(out.shape[0])]  # per video: frame -> [D]

    def embed_row(b: int, frames: list[int]) -> torch.Tensor:  # [n, D] of video b's (final) frames
        new = [f for f in dict.fromkeys(frames) if f not in embedded[b]]
        if new:
            for f, e in zip(new, embed(out[b, new]), strict=True):
                embedded[b][f] = e
        return torch.stack([embedded[b][f] for f in frames])

    for step, (always, target) in enumerate(strategy):
        rows = [
            strategy.choose(lambda f, b=b: embed_row(b, f)) if always else [] for b in range(out.shape[0])
        ]
        groups: dict[tuple[int, ...], list[int]] = {}
        for b, observed in enumerate(rows):
            groups.setdefault(tuple(observed), []).append(b)
        for observed, bs in groups.items():
            seeds = [derive_seed(seed, video_indices[b], sample_index, step) for b in bs]
            part = {k: [v[b] for b in bs] for k, v in cond.items()}
            frames = generator.generate(out[bs][:, list(observed)], list(observed), list(target), part, seeds)
            if not torch.isfinite(frames).all():
                raise ValueError(f"generator produced NaN/inf for videos {[video_indices[b] for b in bs]}")
            for row, b in enumerate(bs):
                out[b, target] = frames[row].to(out)  # [S, C, H, W]
    return out


def sample_name(video: int, sample: int) -> str:
    """FDM's file stem: sample_<video:04d>-<k>."""
    return f"sample_{video:04d}-{sample}"


def _complete(path: Path, shape: tuple[int, ...]) -> bool:
    if not path.is_file():
        return False
    try:
        return np.load(path, mmap_mode="r").shape == shape
    except (ValueError, OSError):
        return False


def check_manifest(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """The existing manifest (if any) after checking that it describes the same sampling settings."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    _require_same(path, old, _identity(new))
    return old


def _require_same(path: Path, old: dict[str, Any], ident: dict[str, Any]) -> None:
    """RunFolderError naming `path`, each differing setting (there vs now) and the fix, unless `old` has
    the identity keys of `ident`."""
    differ = [k for k in _IDENTITY_KEYS if old.get(k) != ident[k]]
    if differ:
        lines = [line for k in differ for line in _differences(k, old.get(k), ident[k])]
        raise RunFolderError(
            f"{path} holds samples made with different {', '.join(differ)} than this run ("
            + "; ".join(lines)
            + "). Samples of other settings must not share a folder: give this run a new run_name (or "
            "sample.out_dir), or delete the old samples to start over"
        )


def _differences(key: str, old: Any, new: Any) -> list[str]:
    """`key: <old> there, <new> now` lines; mappings are compared entry by entry."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [
            line
            for k in keys
            if old.get(k) != new.get(k)
            for line in _differences(f"{key}.{k}", old.get(k), new.get(k))
        ]
    return [f"{key}: {_short(old)} there, {_short(new)} now"]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def check_identity(samples_dir: Path, new: dict[str, Any]) -> None:
    """Before the first sample: samples/identity.json must hold the settings identity of `new` (written
    when absent). A folder with samples but neither identity.json nor a manifest is refused: the settings
    that made them are unknown (an interrupted run of an older videxp)."""
    path = samples_dir / IDENTITY
    ident = _identity(new)
    if path.is_file():
        _require_same(path, json.loads(path.read_text()), ident)
        return
    if not (samples_dir / MANIFEST).is_file() and any(samples_dir.glob("sample_*.npy")):
        raise RunFolderError(
            f"{samples_dir} holds samples but no {IDENTITY} or {MANIFEST}: the settings that made them are "
            "unknown; give this run a new run_name (or sample.out_dir), or delete that folder"
        )
    write_json(path, ident)


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    return json.loads(
        json.dumps({k: manifest.get(k) for k in _IDENTITY_KEYS}, default=str)
    )  # tuples -> lists


def check_parts(samples_dir: Path, new: dict[str, Any], plan: Plan) -> None:
    """Shard parts already in the folder must have the same settings and this run's shard layout."""
    ident = _identity(new)
    for path in sorted((samples_dir / PARTS).glob("*/shard-*.json")):
        old = json.loads(path.read_text())
        _require_same(path, old, ident)
        if path.parent.name == plan.run_id and old["shards"]["num_shards"] != plan.num_shards:
            raise ValueError(
                f"{path}: this item set was split into {old['shards']['num_shards']} shards before; "
                f"num_shards={plan.num_shards} would overlap those shards (use the same num_shards, "
                f"or delete {path.parent})"
            )


def _recorded_stats(samples_dir: Path, manifest: dict[str, Any], run_id: str) -> dict[str, dict[str, float]]:
    """Per-sample generator stats (`stats` of manifest entries) already recorded for this folder: of the
    manifest and of this run's shard parts, by file name."""
    found = {e["file"]: e["stats"] for e in manifest.get("samples", []) if "stats" in e}
    for part in sorted((samples_dir / PARTS / run_id).glob("shard-*.json")):
        try:
            entries = json.loads(part.read_text()).get("samples", [])
        except ValueError:
            continue  # a half-written part: rewritten by this run
        found.update({e["file"]: e["stats"] for e in entries if "stats" in e})
    return found


def _write_if_changed(path: Path, doc: dict[str, Any], same: Any) -> bool:
    """Write `doc` unless the file exists and `same(old_doc)` says it already holds it."""
    if path.is_file():
        try:
            if same(json.loads(path.read_text())):
                return False
        except ValueError:
            pass  # unreadable: rewrite
    write_json(path, doc)
    return True


def merge_manifest(samples_dir: Path, header: dict[str, Any]) -> dict[str, Any]:
    """samples/manifest.json = entries of the old manifest ∪ every shard part, under a lock (no races)."""
    lock = samples_dir / ".manifest.lock"
    wait_lock(lock, MERGE_LOCK_STALE_S)
    try:
        path = samples_dir / MANIFEST
        old = json.loads(path.read_text()) if path.is_file() else {}
        entries = {e["file"]: e for e in old.get("samples", [])}
        for part in sorted((samples_dir / PARTS).glob("*/shard-*.json")):
            entries.update({e["file"]: e for e in json.loads(part.read_text())["samples"]})
        merged = {**header, "samples": sorted(entries.values(), key=lambda e: (e["video"], e["sample"]))}
        _write_if_changed(path, merged, lambda o: o.get("samples") == merged["samples"])
        return merged
    finally:
        unlock(lock)


def run_sampling(
    generator: Generator,
    dataset: Dataset,
    *,
    inference: dict[str, Any],
    out_dir: str | Path,
    num_samples: int = 1,
    batch_size: int = 4,
    start_index: int = 0,
    stop_index: int | None = None,
    seed: int = 0,
    video_format: str = "gif",
    fps: float = 8.0,
    grid_videos: int = 4,
    manifest: dict[str, Any] | None = None,
    num_samples_total: int | None = None,
    num_shards: int = 1,
    shard: int = 0,
    schedule_png: bool = False,
    embed: Embed | None = None,
) -> dict[str, Any]:
    """Generate `num_samples` completions of videos [start_index, stop_index) of `dataset`.

    Writes samples/sample_<video:04d>-<k>.npy (uint8 [T, H, W, C], observed prefix included),
    videos/<same>.<video_format>, a ground truth vs samples grid, and samples/manifest.json.
    Complete samples already on disk are skipped, so an interrupted run continues where it stopped; the
    settings identity (samples/identity.json, written before the first sample) must match on every rerun.
    With `num_shards` > 1 only shard `shard` of the (video, sample) items is made (see `shards.plan_shard`);
    each shard writes samples/manifest.parts/<run_id>/shard-<k>-of-<n>.json and merges manifest.json
    under a lock, so shards may run concurrently on machines sharing the folder.

    The generator is handed the whole schedule once before the first batch (`plan_sampling`); the
    manifest's `model` entry is `generator.describe()` taken after that, updated with any `model` entries
    of `manifest`. With `schedule_png`, a picture of the schedule is written to <out_dir>/schedule.png
    (once).
    """
    out_dir = Path(out_dir)
    samples_dir, videos_dir = out_dir / "samples", out_dir / "videos"
    stop = len(dataset) if stop_index is None else min(int(stop_index), len(dataset))
    if not 0 <= start_index < stop:
        raise ValueError(f"empty video range [{start_index}, {stop}) of a split with {len(dataset)} videos")
    plan = plan_shard(start_index, stop, num_samples, batch_size, num_samples_total, num_shards, shard)
    params, steps = plan_sampling(generator, inference)
    manifest = dict(manifest or {})
    manifest["model"] = {**generator.describe(), **(manifest.get("model") or {})}
    manifest.update(inference=params, seed=seed, num_samples=num_samples)
    before = check_manifest(samples_dir / MANIFEST, manifest)
    check_parts(samples_dir, manifest, plan)
    old_stats = _recorded_stats(samples_dir, before, plan.run_id)  # of samples a killed run already wrote
    check_identity(samples_dir, manifest)
    # half-written files of a killed run of this shard
    remove_stale_temps(out_dir, samples_dir, videos_dir, samples_dir / PARTS / plan.run_id)

    T = int(params["video_length"])
    written = skipped = 0
    entries: dict[str, dict[str, Any]] = {}
    done: set[tuple[int, int]] = set()  # items written by this call
    cache: dict[int, dict[str, Any]] = {}  # the current block's dataset items
    for unit in tqdm(plan.mine, desc=f"sampling {plan.tag}", unit="batch"):
        missing = [v for v in unit.videos if v not in cache]
        if missing:
            cache = {v: dataset[v] for v in unit.videos}
        items = [cache[v] for v in unit.videos]
        videos = torch.stack([it["video"] for it in items])  # [B, T, C, H, W]
        shape = (T, videos.shape[3], videos.shape[4], videos.shape[2])
        cond = {c: [it[c] for it in items] for c in ("label", "prompt") if c in items[0]}
        k = unit.sample
        paths = [samples_dir / f"{sample_name(v, k)}.npy" for v in unit.videos]
        if all(_complete(p, shape) for p in paths):
            skipped += len(paths)
        else:
            generator.pop_stats()  # nothing of earlier calls (e.g. a sample callback) joins this batch
            out = complete_videos(generator, videos, params, seed, list(unit.videos), k, cond, steps, embed)
            stats = generator.pop_stats()  # {name: one value per row}
            for row, (v, path, video) in enumerate(zip(unit.videos, paths, to_uint8(out.cpu()), strict=True)):
                write_npy(path, video)  # video: [T, H, W, C]
                if stats:
                    old_stats[path.name] = {name: float(vals[row]) for name, vals in stats.items()}
                if video_format != "none":
                    write_video(videos_dir / f"{sample_name(v, k)}.{video_format}", video, fps=fps)
                done.add((v, k))
            written += len(paths)
        for v, path, it in zip(unit.videos, paths, items, strict=True):
            entries[path.name] = {"file": path.name, "video": v, "sample": k, "video_id": it["video_id"]}
            if path.name in old_stats:
                entries[path.name]["stats"] = old_stats[path.name]
    shards = {
        "run_id": plan.run_id,
        "shard": plan.shard,
        "num_shards": plan.num_shards,
        "start_index": plan.start,
        "stop_index": plan.stop,
        "num_samples_total": plan.total,
        "batch_size": plan.batch_size,
    }
    part = {**manifest, "shards": shards}
    part["samples"] = sorted(entries.values(), key=lambda e: (e["video"], e["sample"]))
    part_path = samples_dir / PARTS / plan.run_id / f"{plan.tag}.json"
    _write_if_changed(part_path, part, lambda o: o.get("samples") == part["samples"])
    merged = merge_manifest(samples_dir, manifest)
    if grid_videos and video_format != "none":
        grid = range(plan.start, min(plan.stop, plan.start + grid_videos))
        grid_items = [(v, k) for v in grid for k in range(num_samples)]
        have = {(e["video"], e["sample"]) for e in merged["samples"]}
        name = f"grid_{grid.start:04d}-{grid.stop - 1:04d}.{video_format}"
        if set(grid_items) <= have and (done & set(grid_items) or not (videos_dir / name).is_file()):
            _write_grid(dataset, samples_dir, videos_dir, grid, num_samples, T, video_format, fps)
    if schedule_png and not (out_dir / SCHEDULE_PNG).is_file():
        plot_schedule(steps, T, int(params["obs_length"]), out_dir / SCHEDULE_PNG)
    log.info(
        "sampling %s done: %d written, %d already complete, in %s", plan.tag, written, skipped, samples_dir
    )
    return {
        "written": written,
        "skipped": skipped,
        "samples_dir": str(samples_dir),
        "manifest": {**manifest, "samples": merged["samples"]},
        "part": part,
        "plan": plan,
    }


def _write_grid(
    dataset,
    samples_dir: Path,
    videos_dir: Path,
    videos: range,
    num_samples: int,
    T: int,
    video_format: str,
    fps: float,
) -> Path:
    """Rows = videos; columns = ground truth, then each sample. Beside it a still (.png): per video a row of
    ground-truth frames, then a row per sample, frames left to right."""
    rows = []
    for v in videos:
        real = to_uint8(dataset[v]["video"][:T])  # [T, H, W, C]
        rows.append([real] + [np.load(samples_dir / f"{sample_name(v, k)}.npy") for k in range(num_samples)])
    path = videos_dir / f"grid_{videos.start:04d}-{videos.stop - 1:04d}.{video_format}"
    write_grid(path, rows, fps=fps)
    scale = max(1, 96 // rows[0][0].shape[1])  # small frames are enlarged to about 96 pixels
    write_filmstrip(path.with_suffix(".png"), [v for row in rows for v in row], scale=scale)
    return path
