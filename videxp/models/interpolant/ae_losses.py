"""Stage-1 autoencoder loss as taming's VQLPIPSWithDiscriminator: L1/L2 + LPIPS + codebook + PatchGAN."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videxp.metrics.lpips import lpips_network
from videxp.models.pixel_losses import pixel_error

REC_LOSSES = ("l1", "l2")  # pixel reconstruction term
GAN_LOSSES = ("hinge", "vanilla")  # discriminator objective
ADAPTIVE_MAX = 1e4  # taming clamps the adaptive weight to [0, 1e4]
ADAPTIVE_EPS = 1e-4  # added to the adversarial gradient norm
LEAK = 0.2  # LeakyReLU slope of the discriminator
INIT_STD = 0.02  # taming's `weights_init`: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02)


# ----------------------------------------------------------------------------- discriminator
class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix, as taming uses it): one logit per overlapping image patch.

    4×4 convolutions: one stride-2 conv (no norm), `n_layers - 1` stride-2 convs and one stride-1 conv
    with BatchNorm (no bias), channel multipliers 2^k capped at 8, LeakyReLU 0.2 after each, and a
    stride-1 conv to one channel. `main` is an `nn.Sequential` in taming's order, so the keys of a taming
    checkpoint's ``loss.discriminator.*`` load directly.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError(f"NLayerDiscriminator needs n_layers >= 1 and ndf >= 1, got {n_layers}, {ndf}")
        self.n_layers = n_layers
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(LEAK, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last normalised conv keeps the resolution (-1 px)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(LEAK, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    @property
    def min_size(self) -> int:
        """Smallest image side giving at least one patch logit: n_layers halvings, then two -1 convs."""
        return 3 * 2**self.n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits [B, 1, h, w] of images x [B, C, H, W]."""
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"NLayerDiscriminator(n_layers={self.n_layers}) needs images of at least {self.min_size}px a "
                f"side, got {x.shape[-2]}x{x.shape[-1]} (lower loss.disc_num_layers or use larger frames)"
            )
        return self.main(x)


