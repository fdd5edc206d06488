"""videxp-evaluate: score a samples folder against the reference clips its manifest names."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from videxp.inference.loop import MANIFEST
from videxp.metrics import format_table, write_report
from videxp.models.loading import device_from
from videxp.utils.provenance import provenance
from videxp.video import read_video, to_float

log = logging.getLogger(__name__)


def load_manifest(eval_dir: Path) -> dict[str, Any]:
    path = eval_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{eval_dir} has no {MANIFEST}; point eval_dir at a samples/ folder of videxp-sample"
        )
    manifest = json.loads(path.read_text())
    if not manifest.get("samples"):
        raise ValueError(f"{path} lists no samples")
    return manifest


def scored_frames(cfg_eval: DictConfig, manifest: dict[str, Any]) -> range:
    """Which frames are scored: [first_frame, last_frame) if given, else the generated frames (or all)."""
    T = int(manifest["inference"]["video_length"])
    n_obs = int(manifest["inference"]["obs_length"])
    first = (
        cfg_eval.first_frame if cfg_eval.first_frame is not None else (n_obs if cfg_eval.drop_observed else 0)
    )
    last = cfg_eval.last_frame if cfg_eval.last_frame is not None else T
    if not 0 <= first < last <= T:
        raise ValueError(f"scored frames [{first}, {last}) are not inside the {T}-frame videos")
    return range(first, last)


def _batches(entries: list[dict], size: int) -> Iterator[list[dict]]:
    for i in range(0, len(entries), size):
        yield entries[i : i + size]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1]."""
    return (x + 1.0) / 2.0


def run(cfg: DictConfig) -> dict[str, dict]:
    """Evaluate `cfg.eval_dir` with every metric in `cfg.metric`; returns {metric name: result}."""
    eval_dir = Path(cfg.eval_dir)
    manifest = load_manifest(eval_dir)
    frames = scored_frames(cfg.evaluate, manifest)
    device = device_from(cfg.device)
    dataset = instantiate(OmegaConf.create(manifest["dataset"])).dataset(manifest["split"])
    metrics = {name: instantiate(node) for name, node in (cfg.metric or {}).items()}
    if not metrics:
        raise ValueError("no metric selected; e.g. metric=[psnr,ssim]")
    T = int(manifest["inference"]["video_length"])
    for group in _batches(manifest["samples"], cfg.evaluate.batch_size):
        preds, reals = [], []
        for e in group:
            path = eval_dir / e["file"]
            video = read_video(path)  # [T, H, W, C] uint8
            real = dataset[e["video"]]["video"][:T]  # [T, C, H, W] in [-1, 1]
            if video.shape[0] != T or tuple(video.shape[1:3]) != tuple(real.shape[2:]):
                raise ValueError(
                    f"{path}: shape {video.shape} does not match the reference clip {tuple(real.shape)}"
                )
            preds.append(to_float(video))
            reals.append(real)
        pred = to_unit(torch.stack(preds)[:, frames.start : frames.stop]).to(device)  # [B, F, C, H, W]
        real = to_unit(torch.stack(reals)[:, frames.start : frames.stop]).to(device)
        for metric in metrics.values():
            metric.update(
                pred,
                real,
                video_index=[e["video"] for e in group],
                sample_index=[e["sample"] for e in group],
                frame_index=list(frames),
            )
    results = {name: m.compute() for name, m in metrics.items()}
    extra = {
        "eval_dir": str(eval_dir.resolve()),
        "scored_frames": [frames.start, frames.stop],
        "num_files": len(manifest["samples"]),
        "inference": manifest["inference"],
        "checkpoint": manifest.get("checkpoint"),
    }
    out_dir = Path(cfg.evaluate.out_dir)
    write_report(out_dir, results, metrics=metrics, provenance=provenance(device), extra=extra)
    print(format_table(results))
    print(f"metrics: {out_dir / 'metrics.json'}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
