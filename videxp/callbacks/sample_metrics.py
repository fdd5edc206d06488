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
from videxp.metrics.baselines import BASELINES, Baselines
from videxp.metrics.distributed import gather_frame_metric
from videxp.scoring.samples import update_metrics
from videxp.video import to_float, to_uint8, to_unit, write_grid

log = logging.getLogger(__name__)


class SampleMetrics(L.Callback):
    """At the end of each validation pass, sample `num_videos` validation videos with the configured
    inference strategy and log `val/psnr` and `val/ssim` (the best checkpoint is chosen on these).

    With observed frames, the trivial predictors of `baselines` are scored on the same frames and logged
    beside them as `val/<metric>_<baseline>` (e.g. `val/psnr_repeat_last`, `val/ssim_blank`; blank = black).
    """

    def __init__(
        self,
        num_videos: int = 4,
        inference: dict | DictConfig | None = None,
        drop_observed: bool = True,
        log_video: bool = True,
        fps: float = 8.0,
        seed: int = 0,
        baselines: list[str] | tuple[str, ...] = BASELINES,
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
        self.baselines = list(baselines or [])

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
        # DDP: rank r samples videos r, r + W, r + 2W, ... (seeds are per video, so each video gets the
        # sample it gets in one process); the frame scores are merged over ranks before reducing.
        mine = list(range(trainer.global_rank, n, trainer.world_size))
        generator = pl_module.generator()
        params = resolve_inference(self.inference, generator)
        first = int(params["obs_length"]) if self.drop_observed else 0
        T = int(params["video_length"])
        frames = range(first, T)
        metrics = {"psnr": PSNR(), "ssim": SSIM()}
        n_obs = int(params["obs_length"])
        base = Baselines(metrics, n_obs, self.baselines) if self.baselines and n_obs > 0 else None
        if mine:  # a rank may have none when num_videos < world size; it still joins the merge
            items = [dataset[i] for i in mine]
            videos = torch.stack([it["video"] for it in items]).to(pl_module.device)  # [n_r, T, C, H, W]
            cond = {k: [it[k] for it in items] for k in ("label", "prompt") if k in items[0]}
            samples = complete_videos(generator, videos, params, self.seed, mine, 0, cond)
            # score what videxp-sample would write: uint8 frames
            pred = to_unit(to_float(to_uint8(samples[:, :T].cpu())))  # [n_r, T, C, H, W] in [0, 1]
            real = to_unit(to_float(to_uint8(videos[:, :T].cpu())))  # [n_r, T, C, H, W]
            if base is not None:
                base.update(real, mine, frames)
            update_metrics(metrics, pred, real, frames, mine, [0] * len(mine))
        for name, metric in metrics.items():
            value = gather_frame_metric(metric).compute()["value"]  # same float on every rank
            # sync_dist with max: the value is already identical on all ranks, so max returns it exactly
            # (a mean could round) and Lightning sees a synced epoch metric (ModelCheckpoint on all ranks)
            pl_module.log(f"val/{name}", value, prog_bar=True, batch_size=n, sync_dist=True, reduce_fx="max")
        for baseline, scored in (base.metrics if base is not None else {}).items():
            for name, metric in scored.items():
                value = gather_frame_metric(metric).compute()["value"]
                pl_module.log(f"val/{name}_{baseline}", value, batch_size=n, sync_dist=True, reduce_fx="max")
        if self.log_video and trainer.is_global_zero and mine:  # rank 0 previews its own share of the videos
            self._log_grid(trainer, videos[:, :T], samples)

    def _log_grid(self, trainer: L.Trainer, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Write <run>/val_samples/step_<n>.gif (rows: videos; columns: ground truth, sample) and log the grid
        to wandb as `val/samples`: a `wandb.Video` of the uint8 frames at `fps` (our GIF without moviepy)."""
        rows = [[r, f] for r, f in zip(to_uint8(real.cpu()), to_uint8(fake.cpu()), strict=True)]
        path = Path(trainer.default_root_dir) / "val_samples" / f"step_{trainer.global_step:07d}.gif"
        grid = write_grid(path, rows, fps=self.fps)  # uint8 [T, H, W, 3]
        runs: list[Any] = [lg.experiment for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]
        if not runs:
            return
        import wandb  # deferred: only with a wandb logger (heavy import)

        try:  # wandb encodes raw frames with moviepy (wandb[media])
            video = wandb.Video(grid.transpose(0, 3, 1, 2), fps=self.fps, format="gif")  # [T, C, H, W]
        except wandb.Error as err:
            log.info("wandb.Video from frames failed (%s); logging %s instead", err, path)
            video = wandb.Video(str(path), format="gif")  # already encoded at self.fps
        for run in runs:
            run.log({"val/samples": video, "trainer/global_step": trainer.global_step})
