"""RIVER's own CLEVRER VQVAE: residual conv encoder/decoder, one self-attention stage, an 8192×4 codebook."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from videxp.models.interpolant.autoencoder import LatentAutoencoder, Quantized, VectorQuantizer

# Constructor keyword sets. "clevrer" is the paper network (RIVER's builders fix these widths; 32 groups leave
# no smaller valid width). "test" is a small, structurally identical network for fast tests of other code.
PRESETS: dict[str, dict[str, Any]] = {
    "clevrer": dict(
        in_channels=3,
        latent_channels=4,
        num_codes=8192,
        beta=0.25,
        encoder_width=32,
        decoder_width=256,
        num_groups=32,
    ),
    "test": dict(
        in_channels=3,
        latent_channels=4,
        num_codes=256,
        beta=0.25,
        encoder_width=8,
        decoder_width=32,
        num_groups=4,
    ),
}

NORM_EPS = 1e-6  # every GroupNorm of the network
LEAK = 0.2  # LeakyReLU slope of the residual and up blocks


def swish(x: torch.Tensor) -> torch.Tensor:
    """x · sigmoid(x)."""
    return x * torch.sigmoid(x)


# ----------------------------------------------------------------------------- building blocks
class ResidualBlock(nn.Module):
    """conv3x3 → avg-pool(f) → GN → LeakyReLU → conv3x3 → GN, plus a (conv1x1 → avg-pool(f) → GN) shortcut
    when the block resamples or changes width; LeakyReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, pool: int, num_groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = nn.AvgPool2d(pool) if pool != 1 else nn.Identity()
        self.bn1 = nn.GroupNorm(num_groups, out_channels, eps=NORM_EPS)  # named bn* in RIVER, a GroupNorm
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.GroupNorm(num_groups, out_channels, eps=NORM_EPS)
        self.downsample = None
        if pool != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.AvgPool2d(pool) if pool != 1 else nn.Identity(),
                nn.GroupNorm(num_groups, out_channels, eps=NORM_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H/f, W/f]."""
        out = self.pool(self.conv1(x))  # [B, C_out, H/f, W/f]
        out = F.leaky_relu(self.bn1(out), LEAK)
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)  # [B, C_out, H/f, W/f]
        return F.leaky_relu(out + shortcut, LEAK)


class UpBlock(nn.Module):
    """Nearest ×2 upsampling → conv3x3 (no bias) → BatchNorm2d → LeakyReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)  # the only real BatchNorm of the network (eps 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, 2H, 2W]."""
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, C, 2H, 2W]
        return F.leaky_relu(self.norm(self.conv(x)), LEAK)


