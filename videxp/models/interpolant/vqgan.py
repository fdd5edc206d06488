"""The taming VQGAN `f8_small`, RIVER's KTH (and BAIR-64) autoencoder, with taming's state-dict key names."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from videxp.models.interpolant.autoencoder import LatentAutoencoder, Quantized, VectorQuantizer

# Constructor keyword sets. "f8_small" is the paper network (taming's vq-f8 small ddconfig, 63.8M parameters);
# "tiny" is the same with ch=32 (the conformance fixture); "test" is a sub-1M network that still downsamples
# by 8, for fast tests of code that only needs some autoencoder.
PRESETS: dict[str, dict[str, Any]] = {
    "f8_small": dict(
        ch=128,
        ch_mult=(1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(16,),
        resolution=64,
        in_channels=3,
        out_ch=3,
        z_channels=4,
        embed_dim=4,
        n_embed=16384,
        dropout=0.0,
        beta=0.25,
    ),
    "tiny": dict(
        ch=32,
        ch_mult=(1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(16,),
        resolution=64,
        in_channels=3,
        out_ch=3,
        z_channels=4,
        embed_dim=4,
        n_embed=16384,
        dropout=0.0,
        beta=0.25,
    ),
    "test": dict(
        ch=32,
        ch_mult=(1, 1, 1, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        resolution=64,
        in_channels=3,
        out_ch=3,
        z_channels=4,
        embed_dim=4,
        n_embed=256,
        dropout=0.0,
        beta=0.25,
    ),
}

NUM_GROUPS = 32  # every GroupNorm of the network (taming's Normalize)
NORM_EPS = 1e-6


def swish(x: torch.Tensor) -> torch.Tensor:
    """x · sigmoid(x)."""
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    """taming's Normalize: GroupNorm with 32 groups, eps 1e-6 and an affine."""
    if channels % NUM_GROUPS != 0:
        raise ValueError(f"GroupNorm needs a channel count divisible by {NUM_GROUPS}, got {channels}")
    return nn.GroupNorm(NUM_GROUPS, channels, eps=NORM_EPS, affine=True)


# ----------------------------------------------------------------------------- building blocks
class ResnetBlock(nn.Module):
    """GN → swish → conv3x3 → GN → swish → dropout → conv3x3, plus a 1×1 `nin_shortcut` on a width change."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H, W]."""
        h = self.conv1(swish(self.norm1(x)))  # [B, C_out, H, W]
        h = self.conv2(self.dropout(swish(self.norm2(h))))  # [B, C_out, H, W]
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)  # [B, C_out, H, W]
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head, non-causal self-attention over the h·w positions (1×1 conv q/k/v/proj_out), residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H, W]."""
        B, C, H, W = x.shape
        h = self.norm(x)
        q = self.q(h).flatten(2).transpose(1, 2)  # [B, HW, C]
        k = self.k(h).flatten(2)  # [B, C, HW]
        v = self.v(h).flatten(2).transpose(1, 2)  # [B, HW, C]
        weights = torch.softmax(torch.bmm(q, k) * C**-0.5, dim=-1)  # [B, HW(query), HW(key)]
        out = torch.bmm(weights, v).transpose(1, 2).reshape(B, C, H, W)  # [B, C, H, W]
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 conv3x3 without padding: H, W -> H/2, W/2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H/2, W/2]."""
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then conv3x3 with padding 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, 2H, 2W]."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidStage(nn.Module):
    """Res → Attn → Res at the lowest resolution (keys `block_1`, `attn_1`, `block_2`)."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> [B, C, h, w]."""
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: `block.{j}` ResnetBlocks, each followed by `attn.{j}` when the level attends."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attend: bool, dropout: float):
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(widths[j], widths[j + 1], dropout) for j in range(num_blocks))
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(num_blocks) if attend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H, W] (resampling is the caller's `downsample` / `upsample`)."""
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn) > 0:
                x = self.attn[j](x)
        return x