def _init_weights(m: nn.Module) -> None:
    """taming's `weights_init`: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, INIT_STD)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, INIT_STD)
        nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- loss terms
def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 · (mean relu(1 − real) + mean relu(1 + fake))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 · (mean softplus(−real) + mean softplus(fake)): the non-saturating BCE of a GAN."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def adopt_weight(value: float, step: int, threshold: int) -> float:
    """`value` from step `threshold` on, 0 before it (taming's `adopt_weight`)."""
    return 0.0 if step < threshold else value


def adaptive_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float = 1.0
) -> torch.Tensor:
    """taming's λ = ‖∇_L nll‖ / (‖∇_L g‖ + 1e-4), clamped to [0, 1e4], detached, times `disc_weight`.

    L is the decoder's last layer weight; both losses must depend on it (the graph is kept).
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.linalg.vector_norm(nll_grad) / (torch.linalg.vector_norm(g_grad) + ADAPTIVE_EPS)
    return torch.clamp(weight, 0.0, ADAPTIVE_MAX).detach() * disc_weight


def perceptual_network(
    net: str = "vgg", backbone_path: str | os.PathLike | None = None, download: bool | None = None
) -> nn.Module:
    """The lpips package's LPIPS v0.1 (frozen, eval) with its backbone from videxp's verified weight cache.

    Built by `videxp.metrics.lpips.lpips_network`, so the backbone file is found (or downloaded) and
    checked exactly as for the metric; offline runs without the file raise `WeightsMissingError`.
    """
    return lpips_network(net, backbone_path, download)[0]


# ----------------------------------------------------------------------------- the loss
class AutoencoderLoss(nn.Module):
    """taming's `VQLPIPSWithDiscriminator` (the VQGAN stage-1 loss), for any `LatentAutoencoder`.

    Generator: ``nll = mean(|x − x̂| + w_p · LPIPS(x, x̂))`` (``(x − x̂)²`` with rec_loss="l2"),
    ``loss = nll + λ · f · (−mean D(x̂)) + w_q · codebook_loss`` with λ the adaptive weight (times
    `disc_weight`) and f = `disc_factor` from step `disc_start` on (0 before; the discriminator is then
    not run at all). Discriminator: ``f · hinge(D(x), D(x̂))`` (or the vanilla BCE).

    Perceptual network: the `lpips` package's LPIPS v0.1 with its backbone from videxp's weight cache
    (`perceptual_net`: "vgg" is taming's choice, "alex" / "squeeze" are cheaper); it is frozen, kept in
    eval mode (taming's copy runs its linear heads' dropout in training mode; ours does not) and is not
    part of `state_dict()` (its weights come from the cache, not from checkpoints). Frames must be at
    least 16px (vgg), 31px (alex) or 17px (squeeze) a side. `perceptual_weight=0` skips it entirely.

    `discriminator` keys match taming's ``loss.discriminator.*``.
    """

    def __init__(
        self,
        *,
        disc_start: int = 0,
        codebook_weight: float = 1.0,
        rec_loss: str = "l1",
        saturate: bool = False,
        perceptual_weight: float = 1.0,
        perceptual_net: str = "vgg",
        perceptual_backbone_path: str | os.PathLike | None = None,
        disc_in_channels: int = 3,
        disc_ndf: int = 64,
        disc_num_layers: int = 3,
        disc_factor: float = 1.0,
        disc_weight: float = 1.0,
        disc_loss: str = "hinge",
    ):
        super().__init__()
        if rec_loss not in REC_LOSSES:
            raise ValueError(f"rec_loss must be one of {REC_LOSSES}, got {rec_loss!r}")
        if disc_loss not in GAN_LOSSES:
            raise ValueError(f"disc_loss must be one of {GAN_LOSSES}, got {disc_loss!r}")
        if perceptual_weight < 0:
            raise ValueError(f"perceptual_weight must be >= 0, got {perceptual_weight}")
        self.disc_start = int(disc_start)
        self.codebook_weight = float(codebook_weight)
        self.rec_loss = rec_loss
        self.saturate = bool(saturate)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual_net = perceptual_net
        self.disc_factor = float(disc_factor)
        self.disc_weight = float(disc_weight)
        self.disc_loss = disc_loss
        self.discriminator = NLayerDiscriminator(disc_in_channels, disc_ndf, disc_num_layers)
        perceptual = (
            perceptual_network(perceptual_net, perceptual_backbone_path) if perceptual_weight else None
        )
        # kept out of the module tree: not in state_dict(), never switched to train mode, moved lazily
        self.__dict__["_perceptual"] = perceptual

    # ----------------------------------------------------------------- pieces
    def disc_active(self, step: int) -> bool:
        """Whether the adversarial terms are on at `step` (step >= disc_start and disc_factor > 0)."""
        return adopt_weight(self.disc_factor, step, self.disc_start) > 0

    def pixel_loss(self, inputs: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Per-pixel |x − x̂| or (x − x̂)² [B, C, H, W].

        With `saturate`, a target at an end of the range [-1, 1] (black, a saturated channel) is met by any
        value beyond that end: decoded frames are clamped to the range, so only the side inside counts.
        """
        return pixel_error(inputs.contiguous(), recon.contiguous(), self.rec_loss, -1.0, 1.0, self.saturate)

    def perceptual_loss(self, inputs: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """LPIPS distance [B, 1, 1, 1] of images in [-1, 1]; zeros when the perceptual term is off."""
        net = self.__dict__["_perceptual"]
        if net is None:
            return inputs.new_zeros(inputs.shape[0], 1, 1, 1)
        if next(net.parameters()).device != inputs.device:
            net.to(inputs.device)
        return net(inputs.contiguous(), recon.contiguous())  # lpips.LPIPS takes [-1, 1] inputs

    def gan_d_loss(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        """The configured discriminator objective (hinge or vanilla)."""
        fn = hinge_d_loss if self.disc_loss == "hinge" else vanilla_d_loss
        return fn(logits_real, logits_fake)

    # ----------------------------------------------------------------- the two objectives
    def generator_loss(
        self,
        inputs: torch.Tensor,
        recon: torch.Tensor,
        codebook_loss: torch.Tensor,
        step: int,
        last_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, logs) for the autoencoder update on images [B, C, H, W] and their reconstructions.

        `last_layer` (the decoder's last weight) is needed once the discriminator is active, for the
        adaptive weight. Logs: loss, nll_loss, rec_loss (pixel term only), p_loss, vq_loss, g_loss,
        d_weight, disc_factor (all detached scalars).
        """
        pixel = self.pixel_loss(inputs, recon)  # [B, C, H, W]
        p_loss = self.perceptual_loss(inputs, recon)  # [B, 1, 1, 1]
        nll_loss = (pixel + self.perceptual_weight * p_loss).mean()
        vq_loss = codebook_loss.mean()
        zero = nll_loss.new_zeros(())
        g_loss, d_weight = zero, zero
        disc_factor = adopt_weight(self.disc_factor, step, self.disc_start)
        if disc_factor > 0:
            g_loss = -self.discriminator(recon.contiguous()).mean()
            if last_layer is None:
                raise ValueError("generator_loss: last_layer is required once the discriminator is active")
            d_weight = adaptive_weight(nll_loss, g_loss, last_layer, self.disc_weight)
        loss = nll_loss + d_weight * disc_factor * g_loss + self.codebook_weight * vq_loss
        logs = {
            "loss": loss,
            "nll_loss": nll_loss,
            "rec_loss": pixel.mean(),
            "p_loss": p_loss.mean(),
            "vq_loss": vq_loss,
            "g_loss": g_loss,
            "d_weight": d_weight,
            "disc_factor": torch.tensor(disc_factor),
        }
        return loss, {k: v.detach() for k, v in logs.items()}

    def discriminator_loss(
        self, inputs: torch.Tensor, recon: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, logs) for the discriminator update: f · GAN loss on real images and detached recons.

        Logs: d_loss, logits_real, logits_fake (means). Before `disc_start` the loss is 0 and the
        discriminator is not run.
        """
        disc_factor = adopt_weight(self.disc_factor, step, self.disc_start)
        if disc_factor <= 0:
            zero = inputs.new_zeros(())
            return zero, {"d_loss": zero, "logits_real": zero, "logits_fake": zero}
        logits_real = self.discriminator(inputs.contiguous().detach())  # [B, 1, h, w]
        logits_fake = self.discriminator(recon.contiguous().detach())
        d_loss = disc_factor * self.gan_d_loss(logits_real, logits_fake)
        logs: dict[str, Any] = {
            "d_loss": d_loss,
            "logits_real": logits_real.mean(),
            "logits_fake": logits_fake.mean(),
        }
        return d_loss, {k: v.detach() for k, v in logs.items()}
