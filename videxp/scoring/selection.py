"""What scores a run: the selected metrics (plus cached auto-metrics), the evaluate settings, the scored
frames and the reference identity that FVD caches under."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from videxp.metrics.base import DistributionMetric, Metric
from videxp.weights.registry import WEIGHTS

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _auto_weight(name: str) -> str:
    """The registered weight an auto-added metric needs: LPIPS's AlexNet, or the default FVD protocol's
    own detector (conf/metric/fvd.yaml)."""
    if name == "lpips":
        return "alexnet"
    node = OmegaConf.load(CONF_DIR / "metric" / "fvd.yaml")
    return str(node.detector or node.protocols[node.protocol].detector)


def evaluate_settings(cfg: DictConfig, **overrides: Any) -> DictConfig:
    """The `evaluate` node of `cfg` over evaluate.yaml's defaults, with `overrides` on top (e.g. out_dir).

    Other entry points (videxp-sample's finaliser, the workflows) score with the same settings as
    videxp-evaluate even when their own config lacks a key.
    """
    defaults = OmegaConf.load(CONF_DIR / "evaluate.yaml").evaluate
    del defaults["out_dir"]  # where a report goes is each caller's own setting
    own = cfg.get("evaluate")
    own = (
        OmegaConf.to_container(own, resolve=True) if own is not None else {}
    )  # interpolations need cfg's root
    return OmegaConf.merge(defaults, own, overrides)


def metrics_chosen_explicitly() -> bool:
    """Whether this Hydra run's command line chose the metrics (metric=..., +metric=...)."""
    if not HydraConfig.initialized():
        return True  # composed in Python: take cfg.metric as it is
    keys = {o.lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task}
    return any(k == "metric" or k.startswith("metric/") for k in keys)


def add_cached_metrics(cfg: DictConfig) -> list[str]:
    """With the default selection, add fvd / lpips when their weights are in the cache (never download).

    An explicitly selected metric whose weights are missing is an error at instantiation instead.
    """
    added = []
    for name in cfg.evaluate.get("auto_metrics") or []:
        if name in cfg.metric or not WEIGHTS[_auto_weight(name)].path.is_file():
            continue
        node = OmegaConf.load(CONF_DIR / "metric" / f"{name}.yaml")
        with open_dict(cfg):
            cfg.metric[name] = node
        added.append(name)
    if added:
        log.info("weights found in the cache: also computing %s", ", ".join(added))
    return added


def build_metrics(cfg: DictConfig, metrics: Mapping[str, Metric] | None = None) -> dict[str, Metric]:
    """`cfg.metric` instantiated (or the given objects, reset), each one's weights loaded now."""
    if metrics is None and not metrics_chosen_explicitly():
        add_cached_metrics(cfg)
    if metrics is not None:
        built = dict(metrics)
        for metric in built.values():
            metric.reset()  # the same objects may score several runs (benchmark methods)
    else:
        # a node without _target_ holds an experiment's settings for a metric the command line left out
        # (experiment=kth_srvp metric=[psnr] keeps ssim: {reduction: best}): not a metric to build
        built = {n: instantiate(node) for n, node in (cfg.metric or {}).items() if "_target_" in node}
    if not built:
        raise ValueError("no metric selected; e.g. metric=[psnr,ssim]")
    for metric in built.values():
        metric.prepare()  # a missing weights file fails before any video is read
    return built


def scored_frames(settings: DictConfig, manifest: Mapping[str, Any]) -> range:
    """Frames of a samples folder to score: [first_frame, last_frame) if given, else the generated
    frames (all frames when `drop_observed` is off)."""
    T = int(manifest["inference"]["video_length"])
    n_obs = int(manifest["inference"]["obs_length"])
    first = (
        settings.first_frame if settings.first_frame is not None else (n_obs if settings.drop_observed else 0)
    )
    last = settings.last_frame if settings.last_frame is not None else T
    if not 0 <= first < last <= T:
        raise ValueError(f"scored frames [{first}, {last}) are not inside the {T}-frame videos")
    return range(first, last)


def folder_frames(settings: DictConfig, t: int, path: Path) -> range:
    """Frames [first_frame, last_frame) of a folder video of `t` frames (default: all of them)."""
    first = settings.first_frame if settings.first_frame is not None else 0
    last = settings.last_frame if settings.last_frame is not None else t
    if not 0 <= first < last <= t:
        raise ValueError(f"{path}: scored frames [{first}, {last}) are not inside its {t} frames")
    return range(first, last)


def clip_frames(metric: Metric, frames: range, T: int) -> range:
    """The frames `metric` is fed: the whole clip if it wants it (FVD with context), else the scored ones."""
    return range(0, T) if metric.wants_full_video else frames


def reference_identity(
    header: Mapping[str, Any], videos: Sequence[int], frames: range, metric: DistributionMetric
) -> dict[str, Any]:
    """Identity of the reference clips a samples folder is scored against (FVD caches their statistics
    under it): dataset config, split, video ids and the frames the metric sees."""
    T = int(header["inference"]["video_length"])
    fed = clip_frames(metric, frames, T)
    return {
        "dataset": header["dataset"],
        "split": header["split"],
        "videos": sorted({int(v) for v in videos}),
        "video_length": T,
        "frames": [fed.start, fed.stop],
    }