# ----------------------------------------------------------------------------- encoder / decoder
class Encoder(nn.Module):
    """conv_in → levels (Res blocks [+ Attn], downsample except on the last) → mid → GN → swish → conv_out."""

    def __init__(
        self,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        resolution: int,
        in_channels: int,
        z_channels: int,
        dropout: float,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        nominal_res = resolution  # the config's resolution, not the input's: it only places the attention
        for i, mult in enumerate(ch_mult):
            attend = nominal_res in attn_resolutions
            level = Level(ch * in_mult[i], ch * mult, num_res_blocks, attend, dropout)
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(ch * mult)
                nominal_res //= 2
            self.down.append(level)
        width = ch * ch_mult[-1]
        self.mid = MidStage(width, dropout)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] -> latent [B, z_channels, H/f, W/f]."""
        h = self.conv_in(x)  # [B, ch, H, W]
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)  # [B, C, H/2, W/2]
        h = self.mid(h)  # [B, C_top, H/f, W/f]
        return self.conv_out(swish(self.norm_out(h)))  # [B, z_channels, H/f, W/f]


class Decoder(nn.Module):
    """conv_in → mid → levels from the top (Res blocks [+ Attn], upsample except on level 0) → GN → swish →
    conv_out (no tanh)."""

    def __init__(
        self,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        resolution: int,
        out_ch: int,
        z_channels: int,
        dropout: float,
    ):
        super().__init__()
        width = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = MidStage(width, dropout)
        levels: list[Level] = []
        nominal_res = resolution // 2 ** (len(ch_mult) - 1)
        for i in reversed(range(len(ch_mult))):  # built top-down, stored as up.0 (finest) ... up.{n-1}
            attend = nominal_res in attn_resolutions
            level = Level(width, ch * ch_mult[i], num_res_blocks + 1, attend, dropout)
            width = ch * ch_mult[i]
            if i != 0:
                level.upsample = Upsample(width)
                nominal_res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B, z_channels, h, w] -> images [B, out_ch, h·f, w·f]."""
        h = self.mid(self.conv_in(z))  # [B, C_top, h, w]
        for level in reversed(self.up):
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)  # [B, C, 2h, 2w]
        return self.conv_out(swish(self.norm_out(h)))  # [B, out_ch, H, W]


# ----------------------------------------------------------------------------- the autoencoder
class TamingVQGAN(LatentAutoencoder):
    """taming's VQModel (encoder, quant_conv, VectorQuantizer2, post_quant_conv, decoder) minus its losses."""

    PRESETS = PRESETS
    checkpoint_prefixes = ("", "ae.", "module.ae.")

    def __init__(
        self,
        ch: int = 128,
        ch_mult: tuple[int, ...] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        resolution: int = 64,
        in_channels: int = 3,
        out_ch: int = 3,
        z_channels: int = 4,
        embed_dim: int = 4,
        n_embed: int = 16384,
        dropout: float = 0.0,
        beta: float = 0.25,
    ):
        super().__init__()
        ch_mult, attn_resolutions = tuple(ch_mult), tuple(attn_resolutions)
        if len(ch_mult) < 1:
            raise ValueError("ch_mult must name at least one level")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        self.in_channels = in_channels
        self.latent_channels = embed_dim
        self.downsample = 2 ** (len(ch_mult) - 1)
        self.num_codes = n_embed
        shared = dict(
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            resolution=resolution,
            z_channels=z_channels,
            dropout=dropout,
        )
        self.encoder = Encoder(in_channels=in_channels, **shared)
        self.decoder = Decoder(out_ch=out_ch, **shared)
        # taming stores the quantiser as submodule `quantize`, which the interface's `quantize` method shadows
        # as an attribute: register it directly (keys `quantize.embedding.weight`), reach it via `quantizer`
        self._modules["quantize"] = VectorQuantizer(n_embed, embed_dim, beta)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latent quant_conv(encoder(x)) [B, C, H/f, W/f] of x [B, 3, H, W]."""
        self.check_images(x)
        return self.quant_conv(self.encoder(x))  # [B, C, H/f, W/f]

    @property
    def quantizer(self) -> VectorQuantizer:
        """The quantiser submodule (state-dict prefix `quantize.`)."""
        return self._modules["quantize"]

    def quantize(self, z: torch.Tensor) -> Quantized:
        """Nearest code per latent pixel of z [B, C, h, w] (first index on ties), with straight-through."""
        self.check_latents(z)
        return self.quantizer(z)

    def decode_quantized(self, z_q: torch.Tensor) -> torch.Tensor:
        """Images decoder(post_quant_conv(z_q)) [B, 3, h·f, w·f] from a quantised latent z_q [B, C, h, w]."""
        self.check_latents(z_q)
        return self.decoder(self.post_quant_conv(z_q))  # [B, 3, H, W]

    def last_layer_weight(self) -> torch.Tensor:
        """decoder.conv_out.weight (taming's adaptive adversarial weight uses its gradient)."""
        return self.decoder.conv_out.weight
