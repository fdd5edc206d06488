"""videxp-evaluate: score a samples folder against its reference clips, or two video folders."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from videxp.inference.loop import MANIFEST
from videxp.metrics import Metric, format_table, write_report
from videxp.metrics.baselines import baselines_for
from videxp.metrics.folders import folder_identity, list_videos, pair_folders
from videxp.models.loading import device_from
from videxp.utils.io import write_json
from videxp.utils.provenance import provenance
from videxp.video import read_video, to_float, to_unit

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


def evaluation_config(cfg: DictConfig, **top: Any) -> DictConfig:
    """A copy of `cfg` for evaluating from another entry point: the `evaluate` keys it lacks come from
    evaluate.yaml, and `top` sets top-level keys (`eval_dir=`, `real_dir=`, `evaluate={...}` merged)."""
    out = copy.deepcopy(cfg)
    defaults = OmegaConf.load(Path(__file__).parent / "conf" / "evaluate.yaml")
    with open_dict(out):
        for key in ("eval_dir", "real_dir", "fake_dir"):
            out[key] = None
        out.evaluate = OmegaConf.merge(defaults.evaluate, out.get("evaluate") or {}, top.pop("evaluate", {}))
        for key, value in top.items():
            out[key] = value
    return out


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


# metrics that join the default selection when their weights are already in the cache
AUTO_METRIC_WEIGHTS = {"fvd": "i3d_pretrained_400", "lpips": "alexnet"}


def metrics_chosen_explicitly() -> bool:
    """Whether this Hydra run's command line chose the metrics (metric=..., +metric=...)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return True  # composed in Python: take cfg.metric as it is
    keys = {o.lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task}
    return any(k == "metric" or k.startswith("metric/") for k in keys)


def add_cached_metrics(cfg: DictConfig) -> list[str]:
    """With the default selection, add fvd / lpips when their weights are in the cache (never download).

    An explicitly selected metric whose weights are missing is an error at instantiation instead.
    """
    from videxp.weights import WEIGHTS

    added = []
    for name in cfg.evaluate.get("auto_metrics") or []:
        if name in cfg.metric or not WEIGHTS[AUTO_METRIC_WEIGHTS[name]].path.is_file():
            continue
        node = OmegaConf.load(Path(__file__).parent / "conf" / "metric" / f"{name}.yaml")
        with open_dict(cfg):
            cfg.metric[name] = node
        added.append(name)
    if added:
        log.info("weights found in the cache: also computing %s", ", ".join(added))
    return added


def build_metrics(cfg: DictConfig, metrics: dict[str, Metric] | None = None) -> dict[str, Metric]:
    """`cfg.metric` instantiated (or the given objects, reset), detector weights loaded now."""
    if metrics is None and not metrics_chosen_explicitly():
        add_cached_metrics(cfg)
    built = (
        metrics if metrics is not None else {n: instantiate(node) for n, node in (cfg.metric or {}).items()}
    )
    if not built:
        raise ValueError("no metric selected; e.g. metric=[psnr,ssim]")
    for metric in built.values():
        if metrics is not None:
            metric.reset()  # the same objects may score several runs (benchmark methods)
        if hasattr(metric, "detector"):
            metric.detector  # noqa: B018 - load weights now: a missing file fails before any video is read
    return built


def _is_distribution(metric: Metric) -> bool:
    """Distribution metrics (FVD) take reference and generated videos separately (no pairing needed)."""
    return hasattr(metric, "update_real") and hasattr(metric, "update_fake")


