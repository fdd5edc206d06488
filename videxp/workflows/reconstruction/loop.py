"""The reconstruction run: every evaluation clip through the tokenizer, scored against itself, reported."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from videxp.errors import ConfigError
from videxp.inference.loop import MANIFEST, manifest_header, sample_name
from videxp.metrics.base import DistributionMetric, Metric
from videxp.metrics.report import format_table, write_report
from videxp.models.loading import device_from
from videxp.scoring.selection import build_metrics
from videxp.utils.io import write_json, write_npy
from videxp.utils.provenance import provenance
from videxp.video import to_uint8
from videxp.weights.files import parse_dtype
from videxp.workflows.reconstruction.chunks import chunk_folder, load_chunk, merge_chunks, run_key, save_chunk
from videxp.workflows.reconstruction.codec import reconstruct, vq_generators
from videxp.workflows.reconstruction.tokenizer import build_tokenizer, tokenizer_settings

DEFAULTS = {  # reconstruction.* (experiment/ucf101_larp_rfvd.yaml documents them)
    "split": "test",
    "start_index": 0,
    "stop_index": None,
    "batch_size": 8,
    "chunk_size": 256,
    "deterministic": None,
    "save_reconstructions": False,
    "out_dir": None,
}
RECON_DIR = "reconstructions"  # <out>/reconstructions: a samples folder (npy uint8 + manifest.json)


def reconstruction_settings(cfg: DictConfig) -> dict[str, Any]:
    """The `reconstruction` node over DEFAULTS (out_dir null = the run folder), checked."""
    own = OmegaConf.select(cfg, "reconstruction")
    own = OmegaConf.to_container(own, resolve=True) if own is not None else {}
    unknown = sorted(set(own) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown reconstruction.* keys {unknown}; known: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **own}
    for key in ("batch_size", "chunk_size"):
        if s[key] is not None and (not isinstance(s[key], int) or s[key] < 1):
            raise ConfigError(f"reconstruction.{key} must be an integer >= 1, got {s[key]!r}")
    s["out_dir"] = s["out_dir"] or cfg.paths.output_dir
    return s


def clip_batch(dataset: Any, videos: list[int]) -> torch.Tensor:
    """The evaluation clips of `videos` in [0, 1]: [B, T, C, H, W]."""
    return torch.stack([dataset[v]["video"] for v in videos]).add_(1.0).mul_(0.5)


def score_chunk(
    tokenizer,
    dataset,
    videos: list[int],
    metrics: Mapping[str, Metric],
    s: dict,
    tok: dict,
    seed: int,
    device,
) -> dict[str, Any]:
    """Reconstruct and score one chunk of videos (distribution metrics: the reconstructed side only);
    returns per-video MSE over all pixels (LARP's PSNR averages -10·log10 of it over videos)."""
    mse: dict[str, float] = {}
    recon_dir = Path(s["out_dir"]) / RECON_DIR
    for i in range(0, len(videos), s["batch_size"]):
        group = videos[i : i + s["batch_size"]]
        real = clip_batch(dataset, group).to(device)  # [B, T, C, H, W]
        gens = None if tok["deterministic"] else vq_generators(seed, group, device)
        fake, _ = reconstruct(tokenizer, real, gens, parse_dtype(tok["dtype"]))  # [B, T, C, H, W]
        index = {"video_index": group, "sample_index": [0] * len(group)}
        for metric in metrics.values():
            if isinstance(metric, DistributionMetric):
                metric.update_fake(fake, **index)
            else:
                metric.update(fake, real, **index)
        per_video = (fake - real).double().pow(2).mean(dim=(1, 2, 3, 4))  # [B]
        mse.update({str(v): float(m) for v, m in zip(group, per_video, strict=True)})
        if s["save_reconstructions"]:
            for v, clip in zip(group, fake, strict=True):
                write_npy(recon_dir / f"{sample_name(v, 0)}.npy", to_uint8(clip * 2 - 1))  # [T, H, W, C]
    return {"mse": mse}


def feed_reference(
    metrics: Mapping[str, Metric], dataset, videos: list[int], identity: dict, batch: int, device
):
    """The clips as the reference side of every distribution metric (cached statistics: one call)."""
    for metric in metrics.values():
        if not isinstance(metric, DistributionMetric):
            continue
        metric.set_reference_identity(identity)
        cached = metric.reference_cached()
        for i in range(0, len(videos), batch):
            group = videos[:1] if cached else videos[i : i + batch]
            metric.update_real(clip_batch(dataset, group).to(device), video_index=group)
            if cached:
                break


def run_reconstruction(cfg: DictConfig, metrics: Mapping[str, Metric] | None = None) -> dict[str, dict]:
    """Reconstruct every evaluation clip of `dataset` / `reconstruction.split` with the LARP tokenizer and
    score the reconstructions against the clips; metrics.json into `reconstruction.out_dir`. Resumable:
    chunks scored before (same metrics, data, tokenizer, seed) are merged, not recomputed."""
    s, tok = reconstruction_settings(cfg), tokenizer_settings(cfg)
    device, seed, out = device_from(cfg.device), int(cfg.seed), Path(s["out_dir"])
    built = build_metrics(cfg, metrics)  # missing metric weights fail before any clip is read
    dataset_doc = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset = instantiate(cfg.dataset).dataset(s["split"], evaluation=True)
    stop = len(dataset) if s["stop_index"] is None else min(len(dataset), int(s["stop_index"]))
    videos = list(range(int(s["start_index"]), stop))
    if not videos:
        raise ConfigError(
            f"no clips in [{s['start_index']}, {stop}) of split {s['split']!r} ({len(dataset)})"
        )
    tokenizer = build_tokenizer(tok, seed, device)
    doc = {"metric": OmegaConf.to_container(cfg.metric, resolve=True), "dataset": dataset_doc}
    key = run_key({**doc, "split": s["split"], "tokenizer": tok, "seed": seed})
    size = s["chunk_size"] or len(videos)
    parts, done = [], 0
    for a in range(0, len(videos), size):
        chunk = videos[a : a + size]
        folder = chunk_folder(out, key, chunk[0], chunk[-1] + 1)
        state = load_chunk(folder)
        recon_dir = out / RECON_DIR
        if s["save_reconstructions"] and any(
            not (recon_dir / f"{sample_name(v, 0)}.npy").is_file() for v in chunk
        ):
            state = None  # scored before without saving its reconstructions
        if state is None:
            for metric in built.values():
                metric.reset()
            extra = score_chunk(tokenizer, dataset, chunk, built, s, tok, seed, device)
            state = save_chunk(folder, built, {"videos": [chunk[0], chunk[-1] + 1], **extra})
        else:
            done += len(chunk)
        parts.append((folder, state))
    if done:
        print(f"reconstruction: {done} clips merged from chunks scored before ({out / 'partial' / key})")
    merge_chunks(built, parts)
    identity = {"dataset": dataset_doc, "split": s["split"], "videos": videos, "video_length": None}
    identity["video_length"] = int(dataset[videos[0]]["video"].shape[0])
    feed_reference(built, dataset, videos, identity, s["batch_size"], device)
    results = {name: m.compute() for name, m in built.items()}
    mse = np.array([m for _, st in parts for m in st["mse"].values()], np.float64)
    extra = {
        "reconstruction": {
            "split": s["split"],
            "videos": [videos[0], videos[-1] + 1],
            "num_videos": len(videos),
            "tokenizer": tok,
            "mse": float(mse.mean()),  # LARP's mse: mean over videos of the per-video pixel MSE
            "psnr_per_video": float(np.mean(-10 * np.log10(np.maximum(mse, 1e-10)))),  # LARP's psnr_val
        }
    }
    if s["save_reconstructions"]:
        write_manifest(
            out / RECON_DIR, dataset_doc, s["split"], tok, device, videos, identity["video_length"]
        )
    write_report(out, results, metrics=built, provenance=provenance(device), extra=extra)
    print(format_table(results))
    print(f"metrics: {out / 'metrics.json'}")
    return results


def write_manifest(
    folder: Path, dataset_doc, split: str, tok: dict, device, videos: list[int], T: int
) -> None:
    """Make the saved reconstructions a samples folder (`videxp-evaluate eval_dir=<out>/reconstructions`)."""
    loaded = {"checkpoint": tok["pretrained"] or "random", "weights": tok}
    header = manifest_header(dataset_doc, split, loaded, device, model={"tokenizer": tok})
    header["inference"] = {"name": "reconstruction", "video_length": T, "obs_length": 0}
    header["samples"] = [
        {"file": f"{sample_name(v, 0)}.npy", "video": v, "sample": 0, "video_id": str(v)} for v in videos
    ]
    write_json(folder / MANIFEST, header)
