"""videxp-train: fit a model with Lightning; rerunning the same run_name resumes from last.ckpt."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _instantiate_all(node: DictConfig | None) -> list:
    return [instantiate(c) for c in (node or {}).values() if c is not None and "_target_" in c]


def resume_checkpoint(cfg: DictConfig) -> tuple[str | None, str | None]:
    """(Lightning ckpt to resume from, other weights file to start from).

    The run's own checkpoints/last.ckpt wins (a rerun continues); else `ckpt_path`: a Lightning
    checkpoint resumes its full state, any other file (FDM's .pt) only initialises the weights.
    """
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        return str(last), None
    if cfg.ckpt_path is None:
        return None, None
    from videxp.models.loading import is_lightning_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(cfg.ckpt_path)
    return (str(path), None) if is_lightning_checkpoint(path) else (None, str(path))


def run(cfg: DictConfig) -> L.Trainer:
    """Train per `cfg`; returns the finished Trainer."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset)
    model = instantiate(cfg.model)
    resume, init_weights = resume_checkpoint(cfg)
    if init_weights is not None:
        log.info("initialising weights from %s", init_weights)
        model.load_weights(init_weights)
    if hasattr(model, "prepare_datamodule"):  # e.g. the interpolant model's cached latents
        datamodule = model.prepare_datamodule(datamodule)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=_instantiate_all(cfg.get("callbacks")),
        logger=_instantiate_all(cfg.get("logger")) or False,
    )
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    print(f"run: {cfg.paths.output_dir} (step {trainer.global_step})")
    return trainer


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
