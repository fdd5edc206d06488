"""Stage 1 as a LightningModule: train (or fine-tune) a VQ autoencoder on video frames, taming-style."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from videxp.callbacks.sample_metrics import SampleMetrics
from videxp.models.interpolant.ae_losses import AutoencoderLoss
from videxp.models.interpolant.checkpoints import (
    build_autoencoder,
    find_prefixed,
    load_autoencoder,
    read_state_dict,
)
from videxp.models.interpolant.schedules import lr_schedule
from videxp.utils.io import atomic_path
from videxp.utils.seeding import derive_seed, torch_generator

log = logging.getLogger(__name__)

DISC_PREFIX = "loss.discriminator."  # where taming's Lightning files keep the discriminator
VAL_SEED_KEY = 1_000_003  # validation frames derive from (seed, this, batch index): the same every pass


def pick_frames(videos: torch.Tensor, frames_per_clip: int, g: torch.Generator) -> torch.Tensor:
    """`frames_per_clip` distinct random frames of each clip of videos [B, T, C, H, W] -> [B * k, C, H, W]."""
    B, T = videos.shape[:2]
    k = min(frames_per_clip, T)
    order = torch.rand(B, T, generator=g).argsort(dim=1)[:, :k].to(videos.device)  # [B, k] distinct frames
    picked = torch.gather(videos, 1, order[:, :, None, None, None].expand(-1, -1, *videos.shape[2:]))
    return picked.flatten(0, 1)  # [B * k, C, H, W]


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean PSNR (dB) of images in [-1, 1] measured on [0, 1]: [N, C, H, W] pairs -> scalar."""
    mse = ((x.clamp(-1, 1) - y.clamp(-1, 1)) / 2).square().flatten(1).mean(1)  # [N]
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()


