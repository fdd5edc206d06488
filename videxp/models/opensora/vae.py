"""Open-Sora v1.3's causal video VAE (OpenSoraVAE_V1_3, 4x8x8, 16 channels) with the released key names."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from videxp.models.diffusers_common import resolve_device
from videxp.weights import state_check
from videxp.weights.files import parse_dtype, read_state_dict, resolve_weight_file

log = logging.getLogger(__name__)

HUB_ID = "hpcai-tech/OpenSora-VAE-v1.3"
# prefixes a file may put before the VAE keys (training wrappers); see `_strip_prefix`
CHECKPOINT_PREFIXES = ("", "module.", "model.", "vae.", "module.vae.", "model.vae.")

# Per-channel latent statistics of normalisation "video" (Open-Sora `vae_v1_3/constants.py`):
# latent = (posterior_mean - VIDEO_MEAN) / VIDEO_STD; decode undoes it first.
VIDEO_MEAN = (
    -0.19016949832439423, -0.04480062797665596, 0.020789705216884613, 0.01865335740149021,
    -0.011585569009184837, 0.0010865575168281794, 0.08378933370113373, 0.08902134001255035,
    0.00940945465117693, 0.08086848258972168, -0.07251627743244171, 0.05052144080400467,
    -0.0209724809974432, -0.1223079189658165, -0.003862356534227729, -0.023072388023138046,
)  # fmt: skip
VIDEO_STD = (
    0.9490776062011719, 0.9594117999076843, 0.9444302916526794, 0.9103284478187561,
    0.959351658821106, 0.8430351614952087, 0.8888124823570251, 0.9291136860847473,
    0.972594141960144, 0.8917953968048096, 0.8630853891372681, 0.8279891610145569,
    0.9114300012588501, 0.7922844886779785, 0.8991407155990601, 0.9473513960838318,
)  # fmt: skip


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class OpenSoraVAEConfig:
    """Encoder/decoder widths and the pipeline's chunking and normalisation (v1.3 inference settings)."""

    ch: int = 128  # base width; every GroupNorm has 32 groups, so a multiple of 32
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    down_sampling_layer: tuple[int, ...] = (1, 2)  # encoder levels with a temporal (3-D) downsample
    temporal_up_layers: tuple[int, ...] = (2, 3)  # decoder levels with a temporal (3-D) upsample
    in_channels: int = 3
    out_ch: int = 3
    z_channels: int = 16
    double_z: bool = True  # encoder emits mean | logvar (2 * z_channels)
    micro_frame_size: int | None = 17  # frames per encoder chunk (chunks share a frame); None: whole clip
    micro_batch_size: int | None = 1  # batch elements run through the networks at once (memory only)
    normalization: str | None = "video"  # latent statistics: "video" (the v1.3 constants) or None

    def __post_init__(self) -> None:
        for name in ("ch_mult", "down_sampling_layer", "temporal_up_layers"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.ch % 32:
            raise ValueError(f"ch={self.ch} must be a multiple of 32 (GroupNorm with 32 groups)")
        if 2 ** len(self.down_sampling_layer) != 2 ** len(self.temporal_up_layers):
            raise ValueError(
                f"down_sampling_layer {self.down_sampling_layer} and temporal_up_layers "
                f"{self.temporal_up_layers} give different temporal factors"
            )
        if self.micro_frame_size is not None and (
            self.micro_frame_size < 1 or (self.micro_frame_size - 1) % self.time_factor
        ):
            raise ValueError(
                f"micro_frame_size={self.micro_frame_size} must be {self.time_factor}k+1 "
                "(or None for no chunking)"
            )
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size={self.micro_batch_size} must be >= 1 or None")
        if self.normalization not in (None, "video"):
            raise ValueError(f"normalization={self.normalization!r}; use 'video' or None")

    @property
    def time_factor(self) -> int:
        """Temporal compression of the bare causal VAE (4 for v1.3)."""
        return 2 ** len(self.down_sampling_layer)

    @property
    def space_factor(self) -> int:
        """Spatial compression (8 for v1.3)."""
        return 2 ** (len(self.ch_mult) - 1)


PRESETS: dict[str, OpenSoraVAEConfig] = {
    "full": OpenSoraVAEConfig(),  # hpcai-tech/OpenSora-VAE-v1.3: 259,163,811 parameters
    "tiny": OpenSoraVAEConfig(ch=32),  # conformance fixture (reference_outputs/opensora/vae_tiny.json): 16.3M
}


def vae_config(size: str | OpenSoraVAEConfig = "full", **overrides: Any) -> OpenSoraVAEConfig:
    """A preset ("full" | "tiny") or a given config, with field overrides applied."""
    if isinstance(size, OpenSoraVAEConfig):
        cfg = size
    elif size in PRESETS:
        cfg = PRESETS[size]
    else:
        raise ValueError(f"unknown Open-Sora VAE size {size!r}; known: {sorted(PRESETS)}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


# ----------------------------------------------------------------------------- frame arithmetic
# Pixel <-> latent frames. The bare causal VAE maps 4k+1 frames to k+1 latents: latent 0 is frame 0
# alone, latent j >= 1 stands for frames 4j-3 .. 4j. With micro-frame chunking (micro_frame_size M = 17)
# the clip is cut into chunks of M frames that share one frame (chunk c = frames 16c .. 16c+16) and each
# chunk is encoded on its own into L = (M-1)/4 + 1 = 5 latents (chunk c -> latents 5c .. 5c+4), so 16k+1
# frames give 5k latents.


def _chunk_latents(micro_frame_size: int, time_factor: int = 4) -> int:
    return (micro_frame_size - 1) // time_factor + 1


def check_num_frames(num_pixel_frames: int, micro_frame_size: int | None = 17, time_factor: int = 4) -> None:
    """ValueError unless the VAE can encode a clip of this many frames.

    Enforced: T == 1 (an image), or, with micro-frame chunking, T = (M-1)k + 1 (16k+1 for M = 17: 17, 33, 49,
    65, 81, 97, 113, ...), so every chunk is a full M-frame chunk; without chunking (M = None), T = 4k+1.
    Other lengths would either be cut short by the causal downsampling or end in a partial chunk whose latents
    the reference's latent-size rule ((T-1)//16*5) and the STDiT3 training data (16k+1 only) do not cover.
    """
    T = int(num_pixel_frames)
    if T == 1:
        return
    step = time_factor if micro_frame_size is None else micro_frame_size - 1
    if T < 1 or (T - 1) % step:
        rule = f"{step}k+1" + ("" if micro_frame_size is None else f" (micro_frame_size={micro_frame_size})")
        below = 1 + step * max((T - 1) // step, 0)
        hint = f"; nearest valid lengths: {below} or {below + step}" if T > 1 else ""
        raise ValueError(f"Open-Sora VAE cannot encode {T} frames: the frame count must be 1 or {rule}{hint}")


def latent_frames(num_pixel_frames: int, micro_frame_size: int | None = 17, time_factor: int = 4) -> int:
    """Latent frames of a valid clip: 1 -> 1; chunked (M = 17): 16k+1 -> 5k (17 -> 5, 33 -> 10, 49 -> 15,
    113 -> 35); unchunked: 4k+1 -> k+1. Raises like `check_num_frames` for other lengths."""
    check_num_frames(num_pixel_frames, micro_frame_size, time_factor)
    T = int(num_pixel_frames)
    if T == 1:
        return 1
    if micro_frame_size is None:
        return (T - 1) // time_factor + 1
    return (T - 1) // (micro_frame_size - 1) * _chunk_latents(micro_frame_size, time_factor)


def pixel_frames(num_latent_frames: int, micro_frame_size: int | None = 17, time_factor: int = 4) -> int:
    """Frames `decode` returns for this many latents (the inverse of `latent_frames` on valid lengths).

    Unchunked: n -> 4n-3. Chunked: latents are decoded in chunks of L = 5 (the last may be shorter, m latents
    -> 4m-3 frames) and consecutive chunks share one frame, so 5k -> 16k+1 and 1 -> 1."""
    n = int(num_latent_frames)
    if n < 1:
        raise ValueError(f"need at least one latent frame, got {n}")
    if micro_frame_size is None:
        return time_factor * (n - 1) + 1
    L = _chunk_latents(micro_frame_size, time_factor)
    full, rest = divmod(n, L)
    sizes = [L] * full + ([rest] if rest else [])
    return sum(time_factor * (m - 1) + 1 for m in sizes) - (len(sizes) - 1)


def pixel_frames_of_latent(i: int, micro_frame_size: int | None = 17, time_factor: int = 4) -> range:
    """The pixel frames latent frame `i` stands for (its temporal slot; what the decoder rebuilds from it).

    With chunks of M = 17 frames (L = 5 latents each): c, j = divmod(i, 5); the slot is frame 16c when j == 0,
    else frames 16c+4j-3 .. 16c+4j. So latent 0 -> [0], 1 -> [1..4], 2 -> [5..8], 3 -> [9..12],
    4 -> [13..16], 5 -> [16] (the frame shared by chunks 0 and 1), 6 -> [17..20], ... Without chunking:
    0 -> [0], j -> [4j-3 .. 4j]. Every frame of a 16k+1 clip is in exactly one slot, except the shared
    frames 16c (c >= 1), which are in two (the last latent of chunk c-1 and the first of chunk c; decode
    averages the two).

    This is the causal compression slot, not the receptive field: GroupNorm statistics span the whole
    micro-chunk, so a latent's *value* depends on every frame of its chunk (`encoder_frames_of_latent`).
    """
    i = int(i)
    if i < 0:
        raise ValueError(f"latent frame index must be >= 0, got {i}")
    base, j = 0, i
    if micro_frame_size is not None:
        c, j = divmod(i, _chunk_latents(micro_frame_size, time_factor))
        base = c * (micro_frame_size - 1)
    if j == 0:
        return range(base, base + 1)
    return range(base + time_factor * (j - 1) + 1, base + time_factor * j + 1)


def encoder_frames_of_latent(
    i: int, num_pixel_frames: int, micro_frame_size: int | None = 17, time_factor: int = 4
) -> range:
    """The pixel frames the encoder reads to compute latent `i` of a clip of `num_pixel_frames` frames:
    its whole micro-chunk (chunk c = i // 5 -> frames 16c .. 16c+16), or the whole clip without chunking.
    A latent equals its value in the full-clip encoding exactly when these frames are the same."""
    n = latent_frames(num_pixel_frames, micro_frame_size, time_factor)
    if not 0 <= int(i) < n:
        raise ValueError(f"latent frame {i} out of range for {num_pixel_frames} frames ({n} latents)")
    T = int(num_pixel_frames)
    if micro_frame_size is None or T == 1:
        return range(0, T)
    c = int(i) // _chunk_latents(micro_frame_size, time_factor)
    return range(c * (micro_frame_size - 1), c * (micro_frame_size - 1) + micro_frame_size)


# ----------------------------------------------------------------------------- layers
def Normalize(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with 32 groups over (C/32, T, H, W), as every norm of the VAE."""
    return nn.GroupNorm(32, channels, eps=eps)


class CausalConv3d(nn.Module):
    """Conv3d padded causally in time (k_t-1 zero frames in front), 'same' in space; weights in `.conv`."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.time_pad = kernel_size - 1 + max(1 - stride, 0)
        self.space_pad = kernel_size // 2
        self.conv = nn.Conv3d(cin, cout, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.space_pad
        x = F.pad(x, (p, p, p, p, self.time_pad, 0))  # [B, C, T+pad, H+2p, W+2p]
        return self.conv(x)


def per_frame(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D module to every frame: [B, C, T, H, W] -> [B, C', T, H', W']."""
    B, C, T, H, W = x.shape
    y = fn(x.transpose(1, 2).reshape(B * T, C, H, W))  # [B*T, C', H', W']
    return y.reshape(B, T, *y.shape[1:]).transpose(1, 2)


class ResnetBlock3D(nn.Module):
    """GN -> SiLU -> conv1 -> GN -> SiLU -> conv2 (causal 3x3x3), plus a 1x1x1 shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = Normalize(cin)
        self.conv1 = CausalConv3d(cin, cout, 3)
        self.norm2 = Normalize(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(cout, cout, 3)
        self.nin_shortcut = CausalConv3d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all (t, h, w) tokens, causal in the flattened token order."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = CausalConv3d(channels, channels, 1)
        self.k = CausalConv3d(channels, channels, 1)
        self.v = CausalConv3d(channels, channels, 1)
        self.proj_out = CausalConv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))  # [B,1,THW,C]
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, 1, THW, C], scale C^-0.5
        a = a[:, 0].transpose(1, 2).reshape(B, C, T, H, W)
        return x + self.proj_out(a)


class MidBlock(nn.Module):
    """Res -> Attn -> Res at the lowest resolution."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.block_1 = ResnetBlock3D(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock3D(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Downsample2D(nn.Module):
    """Per frame: zero-pad right/bottom by 1, Conv2d k3 stride 2 (H, W halve; T kept)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(lambda f: self.conv(F.pad(f, (0, 1, 0, 1))), x)


class Downsample3D(nn.Module):
    """Causal Conv3d k3 stride 2 in T, H, W (4k+1 frames -> 2k+1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Per frame: nearest x2, Conv2d k3 padding 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(lambda f: self.conv(F.interpolate(f, scale_factor=2.0, mode="nearest")), x)


class UpsampleBody3D(nn.Module):
    """The two causal convs of Upsample3D: GN2(conv2(SiLU(GN1(conv1(u))))), GroupNorm eps 1e-5."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, 3)
        self.norm1 = Normalize(channels, eps=1e-5)
        self.conv2 = CausalConv3d(channels, channels, 3)
        self.norm2 = Normalize(channels, eps=1e-5)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(F.silu(self.norm1(self.conv1(u)))))


class Upsample3D(nn.Module):
    """Nearest x2 in T, H, W, then u + SiLU(body(u) + u)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv3d = UpsampleBody3D(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, C, 2T, 2H, 2W]
        return u + F.silu(self.conv3d(u) + u)


class Level(nn.Module):
    """One resolution level: ResNet blocks, then an optional resampler (`downsample` or `upsample`)."""

    def __init__(self, blocks: list[nn.Module], resample_name: str, resample: nn.Module | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        resample = getattr(self, self.resample_name, None)
        return x if resample is None else resample(x)


# ----------------------------------------------------------------------------- encoder / decoder
class VideoEncoder(nn.Module):
    """[B, 3, 4k+1, H, W] -> moments [B, 2*z, k+1, H/8, W/8] (mean | logvar)."""

    def __init__(self, cfg: OpenSoraVAEConfig, dropout: float = 0.0):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        self.conv_in = CausalConv3d(cfg.in_channels, ch, 3)
        levels, cin = [], ch
        for i, m in enumerate(mult):
            cout = ch * m
            blocks = [ResnetBlock3D(c, cout, dropout) for c in [cin] + [cout] * (cfg.num_res_blocks - 1)]
            down = None
            if i != len(mult) - 1:
                down = Downsample3D(cout) if i in cfg.down_sampling_layer else Downsample2D(cout)
            levels.append(Level(blocks, "downsample", down))
            cin = cout
        self.down = nn.ModuleList(levels)
        self.mid = MidBlock(cin, dropout)
        self.norm_out = Normalize(cin)
        self.conv_out = CausalConv3d(cin, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # [B, ch, T, H, W]
        for level in self.down:
            h = level(h)  # [B, ch*m, T', H', W']
        h = self.mid(h)  # [B, 4ch, T/4, H/8, W/8]
        return self.conv_out(F.silu(self.norm_out(h)))  # [B, 2z, T/4, H/8, W/8]


class VideoDecoder(nn.Module):
    """latents [B, z, n, h, w] -> pixels [B, 3, 4n-3, 8h, 8w]."""

    def __init__(self, cfg: OpenSoraVAEConfig, dropout: float = 0.0):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        cin = ch * mult[-1]
        self.conv_in = CausalConv3d(cfg.z_channels, cin, 3)
        self.mid = MidBlock(cin, dropout)
        levels: list[nn.Module] = [nn.Identity()] * len(mult)
        for i in reversed(range(len(mult))):  # built deepest first, stored by level index
            cout = ch * mult[i]
            blocks = [ResnetBlock3D(c, cout, dropout) for c in [cin] + [cout] * cfg.num_res_blocks]
            up = None
            if i != 0:
                up = Upsample3D(cout) if i in cfg.temporal_up_layers else Upsample2D(cout)
            levels[i] = Level(blocks, "upsample", up)
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(cin)
        self.conv_out = nn.Conv3d(cin, cfg.out_ch, 3)  # plain conv: padded by hand in forward
        self.drop_frames = cfg.time_factor - 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))  # [B, 4ch, n, h, w]
        for level in reversed(self.up):
            h = level(h)  # [B, ch*m, ..., ...]; after all levels [B, ch, 4n, 8h, 8w]
        h = F.pad(F.silu(self.norm_out(h)), (1, 1, 1, 1, 2, 0))  # [B, ch, 4n+2, 8h+2, 8w+2]
        return self.conv_out(h)[:, :, self.drop_frames :]  # [B, 3, 4n-3, 8h, 8w]


# ----------------------------------------------------------------------------- the VAE
class OpenSoraVAE(nn.Module):
    """OpenSoraVAE_V1_3: causal 3-D VAE, 4x8x8 compression, 16 latent channels, 17-frame micro-chunks.

    `encode`: pixels [B, 3, T, H, W] in [-1, 1] (T = 1 or 16k+1, H, W multiples of 8) -> normalised
    latents [B, 16, T', H/8, W/8] with T' = `latent_frames(T)`; `decode` inverts it. State-dict keys and
    shapes equal the released `hpcai-tech/OpenSora-VAE-v1.3` checkpoint (`encoder.*`, `decoder.*`; no
    buffers).
    """

    def __init__(self, config: OpenSoraVAEConfig | str = "full", **overrides: Any):
        super().__init__()
        self.config = vae_config(config, **overrides)
        self.encoder = VideoEncoder(self.config)
        self.decoder = VideoDecoder(self.config)

    # -- frame arithmetic with this VAE's chunking
    def check_num_frames(self, num_pixel_frames: int) -> None:
        """ValueError unless T = 1 or 16k+1 (with micro_frame_size 17; see module function)."""
        check_num_frames(num_pixel_frames, self.config.micro_frame_size, self.config.time_factor)

    def latent_frames(self, num_pixel_frames: int) -> int:
        """1 -> 1, 16k+1 -> 5k (micro_frame_size 17); see the module function."""
        return latent_frames(num_pixel_frames, self.config.micro_frame_size, self.config.time_factor)

    def pixel_frames(self, num_latent_frames: int) -> int:
        """Frames `decode` returns for this many latents (5k -> 16k+1, 1 -> 1)."""
        return pixel_frames(num_latent_frames, self.config.micro_frame_size, self.config.time_factor)

    def pixel_frames_of_latent(self, i: int) -> range:
        """The pixel frames latent `i` stands for (0 -> [0], 1 -> [1..4], ..., 5 -> [16], 6 -> [17..20])."""
        return pixel_frames_of_latent(i, self.config.micro_frame_size, self.config.time_factor)

    def encoder_frames_of_latent(self, i: int, num_pixel_frames: int) -> range:
        """The pixel frames latent `i`'s value depends on (its whole micro-chunk)."""
        cfg = self.config
        return encoder_frames_of_latent(i, num_pixel_frames, cfg.micro_frame_size, cfg.time_factor)

    # -- normalisation
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        if self.config.normalization is None:
            z = self.config.z_channels
            return like.new_zeros(z).view(shape), like.new_ones(z).view(shape)
        mean = torch.tensor(VIDEO_MEAN, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(VIDEO_STD, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def _micro_batches(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        n = self.config.micro_batch_size or x.shape[0]
        return torch.cat([fn(x[b : b + n]) for b in range(0, x.shape[0], n)], dim=0)

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """Raw encoder output [B, 2z, T', H/8, W/8] (mean | logvar), micro-chunks encoded separately."""
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected video [B, {self.config.in_channels}, T, H, W], got {list(x.shape)}")
        B, C, T, H, W = x.shape
        f = self.config.space_factor
        if H % f or W % f:
            raise ValueError(f"Open-Sora VAE needs H and W that are multiples of {f}, got {H}x{W}")
        self.check_num_frames(T)
        M = self.config.micro_frame_size
        if T == 1 or M is None:
            return self._micro_batches(x, self.encoder)
        chunks = [x[:, :, s : s + M] for s in range(0, T - 1, M - 1)]  # each [B, 3, M, H, W]; share a frame
        return torch.cat([self._micro_batches(c, self.encoder) for c in chunks], dim=2)  # [B, 2z, T', h, w]

    def encode(
        self,
        x: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
        return_moments: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pixels [B, 3, T, H, W] in [-1, 1] -> normalised latents [B, 16, latent_frames(T), H/8, W/8].

        `sample=True` (the reference's default) draws mean + exp(0.5 * clamp(logvar, -30, 20)) * eps with
        `generator`; `sample=False` takes the posterior mean. The latent is (z - mean_c) / std_c with the
        "video" constants. `return_moments` also returns the raw moments [B, 32, T', H/8, W/8].
        """
        moments = self.encode_moments(x)
        z = self.latents_from_moments(moments, sample, generator)  # [B, 16, T', h, w]
        return (z, moments) if return_moments else z

    def latents_from_moments(
        self, moments: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Raw moments [B, 32, T', h, w] -> normalised latents [B, 16, T', h, w], as `encode` (a posterior
        sample with `generator`, or the mean): lets callers encode a clip once and sample it many times."""
        zc = self.config.z_channels
        z = moments[:, :zc]
        if sample and self.config.double_z:
            std = torch.exp(0.5 * moments[:, zc:].clamp(-30.0, 20.0))
            eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z + std * eps
        mean_c, std_c = self._stats(z)
        return (z - mean_c) / std_c

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Normalised latents [B, 16, n, h, w] -> pixels [B, 3, pixel_frames(n), 8h, 8w] (about [-1, 1]).

        Latents are decoded in chunks of 5 (micro_frame_size 17), each giving 17 frames; consecutive chunks
        share a frame, set to the mean of the previous chunk's last and the next chunk's first frame.
        `num_frames` keeps the first `num_frames` frames (at most pixel_frames(n)).
        """
        if z.ndim != 5 or z.shape[1] != self.config.z_channels:
            raise ValueError(f"expected latents [B, {self.config.z_channels}, n, h, w], got {list(z.shape)}")
        n = z.shape[2]
        total = self.pixel_frames(n)
        if num_frames is not None and not 1 <= int(num_frames) <= total:
            raise ValueError(f"num_frames={num_frames}: {n} latent frames decode to {total} frames")
        mean_c, std_c = self._stats(z)
        z = z * std_c + mean_c
        M = self.config.micro_frame_size
        if M is None:
            x = self._micro_batches(z, self.decoder)
        else:
            L = _chunk_latents(M, self.config.time_factor)
            parts: list[torch.Tensor] = []
            for s in range(0, n, L):
                y = self._micro_batches(z[:, :, s : s + L], self.decoder)  # [B, 3, <=M, H, W]
                if parts:
                    prev = parts[-1]
                    parts[-1] = torch.cat([prev[:, :, :-1], 0.5 * (prev[:, :, -1:] + y[:, :, :1])], dim=2)
                    y = y[:, :, 1:]
                parts.append(y)
            x = torch.cat(parts, dim=2)  # [B, 3, total, H, W]
        return x if num_frames is None else x[:, :, : int(num_frames)]

    def forward(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reconstruction: decode(encode(x)) with the same number of frames."""
        return self.decode(self.encode(x, sample=sample, generator=generator), num_frames=x.shape[2])


# ----------------------------------------------------------------------------- loading
def _strip_prefix(state: dict[str, torch.Tensor], expected: list[str]) -> tuple[str, dict[str, torch.Tensor]]:
    """Remove the prefix (one of CHECKPOINT_PREFIXES) under which the file holds most of the VAE's keys.

    With a non-empty prefix, tensors outside it (e.g. the rest of a training checkpoint) are ignored; without
    one the whole file must be the VAE."""
    want = set(expected)
    best: tuple[str, dict[str, torch.Tensor], int] = ("", state, len(want & state.keys()))
    for prefix in CHECKPOINT_PREFIXES[1:]:
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        hits = len(want & sub.keys())
        if hits > best[2]:
            best = (prefix, sub, hits)
    prefix, sub, _ = best
    if prefix and len(sub) != len(state):
        log.info("ignoring %d tensors outside prefix %r", len(state) - len(sub), prefix)
    return prefix, sub


def load_state_strict(vae: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Strict, assigning load with an error naming missing / unexpected keys and shape mismatches."""
    state_check.load_state_strict(vae, state, source, "the Open-Sora VAE (another size?)", assign=True)


def load_vae(
    path_or_id: str | os.PathLike = HUB_ID,
    size: str | OpenSoraVAEConfig = "full",
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype = torch.float32,
    revision: str | None = None,
    **overrides: Any,
) -> OpenSoraVAE:
    """The VAE of preset `size` (or a config; plus field overrides), weights strictly loaded, in eval mode.

    `path_or_id`: a .safetensors / .pt / .pth / .bin file, a folder holding model.safetensors (or a single
    weight file), or a hub id at `revision` (`hf_hub_download`; offline only the cache is read, and a miss
    raises `ModelNotAvailable` naming the id and the cache folder). A wrapper prefix (``module.``, ``model.``,
    ``vae.``, ...) is stripped. Built on the meta device, so no memory goes to a random initialisation.
    """
    path = resolve_weight_file(path_or_id, "Open-Sora VAE", revision)
    state = read_state_dict(path)
    with torch.device("meta"):
        vae = OpenSoraVAE(vae_config(size, **overrides))
    prefix, state = _strip_prefix(state, list(vae.state_dict()))
    load_state_strict(vae, state, source=str(path) + (f" (prefix {prefix!r} removed)" if prefix else ""))
    return vae.to(device=resolve_device(device), dtype=parse_dtype(dtype)).eval()
