"""The interface every latent autoencoder of the interpolant family implements (KTH VQGAN, CLEVRER VQVAE)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Quantized:
    """Result of nearest-code quantisation of a continuous latent."""

    z_q: torch.Tensor  # [B, C, h, w] quantised latent (straight-through: gradients flow to z)
    indices: torch.Tensor  # [B, h, w] int64 code index per latent pixel
    loss: torch.Tensor  # scalar codebook + commitment loss (the original's weighting)


@dataclass
class Reconstruction:
    """Result of a training forward pass."""

    recon: torch.Tensor  # [B, 3, H, W] decoded image in [-1, 1] (up to the decoder's range)
    quantized: Quantized
    latent: torch.Tensor  # [B, C, h, w] continuous pre-quantisation latent


class LatentAutoencoder(nn.Module, ABC):
    """A VQ autoencoder over images in [-1, 1]; flow models work on its pre-quantisation latents.

    `state_dict()` keys are exactly those of the released checkpoints (without any `ae.` /
    `ae.backbone.` / `module.` prefix); `checkpoint_prefixes` lists the prefixes the released
    files put in front of them, tried in order when loading.
    """

    latent_channels: int  # C of the latent
    downsample: int  # spatial factor: latent h = H / downsample
    num_codes: int  # codebook size
    checkpoint_prefixes: tuple[str, ...] = ()

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latent [B, C, H/f, W/f] of images x [B, 3, H, W] in [-1, 1]."""

    @abstractmethod
    def quantize(self, z: torch.Tensor) -> Quantized:
        """Nearest codebook entry per latent pixel of z [B, C, h, w] (first index on ties)."""

    @abstractmethod
    def decode_quantized(self, z_q: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] from an already quantised latent z_q [B, C, h, w]."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] from a continuous latent: quantise first, then decode (as RIVER)."""
        return self.decode_quantized(self.quantize(z).z_q)

    def forward(self, x: torch.Tensor) -> Reconstruction:
        """Encode, quantise (straight-through) and decode images x [B, 3, H, W] for training."""
        latent = self.encode(x)
        quantized = self.quantize(latent)
        return Reconstruction(recon=self.decode_quantized(quantized.z_q), quantized=quantized, latent=latent)

    def last_layer_weight(self) -> torch.Tensor:
        """Weight of the decoder's last layer (taming's adaptive adversarial weight uses its gradient)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its last decoder layer")