class AttentionStage(nn.Module):
    """Base of Encoder and Decoder: residual → x + single-head self-attention over the h·w positions of GN(x)
    → residual, at constant width.

    RIVER keeps these four modules (`pre_attn_residual`, `attn_norm`, `attn`, `post_attn_residual`) directly
    on the encoder/decoder, so they are built on self here instead of in a submodule.
    """

    def _build_attention_stage(self, channels: int, num_groups: int) -> None:
        """Create the four modules of the stage on self."""
        self.pre_attn_residual = ResidualBlock(channels, channels, 1, num_groups)
        self.attn_norm = nn.GroupNorm(num_groups, channels, eps=NORM_EPS)
        self.attn = nn.MultiheadAttention(channels, num_heads=1, batch_first=True)
        self.post_attn_residual = ResidualBlock(channels, channels, 1, num_groups)

    def _attention_stage(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> [B, C, h, w]."""
        x = self.pre_attn_residual(x)
        B, C, h, w = x.shape
        tokens = self.attn_norm(x).flatten(2).transpose(1, 2)  # [B, h*w, C], row-major positions
        attended, _ = self.attn(tokens, tokens, tokens, need_weights=False)  # [B, h*w, C]
        x = x + attended.transpose(1, 2).reshape(B, C, h, w)
        return self.post_attn_residual(x)


class Encoder(AttentionStage):
    """Images [B, 3, H, W] -> continuous latent [B, latent_channels, H/8, W/8]."""

    def __init__(self, in_channels: int, latent_channels: int, width: int, num_groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        widths = [width, 2 * width, 4 * width, 8 * width]  # 32 -> 64 -> 128 -> 256 at paper size
        self.residuals = nn.ModuleList(
            ResidualBlock(c_in, c_out, 2, num_groups) for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self._build_attention_stage(widths[-1], num_groups)
        self.out_norm = nn.GroupNorm(num_groups, widths[-1], eps=NORM_EPS)
        self.out_conv = nn.Conv2d(widths[-1], latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, latent_channels, H/8, W/8]."""
        h = self.conv_in(x)  # [B, w, H, W]
        for block in self.residuals:
            h = block(h)  # halves H and W, doubles the width
        h = self._attention_stage(h)  # [B, 8w, H/8, W/8]
        return self.out_conv(swish(self.out_norm(h)))  # [B, latent_channels, H/8, W/8]


class Decoder(AttentionStage):
    """Quantised latent [B, latent_channels, h, w] -> images [B, 3, 8h, 8w] in (-1, 1)."""

    def __init__(self, latent_channels: int, out_channels: int, width: int, num_groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(latent_channels, width, 3, padding=1)
        self._build_attention_stage(width, num_groups)
        widths = [width, width // 2, width // 4, width // 8]  # 256 -> 128 -> 64 -> 32 at paper size
        self.residuals = nn.ModuleList(
            nn.Sequential(ResidualBlock(c_in, c_out, 1, num_groups), UpBlock(c_out))
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.out_norm = nn.GroupNorm(num_groups, widths[-1], eps=NORM_EPS)
        self.out_conv = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[B, latent_channels, h, w] -> [B, 3, 8h, 8w]."""
        h = self._attention_stage(self.conv_in(z))  # [B, D, h, w]
        for stage in self.residuals:
            h = stage(h)  # halves the width, doubles H and W
        return torch.tanh(self.out_conv(swish(self.out_norm(h))))  # [B, 3, 8h, 8w]


# ----------------------------------------------------------------------------- the autoencoder
class RiverVQVAE(LatentAutoencoder):
    """RIVER's CLEVRER VQVAE (`VQVAE`, `type: ours`); the flow model works on `encode`'s continuous latent.

    `state_dict()` keys are those of RIVER's network without the `module.` / `ae.backbone.` prefixes.
    """

    latent_channels = 4
    downsample = 8
    num_codes = 8192
    PRESETS = PRESETS
    checkpoint_prefixes = ("module.", "", "ae.backbone.", "module.ae.backbone.")

    def __init__(
        self,
        *,
        in_channels: int = 3,
        latent_channels: int = 4,
        num_codes: int = 8192,
        beta: float = 0.25,
        encoder_width: int = 32,
        decoder_width: int = 256,
        num_groups: int = 32,
    ):
        super().__init__()
        self._check_widths(encoder_width, decoder_width, num_groups)
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.num_codes = num_codes
        # module order follows RIVER's state dict: encoder, decoder, vector_quantizer
        self.encoder = Encoder(in_channels, latent_channels, encoder_width, num_groups)
        self.decoder = Decoder(latent_channels, in_channels, decoder_width, num_groups)
        self.vector_quantizer = VectorQuantizer(num_codes, latent_channels, beta)

    @staticmethod
    def _check_widths(encoder_width: int, decoder_width: int, num_groups: int) -> None:
        """Raise ValueError unless every GroupNorm's channel count is a positive multiple of num_groups."""
        if encoder_width < 1 or decoder_width < 1 or num_groups < 1:
            raise ValueError(
                f"widths and num_groups must be positive, got encoder_width={encoder_width}, "
                f"decoder_width={decoder_width}, num_groups={num_groups}"
            )
        if decoder_width % 8:
            raise ValueError(f"decoder_width must be divisible by 8 (it halves 3 times), got {decoder_width}")
        normed = {f"encoder width {m}·{encoder_width}": m * encoder_width for m in (2, 4, 8)}
        normed |= {f"decoder width {decoder_width}/{d}": decoder_width // d for d in (1, 2, 4, 8)}
        bad = [f"{name} = {c}" for name, c in normed.items() if c % num_groups]
        if bad:
            raise ValueError(
                f"GroupNorm needs channel counts divisible by num_groups={num_groups}; not divisible: "
                + ", ".join(bad)
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latent [B, C, H/8, W/8] of images x [B, 3, H, W] in [-1, 1]."""
        self.check_images(x)
        return self.encoder(x)

    def quantize(self, z: torch.Tensor) -> Quantized:
        """Nearest code per latent pixel of z [B, C, h, w] (first index on ties); z_q is straight-through."""
        self.check_latents(z)
        return self.vector_quantizer(z)

    def decode_quantized(self, z_q: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, 8h, 8w] in (-1, 1) from an already quantised latent z_q [B, C, h, w]."""
        self.check_latents(z_q)
        return self.decoder(z_q)

    def last_layer_weight(self) -> torch.Tensor:
        """decoder.out_conv.weight [3, D/8, 3, 3]."""
        return self.decoder.out_conv.weight