def run(cfg: DictConfig, metrics: dict[str, Metric] | None = None) -> dict[str, dict]:
    """Evaluate with every metric in `cfg.metric` (or the given `metrics` objects); returns {name: result}.

    Two modes, exactly one of which must be given: `eval_dir=` (a samples folder of videxp-sample, scored
    against the dataset clips its manifest names) or `real_dir=` + `fake_dir=` (two video folders).
    """
    eval_dir, real_dir, fake_dir = cfg.get("eval_dir"), cfg.get("real_dir"), cfg.get("fake_dir")
    if cfg.get("benchmark") is not None and eval_dir is None and real_dir is None and fake_dir is None:
        from videxp.benchmark.summary import evaluate_benchmark  # experiment=i2v_benchmark: every method

        return evaluate_benchmark(cfg, lambda: build_metrics(cfg, metrics))
    if (eval_dir is not None) == (real_dir is not None or fake_dir is not None):
        raise ValueError(
            "give exactly one input mode: eval_dir=<samples folder> or real_dir=<folder> fake_dir=<folder> "
            f"(got eval_dir={eval_dir}, real_dir={real_dir}, fake_dir={fake_dir})"
        )
    if eval_dir is None and (real_dir is None or fake_dir is None):
        raise ValueError(f"folder mode needs both real_dir and fake_dir (got {real_dir}, {fake_dir})")
    if eval_dir is not None:
        return run_samples(cfg, build_metrics(cfg, metrics))
    return run_folders(cfg, build_metrics(cfg, metrics))


def run_samples(
    cfg: DictConfig, metrics: dict[str, Metric], extra: dict[str, Any] | None = None
) -> dict[str, dict]:
    """Score `cfg.eval_dir` (samples + manifest) against the reference clips of its dataset; `extra` keys
    go into metrics.json as they are."""
    eval_dir = Path(cfg.eval_dir)
    manifest = load_manifest(eval_dir)
    frames = scored_frames(cfg.evaluate, manifest)
    device = device_from(cfg.device)
    dataset = instantiate(OmegaConf.create(manifest["dataset"])).dataset(manifest["split"])
    T = int(manifest["inference"]["video_length"])
    baselines = baselines_for(cfg.evaluate, metrics, int(manifest["inference"]["obs_length"]))
    for metric in metrics.values():
        if hasattr(metric, "set_reference_identity"):
            metric.set_reference_identity(
                {
                    "dataset": manifest["dataset"],
                    "split": manifest["split"],
                    "videos": sorted({int(e["video"]) for e in manifest["samples"]}),
                    "video_length": T,
                    "frames": [0, T]
                    if getattr(metric, "wants_full_video", False)
                    else [frames.start, frames.stop],
                }
            )
    reference: dict[int, torch.Tensor] = {}  # the last video's clip: samples of one video are consecutive
    for group in _batches(manifest["samples"], cfg.evaluate.batch_size):
        preds, reals = [], []
        for e in group:
            path = eval_dir / e["file"]
            video = read_video(path)  # [T, H, W, C] uint8
            if e["video"] not in reference:  # decode/generate each reference clip once, not once per sample
                reference = {e["video"]: dataset[e["video"]]["video"][:T]}  # [T, C, H, W] in [-1, 1]
            real = reference[e["video"]]
            if video.shape[0] != T or tuple(video.shape[1:3]) != tuple(real.shape[2:]):
                raise ValueError(
                    f"{path}: shape {video.shape} does not match the reference clip {tuple(real.shape)}"
                )
            preds.append(to_float(video))
            reals.append(real)
        full_pred = to_unit(torch.stack(preds)).to(device)  # [B, T, C, H, W]
        full_real = to_unit(torch.stack(reals)).to(device)
        pred = full_pred[:, frames.start : frames.stop]  # [B, F, C, H, W]
        real = full_real[:, frames.start : frames.stop]
        if baselines is not None:
            baselines.update(full_real, [e["video"] for e in group], frames)
        for metric in metrics.values():
            full = getattr(metric, "wants_full_video", False)
            metric.update(
                full_pred if full else pred,
                full_real if full else real,
                video_index=[e["video"] for e in group],
                sample_index=[e["sample"] for e in group],
                frame_index=list(range(T)) if full else list(frames),
            )
    results = {name: m.compute() for name, m in metrics.items()}
    base = baselines.compute() if baselines is not None else None
    extra = {
        "eval_dir": str(eval_dir.resolve()),
        "scored_frames": [frames.start, frames.stop],
        "num_files": len(manifest["samples"]),
        "inference": manifest["inference"],
        "checkpoint": manifest.get("checkpoint"),
        **(extra or {}),
    }
    out_dir = Path(cfg.evaluate.out_dir)
    write_report(
        out_dir, results, metrics=metrics, provenance=provenance(device), extra=extra, baselines=base
    )
    print(format_table(results, base))
    print(f"metrics: {out_dir / 'metrics.json'}")
    return results


