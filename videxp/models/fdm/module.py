"""FDM as a LightningModule: FDM's training batches, epsilon-prediction DDPM loss, EMA weights."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import torch

from videxp.errors import ConfigError
from videxp.models.fdm.batching import build_training_batch, build_window_batch
from videxp.models.fdm.checkpoint import load_fdm_checkpoint, save_fdm_checkpoint
from videxp.models.fdm.diffusion import GaussianDiffusion
from videxp.models.fdm.generator import FDMGenerator
from videxp.models.fdm.unet import SIZES, FDMUNet, as_labels
from videxp.models.partial_training import adamw_with_warmup
from videxp.utils.seeding import derive_seed, torch_generator


def net_config(
    size: str,
    image_size: int,
    net: dict | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """FDM's own config dict (the `config` of its checkpoints) for a named size (`unet.SIZES`) plus overrides.

    `num_classes` (class-conditional net) is written into the dict only when set, so an unconditional
    config stays exactly FDM's; it may also come from `net`, but the two must then agree.
    """
    if size not in SIZES:
        raise ValueError(f"unknown FDM size {size!r}; known: {sorted(SIZES)}")
    config = {"image_size": image_size, **SIZES[size], **(net or {})}  # other keys: FDM's defaults
    if config.get("channel_mult") is None:
        config.pop("channel_mult", None)  # FDM's rule by image size
    if num_classes is not None:
        if config.get("num_classes") not in (None, num_classes):
            raise ValueError(f"num_classes={num_classes} but the net settings say {config['num_classes']}")
        config["num_classes"] = int(num_classes)
    if config.get("num_classes") is None:
        config.pop("num_classes", None)
    return config


TRAINING_MASKS = ("fdm", "autoregressive")


class FDMModule(L.LightningModule):
    """Trains FDM's UNet on whole videos; `generator()` gives the sampler for videxp-sample.

    With `num_classes` set the net is class-conditional: training reads `batch["label"]` and replaces
    each row's label by the null label with probability `p_uncond` (for classifier-free guidance).
    `training_masks`: "fdm" draws FDM's random observed/latent frame groups (any index pattern works at
    sampling time); "autoregressive" trains only on contiguous windows of `max_frames` frames whose first
    `observed_frames` (a number or [min, max]) are observed, the pattern of `inference=autoreg`.
    """

    sampling_keys = ("sampling",)  # taken from the sample-time config when loading a checkpoint

    def __init__(
        self,
        size: str,
        image_size: int,
        max_frames: int,
        net: dict | None = None,
        diffusion: dict | None = None,
        sampling: dict | None = None,
        optim: dict | None = None,
        ema: dict | None = None,
        pad_with_random_frames: bool = True,
        seed: int = 0,
        num_classes: int | None = None,
        p_uncond: float = 0.1,
        training_masks: str = "fdm",
        observed_frames: int | list[int] | tuple[int, int] = (1, 1),
    ):
        super().__init__()
        self.save_hyperparameters()
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond}")
        if training_masks not in TRAINING_MASKS:
            raise ValueError(f"training_masks must be one of {TRAINING_MASKS}, got {training_masks!r}")
        self.fdm_config = net_config(size, image_size, net, num_classes)
        self.net = FDMUNet.from_fdm_config(self.fdm_config)
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False)
        self.diffusion = GaussianDiffusion(**(diffusion or {}))
        self.max_frames = max_frames
        self.sampling = dict(sampling or {})
        self.optim = {
            "lr": 1e-4,
            "weight_decay": 0.0,
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            "warmup_steps": 0,
            **(optim or {}),
        }
        self.ema = {"rate": 0.9999, "warmup": False, **(ema or {})}
        self.pad_with_random_frames = pad_with_random_frames
        self.seed = seed
        self.p_uncond = float(p_uncond)
        self.training_masks = training_masks
        lo, hi = (observed_frames, observed_frames) if isinstance(observed_frames, int) else observed_frames
        self.observed_frames = (int(lo), int(hi))
        if training_masks == "autoregressive" and not 0 <= lo <= hi < max_frames:
            raise ValueError(
                f"observed_frames={observed_frames} must lie in [0, max_frames - 1 = {max_frames - 1}] "
                "(a number or an inclusive [min, max] range)"
            )

    def prepare_datamodule(self, datamodule: L.LightningDataModule) -> L.LightningDataModule:
        """Refuse training clips shorter than `max_frames` before the first step (FDM's mask sampling would
        never finish on them); the datamodule is returned unchanged."""
        length = getattr(datamodule, "video_length", None)
        if length is not None and int(length) < self.max_frames:
            raise ConfigError(
                f"dataset.video_length={length} is shorter than model.max_frames={self.max_frames}: FDM "
                f"trains on {self.max_frames} frames of one clip; set "
                f"dataset.video_length>={self.max_frames} or model.max_frames<={length}"
            )
        return datamodule

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional net (from the network itself, e.g. after `load_weights`)."""
        return self.net.num_classes

    # ----------------------------------------------------------------- training
    def batch_labels(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """batch["label"] as [B] int64 for a class-conditional net; None (labels ignored) otherwise."""
        if self.num_classes is None:
            return None
        if batch.get("label") is None:
            raise KeyError(
                f"class-conditional FDM (num_classes={self.num_classes}) needs batch['label']; "
                f"batch keys: {sorted(batch)}"
            )
        B = batch["video"].shape[0]
        return as_labels(batch["label"], B, self.num_classes, self.device, "batch['label']")

    def drop_labels(self, labels: torch.Tensor, g: torch.Generator, p_uncond: float) -> torch.Tensor:
        """labels [B] with each replaced by the null label with probability p_uncond (drawn from g)."""
        drop = torch.rand(labels.shape[0], generator=g) < p_uncond  # [B] bool, on g's device (CPU)
        return torch.where(drop.to(labels.device), self.net.null_label, labels)

    def _loss(
        self,
        videos: torch.Tensor,
        g: torch.Generator,
        labels: torch.Tensor | None = None,
        p_uncond: float = 0.0,
    ) -> torch.Tensor:
        """FDM's loss on one batch of whole videos [B, T, C, H, W] (with class labels [B] if conditional)."""
        if self.training_masks == "fdm":
            tb = build_training_batch(videos, self.max_frames, g, self.pad_with_random_frames)
        else:
            tb = build_window_batch(videos, self.max_frames, self.observed_frames, g)
        B = videos.shape[0]
        t = self.diffusion.sample_timesteps(B, g).to(self.device)
        noise = torch.randn(tb.frames.shape, generator=g, dtype=tb.frames.dtype).to(self.device)
        if labels is not None and p_uncond > 0:  # drawn last: unconditional runs draw what they always did
            labels = self.drop_labels(labels, g, p_uncond)
        # padding frames are trained as unconditional frames of their own group (FDM); windows have none
        loss_mask = (1.0 - tb.obs_mask) if self.pad_with_random_frames else tb.latent_mask

        def model_fn(x_t: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
            return self.net(
                x_t,
                x0=tb.frames,
                timesteps=t_model,
                frame_indices=tb.frame_indices.to(self.device),
                obs_mask=tb.obs_mask,
                latent_mask=tb.latent_mask,
                y=labels,
            )

        losses = self.diffusion.training_losses(model_fn, tb.frames, t, noise, tb.obs_mask, loss_mask)
        return losses.mean()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # batch randomness depends on (seed, step) only, so a resumed run draws what it would have drawn
        g = torch_generator(derive_seed(self.seed, self.global_step))
        loss = self._loss(batch["video"], g, self.batch_labels(batch), self.p_uncond)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        g = torch_generator(derive_seed(self.seed, 1_000_003, batch_idx))  # same masks at every validation
        loss = self._loss(batch["video"], g, self.batch_labels(batch))  # conditional: no label dropout
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """AdamW at a constant rate (FDM), after `optim.warmup_steps` linear warm-up steps when set."""
        if int(self.optim["warmup_steps"]) > 0:
            return adamw_with_warmup(self.net.parameters(), self.optim)
        return torch.optim.AdamW(
            self.net.parameters(),
            lr=self.optim["lr"],
            weight_decay=self.optim["weight_decay"],
            betas=tuple(self.optim["betas"]),
            eps=self.optim["eps"],
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        rate = float(self.ema["rate"])
        if self.ema["warmup"]:
            step = self.global_step
            rate = min(rate, (1 + step) / (10 + step))
        with torch.no_grad():
            ema = list(self.ema_net.parameters())
            torch._foreach_lerp_(ema, list(self.net.parameters()), 1.0 - rate)

    # ----------------------------------------------------------------- sampling
    def generator(self, use_ema: bool | None = None) -> FDMGenerator:
        """The sampler over this module's (EMA by default) weights and sampling settings."""
        s = self.sampling
        use_ema = s.get("use_ema", True) if use_ema is None else use_ema
        return FDMGenerator(
            self.ema_net if use_ema else self.net,
            self.diffusion,
            max_frames=self.max_frames,
            timestep_respacing=s.get("timestep_respacing") or None,
            use_ddim=s.get("use_ddim", False),
            eta=s.get("eta", 0.0),
            clip_denoised=s.get("clip_denoised", True),
            guidance_scale=s.get("guidance_scale", 1.0),
            describe_extra={"use_ema": use_ema, "fdm_config": self.fdm_config, "max_frames": self.max_frames},
        )

    # ----------------------------------------------------------------- FDM's checkpoint format
    def load_weights(self, path: str | Path) -> int:
        """Load FDM's released `{"state_dict", "config", "step"}` file into both the net and the EMA net.

        The network is rebuilt from the file's own config (its `num_classes`, if any, included);
        returns the file's step.
        """
        net, config, step = load_fdm_checkpoint(path)
        wanted = self.hparams.get("num_classes")
        if wanted is not None and wanted != net.num_classes:
            raise ValueError(
                f"{Path(path).name}: the file's net has num_classes={net.num_classes}, the config asks "
                f"for model.num_classes={wanted}"
            )
        self.fdm_config = config
        self.net = net
        self.ema_net = copy.deepcopy(net).requires_grad_(False)
        if "max_frames" in config:
            self.max_frames = int(config["max_frames"])
        return step

    def export_fdm(self, path: str | Path, use_ema: bool = True) -> None:
        """Write the (EMA) weights in FDM's own checkpoint format, readable by FDM's scripts."""
        config = {**self.fdm_config, "max_frames": self.max_frames}
        save_fdm_checkpoint(path, self.ema_net if use_ema else self.net, config, self.global_step)
