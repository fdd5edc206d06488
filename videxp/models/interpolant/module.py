"""RIVER / PFI as a LightningModule: a flow transformer trained on a frozen VQ autoencoder's latents."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from videxp.models.interpolant.checkpoints import build_autoencoder, load_autoencoder, load_flow_network
from videxp.models.interpolant.flow_transformer import FlowTransformer
from videxp.models.interpolant.generator import InterpolantGenerator
from videxp.models.interpolant.interpolants import build_interpolant, regression_loss, sample_times
from videxp.models.interpolant.latent_cache import LatentDataModule
from videxp.models.interpolant.schedules import lr_schedule
from videxp.utils.seeding import derive_seed, torch_generator

log = logging.getLogger(__name__)


CONTEXTS = ("random", "previous")


def pick_frames(
    num_frames: int, batch: int, g: torch.Generator, context: str = "random"
) -> tuple[torch.Tensor, ...]:
    """Training frames per row: target ~ U{2..T-1}, reference = target - 1, and a context frame that is
    `random` ~ U{0..target-2} (RIVER) or the `previous` one, target - 2 (distance 1 to the reference).

    Returns (target, reference, context) index tensors [B] (int64).
    """
    if num_frames < 3:
        raise ValueError(f"interpolant training needs clips of at least 3 frames, got {num_frames}")
    if context not in CONTEXTS:
        raise ValueError(f"training.context must be one of {CONTEXTS}, got {context!r}")
    target = torch.randint(2, num_frames, (batch,), generator=g)  # [B]
    uniform = (torch.rand(batch, generator=g) * (target - 1)).long()  # [B] uniform over 0..target-2
    return target, target - 1, uniform if context == "random" else target - 2


class InterpolantModule(L.LightningModule):
    """Trains RIVER's flow transformer over a frozen VQ autoencoder's pre-quantisation latents.

    Each row: a clip [T, C, H, W] (or its cached latents), target/reference/context frames as RIVER
    (`pick_frames`), x0 = noise or the reference latent per the interpolant, t ~ U[t_min, t_max), the
    network regresses the interpolant's drift target; loss reduction `mean` (RIVER) or `sum` (PFI).
    The autoencoder's weights come from `autoencoder.ckpt` when training starts (unless a checkpoint of
    this module already holds them); EMA weights (`ema.rate`, from `ema.start_step` on, copies before)
    are what sampling uses by default.
    """

    sampling_keys = ("sampling",)  # taken from the sample-time config when loading a checkpoint

    def __init__(
        self,
        image_size: int,
        autoencoder: dict[str, Any],
        size: str = "paper",
        net: dict[str, Any] | None = None,
        interpolant: str = "linear",
        interpolants: dict[str, dict[str, Any]] | None = None,
        training: dict[str, Any] | None = None,
        sampling: dict[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        ema: dict[str, Any] | None = None,
        latent_cache: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        ae_cfg = dict(autoencoder)
        self.ae_ckpt, self.ae_sha256 = ae_cfg.pop("ckpt", None), ae_cfg.pop("sha256", None)
        self.autoencoder = build_autoencoder(**ae_cfg).eval().requires_grad_(False)
        # 1 once the autoencoder holds its real weights (set by loading them, restored with checkpoints)
        self.register_buffer("ae_ready", torch.tensor(0, dtype=torch.uint8))
        if image_size % self.autoencoder.downsample:
            raise ValueError(
                f"image_size {image_size} is not divisible by the autoencoder's factor "
                f"{self.autoencoder.downsample}"
            )
        grid = image_size // self.autoencoder.downsample
        self.net = FlowTransformer.from_preset(
            size, state_size=self.autoencoder.latent_channels, state_res=(grid, grid), **(net or {})
        )
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False)
        self.interpolant_name = interpolant
        self.interpolant = build_interpolant(interpolant, **(interpolants or {}).get(interpolant, {}))
        self.training_cfg = {
            "t_min": 0.0,
            "t_max": 1.0,
            "loss_reduction": "mean",
            "context": "random",
            **(training or {}),
        }
        if self.training_cfg["context"] not in CONTEXTS:
            raise ValueError(
                f"training.context must be one of {CONTEXTS}, got {self.training_cfg['context']!r}"
            )
        self.sampling = dict(sampling or {})
        self.optim = {"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 0.0, **(optim or {})}
        self.schedule = {"name": "constant", "warmup_steps": 0, "total_steps": 1, **(schedule or {})}
        self.ema = {"rate": 0.9999, "start_step": 0, **(ema or {})}
        self.latent_cache = latent_cache
        self.seed = seed

    # ----------------------------------------------------------------- autoencoder
    def train(self, mode: bool = True) -> InterpolantModule:
        """The autoencoder stays in eval mode (frozen, BatchNorm statistics fixed)."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def ensure_autoencoder(self) -> None:
        """Load `autoencoder.ckpt` unless the weights are already in place (e.g. from this module's ckpt)."""
        if bool(self.ae_ready):
            return
        if self.ae_ckpt is None:
            log.warning(
                "model.autoencoder.ckpt is null: the autoencoder is randomly initialised (tests only)"
            )
        else:
            info = load_autoencoder(self.autoencoder, self.ae_ckpt, sha256=self.ae_sha256)
            log.info("autoencoder weights from %s", info)
        self.ae_ready.fill_(1)

    def on_fit_start(self) -> None:
        self.ensure_autoencoder()

    def prepare_datamodule(self, datamodule: L.LightningDataModule) -> L.LightningDataModule:
        """Training from cached latents when `latent_cache` is set (built on first use); pixels otherwise."""
        if self.latent_cache is None:
            return datamodule
        self.ensure_autoencoder()
        return LatentDataModule(datamodule, self.latent_cache, self.autoencoder)

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Latents [B, n, c, h, w] of frames [B, n, C, H, W] in [-1, 1] (frozen encoder, pre-quantisation)."""
        z = self.autoencoder.encode(frames.flatten(0, 1))  # [B*n, c, h, w]
        return z.unflatten(0, frames.shape[:2])

    # ----------------------------------------------------------------- training
    def _loss(self, batch: dict[str, Any], g: torch.Generator) -> torch.Tensor:
        """The regression loss of one batch of clips (`video` pixels or cached `latents`)."""
        clips = batch["latents"] if "latents" in batch else batch["video"]  # [B, T, ...]
        B, T = clips.shape[:2]
        target, reference, context = pick_frames(T, B, g, self.training_cfg["context"])
        rows = torch.arange(B)
        chosen = torch.stack(
            [clips[rows, target], clips[rows, reference], clips[rows, context]], 1
        )  # [B, 3, ..]
        z = chosen if "latents" in batch else self.encode_frames(chosen)  # [B, 3, c, h, w]
        z1, z_ref, z_ctx = z.unbind(1)
        cfg = self.training_cfg
        t = sample_times(B, g, cfg["t_min"], cfg["t_max"]).to(self.device)  # [B]
        noise = torch.randn(z1.shape, generator=g).to(z1)  # [B, c, h, w]: x0 of noise-started interpolants
        wiener = torch.randn(z1.shape, generator=g).to(z1)  # [B, c, h, w]: the Wiener draw of noisy ones
        x0 = noise if self.interpolant.starts_from == "noise" else z_ref
        x_t, drift_target = self.interpolant.sample(x0, z1, t, wiener)
        pred = self.net(
            input_latents=x_t,
            reference_latents=z_ref,
            conditioning_latents=z_ctx,
            index_distances=(reference - context).to(self.device),
            timestamps=t,
        )
        return regression_loss(pred, drift_target, cfg["loss_reduction"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # randomness depends on (seed, step) only, so a resumed run draws what it would have drawn
        loss = self._loss(batch, torch_generator(derive_seed(self.seed, self.global_step)))
        size = len(batch["index"]) if "index" in batch else None
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, torch_generator(derive_seed(self.seed, 1_000_003, batch_idx)))
        size = len(batch["index"]) if "index" in batch else None
        self.log("val/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.net.parameters(),
            lr=self.optim["lr"],
            betas=tuple(self.optim["betas"]),
            weight_decay=self.optim["weight_decay"],
        )
        s = dict(self.schedule)
        scheduler = lr_schedule(
            optimizer, s.pop("name"), int(s.pop("warmup_steps")), int(s.pop("total_steps")), **s
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # before start_step the EMA copies the weights (PFI starts its EMA at 10k steps)
        rate = float(self.ema["rate"]) if self.global_step >= int(self.ema["start_step"]) else 0.0
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema_net.parameters()), list(self.net.parameters()), 1.0 - rate)

    # ----------------------------------------------------------------- sampling
    def generator(self, use_ema: bool | None = None) -> InterpolantGenerator:
        """The next-frame sampler over this module's (EMA by default) weights and sampling settings."""
        self.ensure_autoencoder()
        s = dict(self.sampling)
        configured = s.pop("use_ema", True)
        use_ema = configured if use_ema is None else use_ema
        return InterpolantGenerator(
            self.ema_net if use_ema else self.net,
            self.autoencoder,
            self.interpolant,
            **s,
            describe_extra={"use_ema": use_ema, "interpolant_name": self.interpolant_name},
        )

    # ----------------------------------------------------------------- RIVER / PFI weight files
    def load_weights(self, path: str | Path) -> int | None:
        """Start from RIVER's `model.pth` or a PFI checkpoint: the flow network (into net and EMA) and,
        where the file has them (`ae.*`), the autoencoder. Returns the file's step if it records one."""
        load_flow_network(self.net, path)
        self.ema_net.load_state_dict(self.net.state_dict())
        try:
            load_autoencoder(self.autoencoder, path)
            self.ae_ready.fill_(1)
        except ValueError:
            log.info("%s holds no autoencoder weights; model.autoencoder.ckpt provides them", path)
        try:  # RIVER records global_step, PFI step (PFI files pickle a Config: no step read from those)
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - the weights are loaded; the step is informational
            return None
        step = ckpt.get("global_step", ckpt.get("step")) if isinstance(ckpt, dict) else None
        return None if step is None else int(step)
