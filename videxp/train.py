"""videxp-train: fit a model with Lightning; rerunning the same run_name resumes from last.ckpt."""

from __future__ import annotations

import logging
import os

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from videxp import help as _help  # noqa: F401 - registers the --help template resolver
from videxp.models.resume import resume_checkpoint
from videxp.utils import wandb_run
from videxp.utils.cli import reports_errors
from videxp.utils.config_check import check_config
from videxp.utils.io import ensure_writable, remove_stale_temps

log = logging.getLogger(__name__)


def _instantiate_all(node: DictConfig | None) -> list:
    return [instantiate(c) for c in (node or {}).values() if c is not None and "_target_" in c]


def _loggers(cfg: DictConfig) -> list:
    """The configured loggers; a WandbLogger gets an id derived from the run folder (utils/wandb_run.py)."""
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        if node is None or "_target_" not in node:
            continue
        loggers.append(instantiate(wandb_run.prepare(node, cfg, key) if wandb_run.is_wandb(node) else node))
    return loggers


def _callbacks(cfg: DictConfig, has_logger: bool) -> list:
    """The configured callbacks; LearningRateMonitor is dropped when no logger would receive the rate."""
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if not has_logger and any(isinstance(c, LearningRateMonitor) for c in callbacks):
        log.info("no logger configured: learning rate not monitored")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def _plugins(cfg: DictConfig) -> dict:
    """Under the submitit SLURM launcher, submitit requeues (USR2): Lightning's own SLURM requeue is off."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return {}
    configured = list(instantiate(cfg.trainer.plugins)) if cfg.trainer.get("plugins") else []
    return {"plugins": [*configured, SLURMEnvironment(auto_requeue=False)]}


def run(cfg: DictConfig) -> L.Trainer:
    """Train per `cfg`; returns the finished Trainer (bad config values, an unwritable run folder: refused
    first)."""
    check_config(cfg)
    out = ensure_writable(cfg.paths.output_dir, "paths.output_dir")
    remove_stale_temps(out, out / "checkpoints", out / "val_samples")  # a killed run's half-written files
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset)
    model = instantiate(cfg.model)
    resume, init_weights = resume_checkpoint(cfg.paths.output_dir, cfg.ckpt_path)
    if init_weights is not None:
        log.info("initialising weights from %s", init_weights)
        model.load_weights(init_weights)
    if hasattr(model, "prepare_datamodule"):  # e.g. the interpolant model's cached latents
        datamodule = model.prepare_datamodule(datamodule)
    loggers = _loggers(cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=_callbacks(cfg, bool(loggers)),
        logger=loggers or False,
        **_plugins(cfg),
    )
    if resume:
        log.info("resuming from %s", resume)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    finally:
        wandb_run.finish()
    print(f"run: {cfg.paths.output_dir} (step {trainer.global_step})")
    return trainer


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@reports_errors("videxp-train")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
