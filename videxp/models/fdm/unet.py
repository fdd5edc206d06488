"""FDM's video UNet: a per-frame 2-D UNet with factorised temporal (RPE) + spatial attention."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as grad_checkpoint

# FDM's `create_model`: channel multipliers per image size (other sizes need an explicit channel_mult)
CHANNEL_MULT_BY_IMAGE_SIZE: dict[int, tuple[int, ...]] = {
    32: (1, 2, 2, 2),
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
    256: (1, 1, 2, 2, 4, 4),
}

# Named network sizes (`model.size`) in FDM's own config names (its checkpoints' `config` keys); keys left out
# take FDM's defaults below, and a null channel_mult FDM's rule by image size.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        num_channels=32, num_res_blocks=1, channel_mult=[1, 2], attention_resolutions="16", num_heads=2
    ),
    "small": dict(
        num_channels=64, num_res_blocks=2, channel_mult=[1, 2, 2], attention_resolutions="16,8", num_heads=4
    ),
    "paper64": dict(
        num_channels=128, num_res_blocks=2, channel_mult=None, attention_resolutions="16,8", num_heads=4
    ),
    "carla128": dict(
        num_channels=128, num_res_blocks=1, channel_mult=None, attention_resolutions="16,8", num_heads=4
    ),
}

# FDM's `model_and_diffusion_defaults` for the network keys (used when a config leaves one out)
FDM_NET_DEFAULTS: dict[str, Any] = {
    "num_channels": 128,
    "num_res_blocks": 2,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "attention_resolutions": "16,8",
    "dropout": 0.0,
    "learn_sigma": False,
    "use_checkpoint": False,
    "use_scale_shift_norm": True,
    "use_rpe_net": True,
    "num_classes": None,  # videxp extension: class-conditional net (FDM itself is unconditional)
}


# ----------------------------------------------------------------------------- small helpers
class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32 groups) computed in float32, cast back to the input dtype (as improved-diffusion)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero all parameters of `module` (FDM zero-initialises residual outputs) and return it."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [N, dim] of (possibly fractional) timesteps [N]; cos half first, then sin."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs.to(timesteps.device)[None]  # [N, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [N, 2*half]
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def frame_mask(mask: torch.Tensor, B: int, T: int, name: str) -> torch.Tensor:
    """Accept a per-frame mask as [B, T] or [B, T, 1, 1, 1] (FDM's shape); return it as [B, T]."""
    if tuple(mask.shape) not in ((B, T), (B, T, 1, 1, 1)):
        raise ValueError(f"{name} must be [B, T] or [B, T, 1, 1, 1] (B={B}, T={T}), got {list(mask.shape)}")
    return mask.reshape(B, T)


def as_labels(labels: Any, B: int, num_classes: int, device: torch.device, source: str) -> torch.Tensor:
    """Class labels (list of ints or tensor, one per row) -> LongTensor [B] on `device`, each in
    [0, num_classes); `source` names where they came from in error messages."""
    if isinstance(labels, (list, tuple)) and any(v is None for v in labels):
        raise ValueError(f"{source} has no label for some rows: {list(labels)}")
    y = torch.as_tensor(labels).reshape(-1)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{source} must hold integer class indices, got dtype {y.dtype}")
    if y.numel() != B:
        raise ValueError(f"{source} holds {y.numel()} labels for {B} rows")
    if B and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{source} holds labels outside [0, {num_classes}): {y.tolist()}")
    return y.to(device=device, dtype=torch.int64)


def _maybe_checkpoint(enabled: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args), with activation checkpointing when `enabled` and autograd is recording."""
    if enabled and torch.is_grad_enabled():
        return grad_checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


# ----------------------------------------------------------------------------- conv blocks
class ResBlock(nn.Module):
    """improved-diffusion ResBlock: GN-SiLU-conv, timestep scale/shift on the second GN, zero-init conv."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:  # FDM never uses the 3x3 skip variant (use_conv=False)
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W], emb [N, E] -> [N, C_out, H, W]."""
        return _maybe_checkpoint(self.use_checkpoint, self._forward, x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)  # [N, C_out, H, W]
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]  # [N, 2*C_out or C_out, 1, 1]
        if self.use_scale_shift_norm:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = emb_out.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv (FDM: conv_resample=True)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)  # [N, C, H/2, W/2]


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # [N, C, 2H, 2W]


# ----------------------------------------------------------------------------- attention
class RPENet(nn.Module):
    """Relative-position net: features of d = idx_i - idx_j plus the diffusion-time embedding -> [.., H, F].

    Features are [log(1 + max(d, 0)), log(1 + max(-d, 0)), 1[d == 0]]; the output layer is zero-initialised.
    """

    def __init__(self, channels: int, num_heads: int, time_embed_dim: int):
        super().__init__()
        self.channels = channels
        self.num_heads = num_heads
        self.embed_distances = nn.Linear(3, channels)
        self.embed_diffusion_time = nn.Linear(time_embed_dim, channels)
        self.out = zero_init(nn.Linear(channels, channels))

    def forward(self, temb: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        """temb [B*T, E] (one row per query frame), distances [B, T, T] -> R [B, T, T, heads, C/heads]."""
        B, T, _ = distances.shape
        d = distances.to(torch.promote_types(temb.dtype, torch.float32))  # float32 (float64 if double)
        feats = torch.stack(
            [torch.log(1 + d.clamp(min=0)), torch.log(1 + (-d).clamp(min=0)), (d == 0).to(d.dtype)], dim=-1
        )  # [B, T, T, 3]
        emb = self.embed_diffusion_time(temb).view(B, T, 1, self.channels) + self.embed_distances(feats)
        R = self.out(F.silu(emb))  # [B, T, T, C]
        return R.view(B, T, T, self.num_heads, self.channels // self.num_heads)


class RPE(nn.Module):
    """Holder of one RPENet (FDM's `RPE` with use_rpe_net=True; key prefix `rpe_net.`)."""

    def __init__(self, channels: int, num_heads: int, time_embed_dim: int):
        super().__init__()
        self.rpe_net = RPENet(channels, num_heads, time_embed_dim)

    def forward(self, temb: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        return self.rpe_net(temb, distances)  # [B, T, T, heads, C/heads]


class _AttentionBase(nn.Module):
    """Shared layers of FDM's `RPEAttention`: GroupNorm, qkv Linear, zero-init output projection.

    FDM QUIRK (kept, it changes outputs of trained weights): the residual is added to the
    *normalised* input, i.e. `out = norm(x) + proj_out(attn(norm(x)))`, not `x + ...`. The
    un-normalised activations never bypass the block.
    """

    def __init__(self, channels: int, num_heads: int, use_checkpoint: bool):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.scale = self.head_dim**-0.5
        self.use_checkpoint = use_checkpoint
        # registration order = FDM's state_dict order
        self.qkv = nn.Linear(channels, channels * 3)
        self.proj_out = zero_init(nn.Linear(channels, channels))
        self.norm = GroupNorm32(channels)

    def _qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h [..., L, C] -> q, k, v [..., heads, L, C/heads]; qkv channels are laid out [3, heads, F]."""
        qkv = self.qkv(h).unflatten(-1, (3, self.num_heads, self.head_dim))  # [..., L, 3, heads, F]
        qkv = qkv.movedim(-4, -2)  # [..., 3, heads, L, F]
        return qkv.unbind(dim=-4)


class SpatialAttention(_AttentionBase):
    """Self-attention over the H*W positions of each frame (no positional terms)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, C, L=H*W] -> [B, T, C, L]."""
        return _maybe_checkpoint(self.use_checkpoint, self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C, L = x.shape
        h = self.norm(x.reshape(B * T, C, L)).transpose(1, 2)  # [BT, L, C], GroupNorm per frame
        q, k, v = self._qkv(h)  # [BT, heads, L, F]
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # [BT, heads, L, F]
        out = self.proj_out(out.transpose(1, 2).reshape(B * T, L, C))  # [BT, L, C]
        h = h + out  # quirk: residual onto the normalised input
        return h.transpose(1, 2).reshape(B, T, C, L)


class TemporalRPEAttention(_AttentionBase):
    """Self-attention over the T frames at each pixel, with iRPE-style relative positions in q, k and v.

    For query frame t and key frame s (d[t, s] = idx_t - idx_s, R_* = RPENet outputs [B, T, T, heads, F]):
        logit[t, s] = q_t.k_s * scale + (q_t * scale).R_k[t, s] + (k_s * scale).R_q[s, t]
        out[t]      = sum_s a[t, s] v_s + sum_s a[t, s] R_v[t, s]
    Frames attend only within their group: flag-1 frames (obs or latent) among themselves, flag-0
    (padding) frames among themselves.
    """

    def __init__(self, channels: int, num_heads: int, time_embed_dim: int, use_checkpoint: bool):
        super().__init__(channels, num_heads, use_checkpoint)
        self.rpe_q = RPE(channels, num_heads, time_embed_dim)
        self.rpe_k = RPE(channels, num_heads, time_embed_dim)
        self.rpe_v = RPE(channels, num_heads, time_embed_dim)

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, frame_indices: torch.Tensor, group: torch.Tensor
    ) -> torch.Tensor:
        """x [B, D=H*W, C, T], temb [B*T, E], frame_indices [B, T] int, group [B, T] bool -> [B, D, C, T]."""
        return _maybe_checkpoint(self.use_checkpoint, self._forward, x, temb, frame_indices, group)

    def _forward(
        self, x: torch.Tensor, temb: torch.Tensor, frame_indices: torch.Tensor, group: torch.Tensor
    ) -> torch.Tensor:
        B, D, C, T = x.shape
        # FDM QUIRK: GroupNorm over [C/32 channels x T frames] per pixel, so its statistics mix all T
        # frames, padding included (the one path by which flag-0 frames influence flag-1 frames).
        h = self.norm(x.reshape(B * D, C, T)).view(B, D, C, T).transpose(2, 3)  # [B, D, T, C]
        out = self.attend(h, temb, frame_indices, group)  # [B, D, T, C]
        h = h + out  # quirk: residual onto the normalised input
        return h.transpose(2, 3)  # [B, D, C, T]

    def attend(
        self, h: torch.Tensor, temb: torch.Tensor, frame_indices: torch.Tensor, group: torch.Tensor
    ) -> torch.Tensor:
        """The attention proper on normalised h [B, D, T, C] -> proj_out output [B, D, T, C]."""
        B, D, T, C = h.shape
        q, k, v = self._qkv(h)  # [B, D, heads, T, F]
        q = q * self.scale
        distances = frame_indices[:, :, None] - frame_indices[:, None, :]  # [B, T, T]: idx_t - idx_s
        R_q = self.rpe_q(temb, distances)  # [B, T, T, heads, F]
        R_k = self.rpe_k(temb, distances)
        R_v = self.rpe_v(temb, distances)
        logits = q @ k.transpose(-1, -2)  # [B, D, heads, T, T]
        logits = logits + torch.einsum("bdhtf,btshf->bdhts", q, R_k)  # key term
        logits = logits + torch.einsum("bdhsf,bsthf->bdhts", k * self.scale, R_q)  # query term (R_q[s, t])
        allowed = group[:, :, None] == group[:, None, :]  # [B, T, T]
        logits = logits.masked_fill(~allowed[:, None, None], float("-inf"))
        attn = torch.softmax(logits.float(), dim=-1).type(logits.dtype)  # [B, D, heads, T, T]
        out = attn @ v + torch.einsum("bdhts,btshf->bdhtf", attn, R_v)  # [B, D, heads, T, F]
        return self.proj_out(out.transpose(2, 3).reshape(B, D, T, C))  # heads-major channels


class FactorizedAttentionBlock(nn.Module):
    """Temporal attention (per pixel, over frames) followed by spatial attention (per frame, over pixels)."""

    def __init__(self, channels: int, num_heads: int, time_embed_dim: int, use_checkpoint: bool = False):
        super().__init__()
        # registration order = FDM's state_dict order (spatial first), though temporal runs first
        self.spatial_attention = SpatialAttention(channels, num_heads, use_checkpoint)
        self.temporal_attention = TemporalRPEAttention(channels, num_heads, time_embed_dim, use_checkpoint)

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, frame_indices: torch.Tensor, group: torch.Tensor, T: int
    ) -> torch.Tensor:
        """x [B*T, C, H, W] -> [B*T, C, H, W]."""
        BT, C, H, W = x.shape
        B = BT // T
        x = x.view(B, T, C, H, W).permute(0, 3, 4, 2, 1).reshape(B, H * W, C, T)  # [B, HW, C, T]
        x = self.temporal_attention(x, temb, frame_indices, group)  # [B, HW, C, T]
        x = x.view(B, H, W, C, T).permute(0, 4, 3, 1, 2).reshape(B, T, C, H * W)  # [B, T, C, HW]
        x = self.spatial_attention(x)  # [B, T, C, HW]
        return x.reshape(BT, C, H, W)


class TimestepSequential(nn.Sequential):
    """Sequential that hands each child what it needs: emb to ResBlocks, attention inputs to attention."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, emb: torch.Tensor, frame_indices: torch.Tensor, group: torch.Tensor, T: int
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, FactorizedAttentionBlock):
                x = layer(x, emb, frame_indices, group, T)
            else:
                x = layer(x)
        return x


