"""LARP's perceptual and adversarial tokenizer-loss terms (hywang66/LARP models/loss.py `lpips_disc_loss`,
driven by trainers/larp_tokenizer_trainer.py), as options of LARPModule's stage=tokenizer.

- Perceptual: LPIPS v0.1 with the VGG16 trunk per frame ((b t) c h w, inputs in [0, 1] mapped to [-1, 1]),
  frozen and in eval mode, gradients through the reconstruction; LARP adds it to the per-pixel L1 before the
  mean, which equals weight x the mean over frames added to the L1 mean.
- Adversarial: `TransformerDiscriminator` over the whole clip. The discriminator loss is `disc_loss`
  ("ns_smooth": BCE with one-side-smoothed noisy targets, LARP's; "ns"; "hinge") plus `lecam` x LeCam's
  regulariser against EMA (decay 0.999) of the mean real / fake logits; the generator term is
  -mean(logsigmoid(D(fake))) (ns, ns_smooth) or -mean(D(fake)) (hinge), weighted by a constant (LARP passes a
  last layer but never uses it: no adaptive weight).

Steps: the discriminator trains from `disc_start` on the batches whose 1-based number is a multiple of
`d_update_freq` (LARP's global_step counts from 1), on detached reconstructions, before the tokenizer's step;
the generator term counts from `disc_start`. LARP counts disc_start in epochs, videxp in training steps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from videxp.errors import ConfigError
from videxp.metrics.lpips import MIN_FRAME_SIZE, lpips_network
from videxp.models.larp.discriminator import DISC_PRESETS, TransformerDiscriminator

__all__ = ["DEFAULT_OPTIONS", "GAN_LOSSES", "TokenizerLoss", "build_tokenizer_loss"]

GAN_LOSSES = ("ns_smooth", "ns", "hinge")
DISC_KEYS = ("hidden_size", "n_heads", "n_layers", "temporal_patch_size", "patch_size", "ln_eps")
LECAM_DECAY = 0.999  # LARP's update_lecam_ema
# ns_smooth targets: real 1 - |N(0,1)| x SMOOTH_STD >= 1 - SMOOTH_CLAMP, fake |N(0,1)| x SMOOTH_STD <= CLAMP
SMOOTH_STD, SMOOTH_CLAMP = 0.15, 0.3
DEFAULT_OPTIONS: dict[str, Any] = {  # model.tokenizer_loss_options; LARP cfgs/larp_tokenizer.yaml loss.args
    "lpips_backbone_path": None,  # torchvision's VGG16 file; None: videxp's weight cache (downloads online)
    "disc_loss": "ns_smooth",  # disc_loss 'ns_smooth' | ns | hinge
    "disc_start": 0,  # first training step with the GAN terms (LARP: disc_start 0, in epochs)
    "d_update_freq": 5,  # the discriminator steps on every d_update_freq-th batch (LARP: 5)
    "lecam": 1e-6,  # LeCam weight in the D loss (LARP: lecam_weight 0.001, applied twice: 1e-6)
    "r1": 0.0,  # R1 gradient penalty (LARP: r1_gp_weight 0): not built
    "disc_lr": 1e-4,  # the discriminator's Adam (LARP: loss_args lr 1e-4, betas (0.5, 0.9))
    "disc_betas": (0.5, 0.9),
    "disc": {},  # the size's DISC_PRESETS entry overridden (DISC_KEYS)
}


def check_options(o: dict[str, Any]) -> None:
    """ConfigError naming `model.tokenizer_loss_options.<key>` for a value videxp's LARP cannot train with."""
    key = "model.tokenizer_loss_options"
    if o["disc_loss"] not in GAN_LOSSES:
        raise ConfigError(f"{key}.disc_loss must be one of {GAN_LOSSES}, got {o['disc_loss']!r}")
    if float(o["r1"]) != 0:
        raise ConfigError(f"{key}.r1={o['r1']}: the R1 gradient penalty is not built (LARP's default is 0)")
    if int(o["d_update_freq"]) < 1 or int(o["disc_start"]) < 0 or float(o["lecam"]) < 0:
        raise ConfigError(f"{key}: d_update_freq must be >= 1, disc_start and lecam >= 0, got {o}")
    unknown = set(o["disc"] or {}) - set(DISC_KEYS)
    if unknown:
        raise ConfigError(f"{key}.disc: unknown keys {sorted(unknown)}; known: {list(DISC_KEYS)}")


def build_tokenizer_loss(
    weights: dict[str, Any], options: dict[str, Any], size: str, frame_num: int, input_size: int
) -> TokenizerLoss | None:
    """The loss terms `weights` (model.tokenizer_loss) switch on, for the clips of a tokenizer of `frame_num`
    frames of `input_size`^2 (None when lpips and gan are both 0); the discriminator is `size`'s preset."""
    check_options(options)
    lpips, gan = float(weights["lpips"]), float(weights["gan"])
    if lpips < 0 or gan < 0:
        raise ConfigError(f"model.tokenizer_loss: lpips and gan must be >= 0, got {lpips}, {gan}")
    if not (lpips or gan):
        return None
    if lpips and input_size < MIN_FRAME_SIZE["vgg"]:
        raise ConfigError(
            f"model.tokenizer_loss.lpips: LPIPS-VGG needs frames of at least {MIN_FRAME_SIZE['vgg']} pixels, "
            f"the tokenizer's are {input_size}"
        )
    disc = None
    if gan:
        arch = {**DISC_PRESETS[size], **(options["disc"] or {})}
        try:
            disc = TransformerDiscriminator(**arch, input_size=input_size, frame_num=frame_num)
        except ValueError as err:
            raise ConfigError(f"model.tokenizer_loss_options.disc {arch}: {err}") from err
    return TokenizerLoss(options, disc, with_lpips=bool(lpips))