def _folder_frames(cfg_eval: DictConfig, t: int, path: Path) -> range:
    """Frames [first_frame, last_frame) of a folder video (default: all of them)."""
    first = cfg_eval.first_frame if cfg_eval.first_frame is not None else 0
    last = cfg_eval.last_frame if cfg_eval.last_frame is not None else t
    if not 0 <= first < last <= t:
        raise ValueError(f"{path}: scored frames [{first}, {last}) are not inside its {t} frames")
    return range(first, last)


class _ClipBatcher:
    """Buffers decoded clips of one side of `run_folders` and feeds them as batches of one shape.

    Clips (uint8 [T, H, W, 3]) are grouped by shape; at most `size` are held in all (memory stays bounded
    whatever the folder size): when the buffer is full the largest group is fed. The first clip of each
    new shape is fed alone, so a shape error (e.g. too few frames for the protocol) names just its file.
    """

    def __init__(self, feed: Callable[[torch.Tensor, list[int]], None], size: int, side: str) -> None:
        if size < 1:
            raise ValueError(f"evaluate.batch_size must be >= 1, got {size}")
        self.feed, self.size, self.side = feed, size, side
        self.groups: dict[tuple[int, ...], list[tuple[np.ndarray, int, Path]]] = {}
        self.shapes: set[tuple[int, ...]] = set()

    def add(self, clip: np.ndarray, index: int, path: Path) -> None:
        """Queue one clip uint8 [T, H, W, 3] (video index, file); feeds a batch when one is due."""
        shape = tuple(clip.shape)
        self.groups.setdefault(shape, []).append((clip, index, path))
        if shape not in self.shapes:  # probe: a new shape goes alone
            self.shapes.add(shape)
            self._flush(shape)
        elif sum(len(g) for g in self.groups.values()) >= self.size:
            self._flush(max(self.groups, key=lambda k: len(self.groups[k])))

    def flush_all(self) -> None:
        """Feed every queued clip."""
        for shape in list(self.groups):
            self._flush(shape)

    def _flush(self, shape: tuple[int, ...]) -> None:
        items = self.groups.pop(shape, [])
        if not items:
            return
        batch = to_float(np.stack([c for c, _, _ in items]))  # [B, T, C, H, W] in [-1, 1]
        batch.add_(1.0).mul_(0.5)  # [0, 1] in place (= to_unit without another copy)
        try:
            self.feed(batch, [i for _, i, _ in items])
        except ValueError as e:
            if len(items) == 1:
                raise
            files = ", ".join(str(p) for _, _, p in items)
            raise ValueError(f"{e} (while scoring {self.side} batch of {len(items)}: {files})") from e