# ----------------------------------------------------------------------------- the UNet
class FDMUNet(nn.Module):
    """FDM-new's `UNetVideoModel`: same constructor arguments, same state_dict keys/shapes, same outputs.

    The 2-D UNet runs on the B*T frames as an image batch; `FactorizedAttentionBlock`s (after every
    ResBlock at downsample factors in `attention_resolutions`, and in the middle block) mix frames.
    Frame indices enter only as relative positions in temporal attention, so the output is invariant
    to a common shift of all indices of a row.

    videxp extension: with `num_classes` set, `label_emb` (num_classes + 1 rows; the last is the "no
    label" null token for classifier-free guidance) is added to the timestep embedding, as in ADM.
    Without it the state_dict is exactly FDM's.
    """

    def __init__(
        self,
        in_channels: int = 3,
        model_channels: int = 128,
        out_channels: int = 3,
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (4, 8),
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        num_heads: int = 4,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = True,
        use_rpe_net: bool = True,
        use_checkpoint: bool = False,
        num_classes: int | None = None,
    ):
        super().__init__()
        if not use_rpe_net:
            # FDM's lookup-table RPE (use_rpe_net=False) references an undefined `beta` and cannot be built.
            raise NotImplementedError("FDM only supports use_rpe_net=True (its lookup-table RPE is broken)")
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        channel_mult = tuple(int(m) for m in channel_mult)
        attention_resolutions = tuple(int(a) for a in attention_resolutions)
        if channel_mult[0] != 1:
            raise ValueError(f"FDM's output layer needs channel_mult[0] == 1, got {channel_mult}")
        self.in_channels = in_channels + 1  # + observed-frame indicator
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.channel_mult = channel_mult
        self.num_heads = num_heads
        self.num_heads_upsample = num_heads_upsample
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes}")
        self.num_classes = None if num_classes is None else int(num_classes)

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        if self.num_classes is not None:  # registered only when set: FDM's keys stay untouched otherwise
            self.label_emb = nn.Embedding(self.num_classes + 1, time_embed_dim)  # last row: null label

        def res(ch_in: int, ch_out: int | None = None) -> ResBlock:
            return ResBlock(ch_in, time_embed_dim, dropout, ch_out, use_scale_shift_norm, use_checkpoint)

        def attn(ch: int, heads: int) -> FactorizedAttentionBlock:
            return FactorizedAttentionBlock(ch, heads, time_embed_dim, use_checkpoint)

        self.input_blocks = nn.ModuleList(
            [TimestepSequential(nn.Conv2d(self.in_channels, model_channels, 3, padding=1))]
        )
        skip_chans = [model_channels]
        ch, ds = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepSequential(res(ch), attn(ch, num_heads), res(ch))

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), zero_init(nn.Conv2d(ch, out_channels, 3, padding=1))
        )

    @classmethod
    def from_fdm_config(cls, config: Mapping[str, Any]) -> FDMUNet:
        """Build from FDM's checkpoint `config` (vars(args)), as FDM's `create_model` does.

        Uses `image_size`, `num_channels`, `num_res_blocks`, `num_heads`, `num_heads_upsample`,
        `attention_resolutions` (comma string of resolutions, e.g. "16,8" -> downsample factors
        image_size // res), `dropout`, `learn_sigma` (-> 6 output channels), `use_scale_shift_norm`,
        `use_rpe_net`, `use_checkpoint`; missing keys take FDM's defaults, except `image_size`.
        `channel_mult` (sequence or comma string) overrides FDM's choice by image size. `num_classes`
        (videxp's, absent or None in FDM's files) makes the net class-conditional.
        """
        if "image_size" not in config:
            raise KeyError("FDM config has no 'image_size'")
        cfg = {**FDM_NET_DEFAULTS, **config}
        image_size = int(cfg["image_size"])
        channel_mult = cfg.get("channel_mult")
        if channel_mult is None or channel_mult == "":
            if image_size not in CHANNEL_MULT_BY_IMAGE_SIZE:
                raise ValueError(
                    f"FDM has no channel_mult for image_size {image_size} (known: "
                    f"{sorted(CHANNEL_MULT_BY_IMAGE_SIZE)}); give 'channel_mult' explicitly"
                )
            channel_mult = CHANNEL_MULT_BY_IMAGE_SIZE[image_size]
        elif isinstance(channel_mult, str):
            channel_mult = tuple(int(m) for m in channel_mult.split(","))
        resolutions = cfg["attention_resolutions"]
        if isinstance(resolutions, str):
            resolutions = [r for r in resolutions.split(",") if r.strip()]
        elif isinstance(resolutions, int):
            resolutions = [resolutions]
        attention_ds = tuple(image_size // int(r) for r in resolutions)
        return cls(
            in_channels=3,
            model_channels=int(cfg["num_channels"]),
            out_channels=6 if cfg["learn_sigma"] else 3,
            num_res_blocks=int(cfg["num_res_blocks"]),
            attention_resolutions=attention_ds,
            dropout=float(cfg["dropout"]),
            channel_mult=tuple(int(m) for m in channel_mult),
            num_heads=int(cfg["num_heads"]),
            num_heads_upsample=int(cfg["num_heads_upsample"]),
            use_scale_shift_norm=bool(cfg["use_scale_shift_norm"]),
            use_rpe_net=bool(cfg["use_rpe_net"]),
            use_checkpoint=bool(cfg["use_checkpoint"]),
            num_classes=None if cfg["num_classes"] is None else int(cfg["num_classes"]),
        )

    @property
    def null_label(self) -> int:
        """The label index that means "no label" (classifier-free guidance's unconditional branch)."""
        if self.num_classes is None:
            raise ValueError("an unconditional FDMUNet (num_classes=None) has no null label")
        return self.num_classes

    def label_embedding(self, y: torch.Tensor | None, B: int, device: torch.device) -> torch.Tensor | None:
        """label_emb(y) [B, E] (null token where y is None); None for an unconditional net (which
        refuses labels)."""
        if self.num_classes is None:
            if y is not None:
                raise ValueError("labels y given to an unconditional FDMUNet (num_classes=None)")
            return None
        if y is None:
            y = torch.full((B,), self.null_label, device=device, dtype=torch.int64)
        if tuple(y.shape) != (B,) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"y must be integer labels [B] = [{B}], got {y.dtype} {list(y.shape)}")
        if B and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null), got {y.tolist()}"
            )
        return self.label_emb(y.to(device=device, dtype=torch.int64))  # [B, E]

    def forward(
        self,
        x: torch.Tensor,
        *,
        x0: torch.Tensor,
        timesteps: torch.Tensor,
        frame_indices: torch.Tensor,
        obs_mask: torch.Tensor,
        latent_mask: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict noise for every frame.

        x, x0: [B, T, 3, H, W] noisy frames and clean frames (only x0's observed frames are used);
        timesteps: [B] model time (already rescaled by the diffusion, t * 1000 / N), shared by all frames;
        frame_indices: [B, T] int64 absolute frame indices (only differences matter);
        obs_mask, latent_mask: binary {0, 1} float [B, T] or FDM's [B, T, 1, 1, 1]. Observed frames enter
        clean (x0) with an indicator channel; frames with obs|latent = 1 and frames with both 0 (padding)
        form two attention groups. y: [B] int64 class labels of a class-conditional net (index
        num_classes = null label; None = null label for every row); an unconditional net takes none.
        Returns [B, T, out_channels, H, W] (eps; 6 channels if learn_sigma).
        """
        B, T, C, H, W = x.shape
        if x0.shape != x.shape:
            raise ValueError(f"x0 shape {list(x0.shape)} != x shape {list(x.shape)}")
        if self.in_channels - 1 != C:
            raise ValueError(f"expected {self.in_channels - 1} channels per frame, got {C}")
        if H % self.downsample_factor or W % self.downsample_factor:
            raise ValueError(f"frame size {H}x{W} not divisible by the UNet's {self.downsample_factor}")
        if tuple(frame_indices.shape) != (B, T):
            raise ValueError(f"frame_indices must be [B, T] = {[B, T]}, got {list(frame_indices.shape)}")
        if timesteps.shape != (B,):
            raise ValueError(f"timesteps must be [B] = [{B}], got {list(timesteps.shape)}")
        obs = frame_mask(obs_mask, B, T, "obs_mask").to(x.dtype)  # [B, T]
        latent = frame_mask(latent_mask, B, T, "latent_mask").to(x.dtype)
        group = (obs + latent).clamp(max=1) > 0.5  # [B, T] attention group (FDM's attn_mask)

        obs5 = obs[:, :, None, None, None]  # [B, T, 1, 1, 1]
        h = torch.cat([x * (1 - obs5) + x0 * obs5, obs5.expand(B, T, 1, H, W)], dim=2)  # [B, T, 4, H, W]
        h = h.reshape(B * T, self.in_channels, H, W)  # frames as an image batch

        t_frames = timesteps.view(B, 1).expand(B, T).reshape(B * T)  # [B*T]
        emb = self.time_embed(timestep_embedding(t_frames, self.model_channels))  # [B*T, 4*model_channels]
        label = self.label_embedding(y, B, x.device)  # [B, E] or None
        if label is not None:  # added to the timestep embedding (ADM), the same for all frames of a row
            emb = emb + label.to(emb.dtype).repeat_interleave(T, dim=0)  # [B*T, E]

        skips = []
        for block in self.input_blocks:
            h = block(h, emb, frame_indices, group, T)
            skips.append(h)
        h = self.middle_block(h, emb, frame_indices, group, T)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, frame_indices, group, T)
        out = self.out(h)  # [B*T, out_channels, H, W]
        return out.view(B, T, self.out_channels, H, W)

    def guided_forward(
        self,
        x: torch.Tensor,
        *,
        x0: torch.Tensor,
        timesteps: torch.Tensor,
        frame_indices: torch.Tensor,
        obs_mask: torch.Tensor,
        latent_mask: torch.Tensor,
        y: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """`forward` with classifier-free guidance: eps = eps_null + s * (eps_y - eps_null).

        guidance_scale s = 1 is the plain (conditional) forward. Otherwise the labelled and the
        null-label rows run as one doubled batch [2B, ...] (rows stay independent, so a row's result
        does not depend on the others). Only the eps channels are guided; learned-variance channels
        (learn_sigma) are taken from the conditional pass. Returns [B, T, out_channels, H, W].
        """
        inputs = dict(x0=x0, timesteps=timesteps, frame_indices=frame_indices)
        masks = dict(obs_mask=obs_mask, latent_mask=latent_mask)
        if guidance_scale == 1.0:
            return self(x, **inputs, **masks, y=y)
        if self.num_classes is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs a class-conditional FDMUNet")
        if y is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs labels y (y=None is the null label)")
        B, T = x.shape[:2]
        null = torch.full_like(y, self.null_label)
        out = self(
            torch.cat([x, x]),  # [2B, T, C, H, W]: labelled rows, then the same rows with the null label
            **{k: torch.cat([v, v]) for k, v in inputs.items()},
            **{k: torch.cat([frame_mask(v, B, T, k)] * 2) for k, v in masks.items()},
            y=torch.cat([y, null]),
        )
        cond, uncond = out[:B], out[B:]  # [B, T, out_channels, H, W] each
        C = self.in_channels - 1  # eps channels; any further ones are the learned variance
        eps = uncond[:, :, :C] + guidance_scale * (cond[:, :, :C] - uncond[:, :, :C])
        return torch.cat([eps, cond[:, :, C:]], dim=2)
