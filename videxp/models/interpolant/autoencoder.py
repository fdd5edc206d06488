"""The interface every latent autoencoder of the interpolant family implements (KTH VQGAN, CLEVRER VQVAE)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
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


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by |z|² + |e|² − 2 z·e (first index on ties), VQ loss, straight-through.

    loss = mean((sg[z_q] − z)²) + β · mean((z_q − sg[z])²): β weights the codebook term and the commitment
    term has weight 1, as in taming's VectorQuantizer2 with `legacy=True` and in RIVER's quantiser.
    """

    def __init__(self, num_codes: int, code_dim: int, beta: float):
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(num_codes, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)  # taming's initialisation

    def forward(self, z: torch.Tensor) -> Quantized:
        """z [B, C, h, w] -> Quantized(z_q [B, C, h, w], indices [B, h, w], loss)."""
        B, C, h, w = z.shape
        codebook = self.embedding.weight  # [K, C]
        flat = z.permute(0, 2, 3, 1).reshape(-1, C)  # [B*h*w, C] in (b, h, w) order
        dist = (
            flat.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * flat @ codebook.t()
        )  # [B*h*w, K] squared distances
        indices = dist.argmin(dim=1)  # [B*h*w]; the first index wins on ties
        z_q = F.embedding(indices, codebook).reshape(B, h, w, C).permute(0, 3, 1, 2)  # [B, C, h, w]
        loss = F.mse_loss(z_q.detach(), z) + self.beta * F.mse_loss(z_q, z.detach())
        z_q = z + (z_q - z).detach()  # straight-through: forward value z_q, identity gradient to z
        return Quantized(z_q=z_q, indices=indices.reshape(B, h, w), loss=loss)


class LatentAutoencoder(nn.Module, ABC):
    """A VQ autoencoder over images in [-1, 1]; flow models work on its pre-quantisation latents.

    `state_dict()` keys are exactly those of the released checkpoints (without any `ae.` /
    `ae.backbone.` / `module.` prefix); `checkpoint_prefixes` lists the prefixes the released
    files put in front of them, tried in order when loading.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}  # named constructor settings
    in_channels: int = 3  # image channels
    latent_channels: int  # C of the latent
    downsample: int  # spatial factor: latent h = H / downsample
    num_codes: int  # codebook size
    checkpoint_prefixes: tuple[str, ...] = ()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> LatentAutoencoder:
        """Build a named configuration from `PRESETS`, with keyword overrides."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; known: {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def check_images(self, x: torch.Tensor) -> None:
        """ValueError unless x is [B, in_channels, H, W] with H and W multiples of `downsample`."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images [B, {self.in_channels}, H, W], got {list(x.shape)}")
        H, W = x.shape[-2:]
        if H % self.downsample or W % self.downsample:
            raise ValueError(
                f"image height and width must be divisible by the downsampling factor {self.downsample} "
                f"(the latent grid must be exact), got {H}x{W}"
            )

    def check_latents(self, z: torch.Tensor) -> None:
        """ValueError unless z is [B, latent_channels, h, w]."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents [B, {self.latent_channels}, h, w], got {list(z.shape)}")

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
