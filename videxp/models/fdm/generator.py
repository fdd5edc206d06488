"""FDM behind the one generator request: any observed/target index pattern up to K frames."""

from __future__ import annotations

from typing import Any

import torch

from videxp.inference.generator import Capabilities, Generator
from videxp.models.fdm.diffusion import GaussianDiffusion
from videxp.models.fdm.unet import FDMUNet, as_labels
from videxp.utils.seeding import row_generators


class FDMGenerator(Generator):
    """Runs FDM's diffusion chain over `observed + target` frames; observed frames enter clean.

    A class-conditional net takes one label per row from `cond["label"]` and samples with
    classifier-free guidance at `guidance_scale` (1 = plain conditional sampling).
    """

    def __init__(
        self,
        net: FDMUNet,
        diffusion: GaussianDiffusion,
        max_frames: int,
        timestep_respacing: str | int | None = None,
        use_ddim: bool = False,
        eta: float = 0.0,
        clip_denoised: bool = True,
        guidance_scale: float = 1.0,
        describe_extra: dict[str, Any] | None = None,
    ):
        if guidance_scale != 1.0 and net.num_classes is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs a class-conditional net (num_classes)")
        self.net = net
        self.diffusion = diffusion
        self.timestep_respacing = timestep_respacing
        self.use_ddim = use_ddim
        self.eta = eta
        self.clip_denoised = clip_denoised
        self.guidance_scale = float(guidance_scale)
        self.capabilities = Capabilities(
            max_frames=max_frames,
            index_patterns=("any",),
            conditioning=("class_label",) if net.num_classes is not None else (),
        )
        self._extra = describe_extra or {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def generate(self, frames, observed, target, cond, seeds):
        B, n_obs = frames.shape[:2]  # frames: [B, T_obs, C, H, W]
        n = n_obs + len(target)
        if n_obs != len(observed):
            raise ValueError(f"got {n_obs} observed frames for {len(observed)} observed indices")
        if n > self.capabilities.max_frames:
            raise ValueError(
                f"{len(observed)} observed + {len(target)} target frames exceed FDM's max_frames "
                f"{self.capabilities.max_frames}"
            )
        if len(seeds) != B:
            raise ValueError(f"need one seed per batch row: {len(seeds)} seeds for {B} rows")
        device = self.device
        C, H, W = frames.shape[2:]
        x0 = torch.cat([frames.to(device), frames.new_zeros(B, len(target), C, H, W, device=device)], 1)
        # [B, n, C, H, W]: observed first, then targets, as FDM's sampling loop orders them
        indices = torch.tensor([*observed, *target], device=device, dtype=torch.int64).expand(B, n)
        obs_mask = torch.zeros(B, n, device=device)
        obs_mask[:, :n_obs] = 1.0
        latent_mask = 1.0 - obs_mask
        labels = self._labels(cond, B, device)  # [B] int64, or None for an unconditional net

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.net.guided_forward(
                x_t,
                x0=x0,
                timesteps=t,
                frame_indices=indices,
                obs_mask=obs_mask,
                latent_mask=latent_mask,
                y=labels,
                guidance_scale=self.guidance_scale,
            )

        was_training = self.net.training
        self.net.eval()  # restored below: during training the EMA/online net keeps its mode
        try:
            out = self._sample(model_fn, x0, obs_mask, seeds)
        finally:
            self.net.train(was_training)
        return out[:, n_obs:]  # [B, T_target, C, H, W]

    def _labels(self, cond: dict[str, Any], B: int, device: torch.device) -> torch.Tensor | None:
        """cond["label"] as [B] int64 for a class-conditional net; None (labels ignored) otherwise."""
        num_classes = self.net.num_classes
        if num_classes is None:
            return None
        if cond.get("label") is None:
            raise ValueError(
                f"this FDM net is class-conditional (num_classes={num_classes}): cond['label'] must hold "
                f"one class index per row (got cond keys {sorted(cond)})"
            )
        return as_labels(cond["label"], B, num_classes, device, "cond['label']")

    def _sample(self, model_fn, x0, obs_mask, seeds) -> torch.Tensor:
        return self.diffusion.sample(
            model_fn,
            shape=tuple(x0.shape),
            x0=x0,
            obs_mask=obs_mask,
            generators=row_generators(seeds, x0.device),
            timestep_respacing=self.timestep_respacing,
            use_ddim=self.use_ddim,
            eta=self.eta,
            clip_denoised=self.clip_denoised,
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "timestep_respacing": self.timestep_respacing,
            "use_ddim": self.use_ddim,
            "eta": self.eta,
            "clip_denoised": self.clip_denoised,
            "num_classes": self.net.num_classes,
            "guidance_scale": self.guidance_scale,
            **self._extra,
        }