class TokenizerLoss(nn.Module):
    """The frozen LPIPS network (`perceptual`, never saved by LARPModule), the `discriminator` and LeCam's EMA
    buffers; either network may be None. Clips are [B, 3, T, S, S] in [0, 1] (LARPModule.clip)."""

    def __init__(
        self, options: dict[str, Any], discriminator: TransformerDiscriminator | None, with_lpips: bool
    ):
        super().__init__()
        self.disc_loss, self.lecam = str(options["disc_loss"]), float(options["lecam"])
        self.disc_start, self.d_update_freq = int(options["disc_start"]), int(options["d_update_freq"])
        self.perceptual = lpips_network("vgg", options["lpips_backbone_path"])[0] if with_lpips else None
        self.discriminator = discriminator
        if discriminator is not None:
            self.register_buffer("lecam_ema_real", torch.zeros(()))
            self.register_buffer("lecam_ema_fake", torch.zeros(()))

    def train(self, mode: bool = True) -> TokenizerLoss:
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.eval()  # LARP's set_perceptual_eval: the heads' dropout stays off
        return self

    def saved_keys(self) -> list[str]:
        """What a checkpoint keeps: the discriminator and the LeCam EMA (never the LPIPS network)."""
        if self.discriminator is None:
            return []
        disc = [f"discriminator.{k}" for k in self.discriminator.state_dict()]
        return [*disc, "lecam_ema_real", "lecam_ema_fake"]

    # ----------------------------------------------------------------- schedule (training steps, 0-based)
    def gan_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.disc_start

    def trains_discriminator(self, step: int) -> bool:
        return self.gan_active(step) and (step + 1) % self.d_update_freq == 0

    # ----------------------------------------------------------------- generator side
    def perceptual_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS-VGG over the frames of clips x, x_hat [B, 3, T, S, S] in [0, 1] (differentiable)."""
        frames = [v.transpose(1, 2).flatten(0, 1) for v in (x, x_hat)]  # [(B T), 3, S, S]
        return self.perceptual(*frames, normalize=True).mean()  # per frame [(B T), 1, 1, 1]

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """The adversarial term of reconstructions fake [B, 3, T, S, S] (gradients reach fake, not D's weights
        when the caller froze them)."""
        logits = self.discriminator(fake)  # [B, 1]
        return -logits.mean() if self.disc_loss == "hinge" else -F.logsigmoid(logits).mean()

    def generator_terms(self, x: torch.Tensor, x_hat: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """`lpips` (with the perceptual network) and `gan_g` (with the discriminator; 0 before disc_start)."""
        out = {}
        if self.perceptual is not None:
            out["lpips"] = self.perceptual_loss(x, x_hat)
        if self.discriminator is not None:
            out["gan_g"] = self.generator_loss(x_hat) if self.gan_active(step) else x_hat.new_zeros(())
        return out

    # ----------------------------------------------------------------- discriminator side
    def discriminator_loss(
        self, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """`loss` = `gan_d` + lecam x `lecam` (the unweighted regulariser) for clips real, fake [B, 3, T, S,
        S] (fake detached here); updates the LeCam EMA. `generator`: ns_smooth's target noise (CPU)."""
        logits_real = self.discriminator(real)  # [B, 1]
        logits_fake = self.discriminator(fake.detach())
        reg = lecam_reg(logits_real.mean(), logits_fake.mean(), self.lecam_ema_real, self.lecam_ema_fake)
        self.update_lecam_ema(logits_real, logits_fake)
        if self.disc_loss == "hinge":
            d = 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())
        else:
            t_real, t_fake = (
                smooth_targets(logits_real, logits_fake, generator)
                if self.disc_loss == "ns_smooth"
                else (torch.ones_like(logits_real), torch.zeros_like(logits_fake))
            )
            d = F.binary_cross_entropy_with_logits(logits_real, t_real) + F.binary_cross_entropy_with_logits(
                logits_fake, t_fake
            )
        return {
            "loss": d + self.lecam * reg,
            "gan_d": d,
            "lecam": reg,
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
        }

    @torch.no_grad()
    def update_lecam_ema(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> None:
        for ema, logits in ((self.lecam_ema_real, logits_real), (self.lecam_ema_fake, logits_fake)):
            ema.mul_(LECAM_DECAY).add_(logits.float().mean(), alpha=1 - LECAM_DECAY)


def lecam_reg(
    real: torch.Tensor, fake: torch.Tensor, ema_real: torch.Tensor, ema_fake: torch.Tensor
) -> torch.Tensor:
    """LeCam's regulariser (Tseng et al. 2021) of the mean logits:
    relu(real - ema_fake)^2 + relu(ema_real - fake)^2."""
    return F.relu(real - ema_fake).square() + F.relu(ema_real - fake).square()


def smooth_targets(
    logits_real: torch.Tensor, logits_fake: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ns_smooth's BCE targets: real 1 - |N(0,1)| x 0.15 clamped >= 0.7, fake |N(0,1)| x 0.15 clamped <= 0.3,
    drawn on the CPU from `generator` (a resumed run draws the same) and moved to the logits' device."""
    noise = [torch.randn(t.shape, generator=generator).abs() * SMOOTH_STD for t in (logits_real, logits_fake)]
    real = (1 - noise[0]).clamp_min(1 - SMOOTH_CLAMP)
    fake = noise[1].clamp_max(SMOOTH_CLAMP)
    return real.to(logits_real), fake.to(logits_fake)
