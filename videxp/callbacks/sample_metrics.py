"""Validation by sampling: complete a few validation videos, log PSNR/SSIM and a preview grid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from videxp.inference.loop import complete_videos, resolve_inference
from videxp.metrics import PSNR, SSIM
from videxp.video import to_float, to_uint8, to_unit, write_grid

log = logging.getLogger(__name__)


class SampleMetrics(L.Callback):
    """At the end of each validation pass, sample `num_videos` validation videos with the configured
    inference strategy and log `val/psnr` and `val/ssim` (the best checkpoint is chosen on these)."""

    def __init__(
        self,
        num_videos: int = 4,
        inference: dict | DictConfig | None = None,
        drop_observed: bool = True,
        log_video: bool = True,
        fps: float = 8.0,
        seed: int = 0,
    ):
        if inference is None:
            raise ValueError(
                "SampleMetrics needs an inference config (name, video_length, obs_length, step_size)"
            )
        self.num_videos = num_videos
        self.inference = (
            OmegaConf.to_container(inference, resolve=True)
            if OmegaConf.is_config(inference)
            else dict(inference)
        )
        self.drop_observed = drop_observed
        self.log_video = log_video
        self.fps = fps
        self.seed = seed

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.num_videos <= 0:
            return
        datamodule = trainer.datamodule  # pixels even when training reads cached latents
        dataset = (
            datamodule.video_dataset("val")
            if hasattr(datamodule, "video_dataset")
            else datamodule.dataset("val")
        )
        n = min(self.num_videos, len(dataset))
        items = [dataset[i] for i in range(n)]
        videos = torch.stack([it["video"] for it in items]).to(pl_module.device)  # [N, T, C, H, W]
        cond = {k: [it[k] for it in items] for k in ("label", "prompt") if k in items[0]}
        generator = pl_module.generator()
        params = resolve_inference(self.inference, generator)
        samples = complete_videos(generator, videos, params, self.seed, list(range(n)), 0, cond)
        first = int(params["obs_length"]) if self.drop_observed else 0
        T = int(params["video_length"])
        # score what videxp-sample would write: uint8 frames
        pred = to_unit(to_float(to_uint8(samples[:, first:T].cpu())))  # [N, F, C, H, W] in [0, 1]
        real = to_unit(to_float(to_uint8(videos[:, first:T].cpu())))
        for name, metric in (("psnr", PSNR()), ("ssim", SSIM())):
            metric.update(
                pred,
                real,
                video_index=list(range(n)),
                sample_index=[0] * n,
                frame_index=list(range(first, T)),
            )
            pl_module.log(f"val/{name}", metric.compute()["value"], prog_bar=True, batch_size=n)
        if self.log_video:
            self._log_grid(trainer, videos[:, :T], samples)

    def _log_grid(self, trainer: L.Trainer, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Write <run>/val_samples/step_<n>.gif (rows: videos; columns: ground truth, sample) and hand the
        file to loggers that take videos (wandb), so no video encoder beyond ours is needed."""
        rows = [[r, f] for r, f in zip(to_uint8(real.cpu()), to_uint8(fake.cpu()), strict=True)]
        path = Path(trainer.default_root_dir) / "val_samples" / f"step_{trainer.global_step:07d}.gif"
        write_grid(path, rows, fps=self.fps)
        for logger in trainer.loggers:
            log_video: Any = getattr(logger, "log_video", None)
            if log_video is not None:
                log_video("val/samples", [str(path)], step=trainer.global_step, format=["gif"])