def run_folders(
    cfg: DictConfig, metrics: dict[str, Metric], extra: dict[str, Any] | None = None
) -> dict[str, dict]:
    """Score `cfg.fake_dir` against `cfg.real_dir`; `extra` keys go into metrics.json as they are.

    Frame metrics (PSNR, SSIM, ...) need both folders to hold the same ids (relative stems) with frames of
    equal size, and equal lengths unless `evaluate.last_frame` is set (then frames [first_frame, last_frame)
    of each pair are scored, which both must hold); distribution metrics (FVD) take the two sets
    separately, so counts may differ. With FVD a flat `fvd.json` (workflow W1 fields) is written beside
    `metrics.json`.
    """
    real_dir, fake_dir = Path(cfg.real_dir), Path(cfg.fake_dir)
    device = device_from(cfg.device)
    dist = {n: m for n, m in metrics.items() if _is_distribution(m)}
    paired = {n: m for n, m in metrics.items() if n not in dist}
    reals, fakes = list_videos(real_dir), list_videos(fake_dir)
    real_ids = {vid: i for i, vid in enumerate(reals)}
    fake_ids = {vid: i for i, vid in enumerate(fakes)}
    for metric in dist.values():
        if hasattr(metric, "set_reference_identity"):
            metric.set_reference_identity(folder_identity(real_dir, reals))
        if hasattr(metric, "video_labels"):  # error messages name the files
            metric.video_labels["reference"].update({i: str(reals[v]) for v, i in real_ids.items()})
            metric.video_labels["generated"].update({i: str(fakes[v]) for v, i in fake_ids.items()})

    def feed_real(batch: torch.Tensor, ids: list[int]) -> None:
        """Reference clips [B, T, C, H, W] in [0, 1] → every distribution metric."""
        batch = batch.to(device)
        for metric in dist.values():
            metric.update_real(batch, video_index=ids)

    def feed_fake(batch: torch.Tensor, ids: list[int]) -> None:
        """Generated clips [B, T, C, H, W] in [0, 1] → every distribution metric."""
        batch = batch.to(device)
        for metric in dist.values():
            metric.update_fake(batch, video_index=ids, sample_index=[0] * len(ids))

    size = int(cfg.evaluate.batch_size)
    real_batches = _ClipBatcher(feed_real, size, "reference")
    fake_batches = _ClipBatcher(feed_fake, size, "generated")

    scored: set[tuple[int, int]] = set()
    if paired:
        for vid, rpath, fpath in pair_folders(real_dir, fake_dir):
            real_u8, fake_u8 = read_video(rpath), read_video(fpath)  # [T, H, W, 3] uint8
            explicit = cfg.evaluate.last_frame is not None
            if real_u8.shape[1:] != fake_u8.shape[1:] or (real_u8.shape != fake_u8.shape and not explicit):
                raise ValueError(
                    f"paired videos differ in shape: {rpath} {real_u8.shape} vs {fpath} {fake_u8.shape} "
                    "(frame metrics need equal frame sizes, and equal lengths unless evaluate.last_frame is "
                    "set)"
                )
            real = to_unit(to_float(real_u8))  # [T, C, H, W] in [0, 1]
            fake = to_unit(to_float(fake_u8))
            frames = _folder_frames(cfg.evaluate, min(real.shape[0], fake.shape[0]), rpath)
            scored.add((frames.start, frames.stop))
            for metric in paired.values():
                metric.update(
                    fake[None, frames.start : frames.stop].to(device),  # [1, F, C, H, W]
                    real[None, frames.start : frames.stop].to(device),
                    video_index=[real_ids[vid]],
                    sample_index=[0],
                    frame_index=list(frames),
                )
            if dist:
                real_batches.add(real_u8, real_ids[vid], rpath)
                fake_batches.add(fake_u8, fake_ids[vid], fpath)
    else:
        for vid, path in reals.items():
            real_batches.add(read_video(path), real_ids[vid], path)
        for vid, path in fakes.items():
            fake_batches.add(read_video(path), fake_ids[vid], path)
    real_batches.flush_all()
    fake_batches.flush_all()

    results = {name: m.compute() for name, m in metrics.items()}
    extra = {
        "real_dir": str(real_dir.resolve()),
        "fake_dir": str(fake_dir.resolve()),
        "num_real_files": len(reals),
        "num_fake_files": len(fakes),
        "scored_frames": sorted(scored)[0] if len(scored) == 1 else [list(s) for s in sorted(scored)],
        **(extra or {}),
    }
    out_dir = Path(cfg.evaluate.out_dir)
    write_report(out_dir, results, metrics=metrics, provenance=provenance(device), extra=extra)
    fvd_name = "fvd" if "fvd" in dist else next(iter(dist), None)
    if fvd_name is not None:  # workflow W1's flat fvd.json
        res = results[fvd_name]
        write_json(
            out_dir / "fvd.json",
            {
                "fvd": res["value"],
                "num_real_videos": res.get("num_real"),
                "num_generated_videos": res.get("num_fake"),
                "real_features_shape": res.get("real_features_shape"),
                "generated_features_shape": res.get("generated_features_shape"),
                "real_videos_dir": str(real_dir.resolve()),
                "generated_videos_dir": str(fake_dir.resolve()),
                "protocol": res.get("protocol"),
            },
        )
    print(format_table(results))
    print(f"metrics: {out_dir / 'metrics.json'}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
