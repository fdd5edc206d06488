"""wandb run identity: an id derived from the run folder, so reruns and requeued jobs continue one run."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

MODES = ("online", "offline", "disabled")


def is_wandb(node: DictConfig) -> bool:
    """Whether a logger config instantiates Lightning's WandbLogger."""
    return str(node.get("_target_", "")).endswith("WandbLogger")


def run_id(output_dir: str | Path) -> str:
    """A stable wandb run id (16 hex chars) for a run folder: the same folder always gives the same id."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]


def _job_name(run_name: str) -> str:
    """run_name, or for a job of a Hydra sweep its overrides (`model=wan,steps=10`; else <run_name>/<job>)."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        job = HydraConfig.get().job
        return str(job.get("override_dirname") or f"{run_name}/{job.num}")
    return run_name


def prepare(node: DictConfig, cfg: DictConfig, key: str = "wandb") -> DictConfig:
    """A copy of the WandbLogger config `logger.<key>`: id and name filled in, settings checked."""
    where = f"logger.{key} (conf/logger/wandb.yaml)"
    if importlib.util.find_spec("wandb") is None:
        raise ModuleNotFoundError(
            f"{where} needs the wandb package: pip install 'wandb>=0.19.7' moviepy imageio, or use logger=csv"
        )
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    mode = node.get("mode", "online")
    if mode not in MODES:
        raise ValueError(f"{where}: mode={mode!r}; expected one of {', '.join(MODES)}")
    if mode == "offline" and node.get("log_model"):
        raise ValueError(f"{where}: log_model needs mode=online (offline runs cannot upload checkpoints)")
    with open_dict(node):
        if node.get("id") is None:
            node.id = run_id(cfg.paths.output_dir)
        if node.get("name") is None:
            node.name = _job_name(str(cfg.run_name))
    return node


def finish() -> None:
    """Close the active wandb run, if any (the next job of a sweep in this process starts its own)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