class AutoencoderModule(L.LightningModule):
    """Trains a `LatentAutoencoder` (taming VQGAN or RIVER's VQVAE) with taming's stage-1 recipe.

    Each training batch of clips ``batch["video"]`` [B, T, C, H, W] gives `frames_per_clip` random
    frames per clip (drawn from (seed, global_step), so a resumed run draws the same frames) as an image
    batch. Manual optimisation with two Adam optimisers (taming: betas (0.5, 0.9), lr = base_lr ×
    images per step when `optim.scale_lr`): the autoencoder every batch, the PatchGAN discriminator
    from `loss.disc_start` on. Lightning counts both optimisers' steps in `global_step`, so
    `trainer.max_steps` is one per batch before disc_start and two per batch after it; disc_start itself
    counts batches exactly as in taming (only the autoencoder steps before it). The discriminator update
    reuses this step's reconstructions (detached); taming recomputes them after the autoencoder step.

    Initial weights: `ckpt` (a taming `.ckpt`, RIVER `vqvae.pth` / `model.pth`, or our export) is
    loaded when fitting starts unless Lightning resumes a checkpoint; a taming file's
    ``loss.discriminator.*`` is loaded too when `load_discriminator`. `export_autoencoder` writes the
    file RIVER reads. Validation logs `val/rec_loss` and `val/psnr` (reconstruction PSNR, which the
    default best checkpoint monitors); the video-sampling validation callback is switched off (see
    `configure_callbacks`).
    """

    automatic_optimization = False

    def __init__(
        self,
        kind: str = "vqgan",
        preset: str = "f8_small",
        ckpt: str | None = None,
        sha256: str | None = None,
        ae: dict | None = None,
        loss: dict | None = None,
        optim: dict | None = None,
        schedule: dict | None = None,
        frames_per_clip: int = 4,
        batch_size: int | None = None,
        load_discriminator: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        if frames_per_clip < 1:
            raise ValueError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
        self.kind = kind
        self.ae = build_autoencoder(kind, preset, **(ae or {}))
        self.loss = AutoencoderLoss(**(loss or {}))
        self.optim = {"lr": 4.5e-6, "scale_lr": True, "betas": (0.5, 0.9), **(optim or {})}
        self.schedule = {"name": "constant", "warmup_steps": 0, "total_steps": 1, **(schedule or {})}
        self.frames_per_clip = int(frames_per_clip)
        self.batch_size = batch_size
        self.seed = int(seed)

    # ----------------------------------------------------------------- weights
    def load_weights(self, path: str | os.PathLike, sha256: str | None = None) -> None:
        """Load a released autoencoder file into `ae` (and taming's discriminator, when present and asked).

        Also the hook `videxp-train ckpt_path=<non-Lightning file>` calls. Returns None (no step is known).
        """
        info = load_autoencoder(self.ae, path, sha256)
        log.info(
            "autoencoder weights from %s (prefix %r, %d tensors)", path, info["prefix"], info["num_keys"]
        )
        if self.hparams.get("load_discriminator", True):
            self._load_discriminator(path)
        return None

    def _load_discriminator(self, path: str | os.PathLike) -> bool:
        """Load ``loss.discriminator.*`` from a taming-style file if it holds a fitting one."""
        state = read_state_dict(path)
        target = self.loss.discriminator.state_dict()
        try:
            _, sub = find_prefixed(state, (DISC_PREFIX,), target.keys(), "discriminator", path)
        except ValueError:
            log.info("%s holds no discriminator; it starts from random weights", path)
            return False
        if any(sub[k].shape != v.shape for k, v in target.items()):
            log.warning("%s: its discriminator has other shapes (disc settings differ); not loaded", path)
            return False
        self.loss.discriminator.load_state_dict(sub, strict=True)
        log.info("discriminator weights from %s", path)
        return True

    def on_fit_start(self) -> None:
        """Fitting from scratch (not resuming a Lightning checkpoint): load the initial weights from `ckpt`.

        Runs after Lightning restored a resumed checkpoint (so `trainer.ckpt_path` tells the two apart)
        and after the optimisers exist; loading copies into the existing parameters in place.
        """
        if self.hparams.ckpt is not None and self.trainer.ckpt_path is None:
            self.load_weights(self.hparams.ckpt, self.hparams.sha256)

    def export_autoencoder(self, path: str | os.PathLike) -> Path:
        """Write the autoencoder in the released format RIVER's loaders read, atomically.

        vqgan: taming's Lightning layout ``{"state_dict": {<ae keys>, "loss.discriminator.*"}}`` (RIVER
        loads it with strict=False). vqvae: ``{"model": {"module." + key: tensor}}`` as RIVER's
        `vqvae.pth` (its loader expects the DDP prefix).
        """
        ae_state = {k: v.detach().cpu().clone() for k, v in self.ae.state_dict().items()}
        if self.kind == "vqgan":
            disc = {
                DISC_PREFIX + k: v.detach().cpu().clone()
                for k, v in self.loss.discriminator.state_dict().items()
            }
            payload: dict[str, Any] = {
                "state_dict": {**ae_state, **disc},
                "global_step": int(self.global_step),
            }
        elif self.kind == "vqvae":
            payload = {"model": {"module." + k: v for k, v in ae_state.items()}}
        else:
            raise ValueError(f"export_autoencoder: no released format known for kind {self.kind!r}")
        path = Path(path).expanduser()
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    # ----------------------------------------------------------------- training
    def images(self, batch: dict[str, Any], g: torch.Generator) -> torch.Tensor:
        """The image batch [B * k, C, H, W] in [-1, 1] of a clip batch."""
        videos = batch["video"]
        if videos.ndim != 5:
            raise ValueError(f"batch['video'] must be [B, T, C, H, W], got shape {list(videos.shape)}")
        return pick_frames(videos, self.frames_per_clip, g)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        step = self.global_step  # optimizer steps so far = batches so far until the discriminator starts
        x = self.images(batch, torch_generator(derive_seed(self.seed, step)))  # [N, C, H, W]
        out = self.ae(x)
        last = self.ae.last_layer_weight() if self.loss.disc_active(step) else None
        self.toggle_optimizer(opt_g)  # the discriminator gets no gradients from the autoencoder loss
        g_loss, logs = self.loss.generator_loss(x, out.recon, out.quantized.loss, step, last_layer=last)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.lr_schedulers().step()  # the autoencoder's learning rate, per batch
        self.untoggle_optimizer(opt_g)
        if self.loss.disc_active(step):
            self.toggle_optimizer(opt_d)
            d_loss, d_logs = self.loss.discriminator_loss(x, out.recon.detach(), step)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
            self.untoggle_optimizer(opt_d)
            logs |= d_logs
        else:
            logs["d_loss"] = g_loss.new_zeros(())
        self.log("train/rec_loss", logs.pop("rec_loss"), prog_bar=True, batch_size=x.shape[0])
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=x.shape[0])

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = self.images(batch, torch_generator(derive_seed(self.seed, VAL_SEED_KEY, batch_idx)))
        out = self.ae(x)
        rec_loss = self.loss.pixel_loss(x, out.recon).mean()
        logs = {
            "rec_loss": rec_loss,
            "p_loss": self.loss.perceptual_loss(x, out.recon).mean(),
            "vq_loss": out.quantized.loss.mean(),
            "psnr": psnr(out.recon, x),
        }
        self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=x.shape[0])
        return rec_loss

    def learning_rate(self) -> float:
        """lr, or base lr × images per optimiser step (batch_size × frames_per_clip × devices) if scale_lr."""
        lr = float(self.optim["lr"])
        if not self.optim["scale_lr"]:
            return lr
        if self.batch_size is None:
            raise ValueError("AutoencoderModule: optim.scale_lr needs batch_size (model.batch_size)")
        world = self.trainer.world_size if self._trainer is not None else 1
        return lr * self.batch_size * self.frames_per_clip * world

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[dict[str, Any]]]:
        lr, betas = self.learning_rate(), tuple(self.optim["betas"])
        log.info("autoencoder learning rate %.3g (betas %s), schedule %s", lr, betas, self.schedule)
        opt_g = torch.optim.Adam(self.ae.parameters(), lr=lr, betas=betas)
        opt_d = torch.optim.Adam(self.loss.discriminator.parameters(), lr=lr, betas=betas)
        s = dict(self.schedule)
        schedule = lr_schedule(
            opt_g, s.pop("name"), int(s.pop("warmup_steps")), int(s.pop("total_steps")), **s
        )
        return [opt_g, opt_d], [{"scheduler": schedule, "interval": "step"}]

    def configure_callbacks(self) -> list[L.Callback]:
        """Swap the video-sampling validation callback for a disabled one: an autoencoder samples nothing."""
        return [SampleMetrics(num_videos=0, inference={})]
