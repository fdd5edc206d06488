"""Open-Sora v1.3 STDiT3: spatial/temporal DiT, windowed 3-D RoPE attention (hpcai-tech/OpenSora-STDiT-v4)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from videxp.models.diffusers_common import resolve_device
from videxp.weights.files import parse_dtype, read_state_dict, resolve_weight_file
from videxp.weights.state_check import state_mismatch

__all__ = [
    "STDIT3_PRESETS",
    "STDiT3",
    "STDiT3CheckpointError",
    "STDiT3Config",
    "check_state_dict",
    "load_stdit3",
    "stdit3_config",
]

HUB_ID = "hpcai-tech/OpenSora-STDiT-v4"  # the released v1.3 denoiser (also -360p and -i2v variants)
FREQ_DIM = 256  # sinusoid size of the timestep / fps embeddings
DEFAULT_FPS = 24.0  # v1.3 configs sample at 24 fps; used when forward gets no fps
VAE_SPATIAL = 8  # latent -> pixel factor, used when forward gets no height / width


# ----------------------------------------------------------------------------- config
@dataclass
class STDiT3Config:
    """Every `STDiT3Config` argument of Open-Sora v1.3; defaults = STDiT3-XL/2 as v1.3 configs build it."""

    input_size: tuple[int | None, int | None, int | None] = (None, None, None)  # unused: any size works
    input_sq_size: int = 512  # pixel side of the base resolution (position / RoPE scale)
    in_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1  # training: probability of replacing a caption by the null caption
    pred_sigma: bool = True  # output 2 * in_channels channels (the sampler keeps the first half)
    drop_path: float = 0.0  # stochastic depth, linearly increasing over the depth
    caption_channels: int = 4096  # T5-XXL width
    model_max_length: int = 300  # caption tokens
    qk_norm: bool = True  # per-head RMSNorm on q and k
    enable_flash_attn: bool = False  # speed switch of the reference; SDPA picks its kernel here
    enable_layernorm_kernel: bool = False  # speed switch of the reference (apex); plain LayerNorm here
    enable_sequence_parallelism: bool = False  # not supported (must stay False)
    only_train_temporal: bool = False  # freeze everything but the temporal blocks
    freeze_y_embedder: bool = False  # freeze the caption projection
    skip_temporal: bool = False  # run the spatial blocks only
    skip_y_embedder: bool = False  # `y` is already projected to hidden_size
    kernel_size: tuple[int, int, int] | None = (8, 8, -1)  # temporal windows (h, w, t); -1 = whole axis
    use_spatial_rope: bool = True  # 2-D RoPE in the spatial blocks

    def __post_init__(self) -> None:
        self.input_size = tuple(self.input_size)
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if self.kernel_size is not None:
            self.kernel_size = tuple(int(k) for k in self.kernel_size)
            if len(self.kernel_size) != 3:
                raise ValueError(f"kernel_size must be (h, w, t), got {self.kernel_size}")
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be (t, h, w), got {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.kernel_size is not None and self.head_dim % 6:
            raise ValueError(f"3-D RoPE needs head_dim divisible by 6, got {self.head_dim}")
        if self.kernel_size is None and self.use_spatial_rope:
            raise ValueError("use_spatial_rope needs kernel_size (the 3-D RoPE)")
        if self.enable_sequence_parallelism:
            raise NotImplementedError(
                "enable_sequence_parallelism (Open-Sora's ColossalAI sequence parallelism) is not offered: "
                "videxp runs one STDiT3 per rank; shard large runs with trainer=fsdp"
            )

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.pred_sigma else self.in_channels

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rope_dim(self) -> int:
        """Rotated dims per axis: head_dim / 3 with the 3-D RoPE, the whole head for the 1-D (v1.2) one."""
        return self.head_dim // 3 if self.kernel_size is not None else self.head_dim


STDIT3_PRESETS: dict[str, dict[str, Any]] = {
    # STDiT3-XL/2 + the model kwargs of configs/opensora-v1-3/inference/{t2v,v2v}.py (1,207,959,692 params)
    "xl": dict(
        depth=28,
        hidden_size=1152,
        num_heads=16,
        patch_size=(1, 2, 2),
        in_channels=16,
        caption_channels=4096,
        model_max_length=300,
        class_dropout_prob=0.1,
        qk_norm=True,
        kernel_size=(8, 8, -1),
        use_spatial_rope=True,
    ),
    # the conformance fixture's network (tests/reference_outputs/opensora/stdit3_tiny.json; 202,836 params)
    "tiny": dict(
        depth=2,
        hidden_size=48,
        num_heads=2,
        patch_size=(1, 2, 2),
        in_channels=4,
        caption_channels=32,
        model_max_length=16,
        class_dropout_prob=0.0,
        qk_norm=True,
        kernel_size=(8, 8, -1),
        use_spatial_rope=True,
    ),
}


def stdit3_config(size: str = "xl", **overrides: Any) -> STDiT3Config:
    """The preset `size` ("xl" or "tiny") with `overrides` applied."""
    if size not in STDIT3_PRESETS:
        raise ValueError(f"unknown STDiT3 size {size!r}; use one of {sorted(STDIT3_PRESETS)}")
    return STDiT3Config(**{**STDIT3_PRESETS[size], **overrides})


# ----------------------------------------------------------------------------- small helpers
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift (x already normalised)."""
    return x * (1 + scale) + shift


def sinusoid(v: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """[N] values -> [N, dim] float32 [cos(v f), sin(v f)] (cos first), f_i = max_period^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=v.device) / half)
    args = v.float()[:, None] * freqs[None]  # [N, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [N, dim]


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """Pairs (2i, 2i+1) = (a, b) -> (-b, a)."""
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([-b, a], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first angles.shape[-1] dims of x [..., N, D] by angles [N, R] (R <= D); the rest pass."""
    r = angles.shape[-1]
    xr, rest = x[..., :r].float(), x[..., r:]
    out = xr * angles.cos() + rotate_interleaved(xr) * angles.sin()
    return torch.cat([out.to(x.dtype), rest], dim=-1)


def frame_select(keep: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per frame: `a` where keep [B, T] is True, else `b` (a, b: [B, T or 1, ...]); `a` when keep is None."""
    if keep is None:
        return a
    return torch.where(keep.view(*keep.shape, *([1] * (a.ndim - 2))), a, b)


class DropPath(nn.Module):
    """Stochastic depth: drops a sample's residual branch with probability p in training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight over the last dim, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


# ----------------------------------------------------------------------------- embedders
class PatchEmbed3D(nn.Module):
    """Conv3d patchify (kernel = stride = patch); zero-pads T/H/W at the end to a patch multiple."""

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, Cin, T, H, W] -> [B, D, T', H', W']
        pt, ph, pw = self.patch_size
        T, H, W = x.shape[-3:]
        pad = (0, -W % pw, 0, -H % ph, 0, -T % pt)
        if any(pad):
            x = F.pad(x, pad)
        return self.proj(x)


class PositionEmbedding2D(nn.Module):
    """Resolution-aware 2-D sin-cos table [S, C]: [emb(column), emb(row)], column first."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"PositionEmbedding2D needs dim divisible by 4, got {dim}")
        self.dim = dim
        self.register_buffer("inv_freq", self.make_inv_freq(dim), persistent=False)

    @staticmethod
    def make_inv_freq(dim: int, device: torch.device | str | None = None) -> torch.Tensor:
        half = dim // 2
        return 1.0 / 10000 ** (torch.arange(0, half, 2, device=device).float() / half)  # [dim/4]

    def _emb(self, p: torch.Tensor) -> torch.Tensor:  # [N] -> [N, dim/2]
        args = p[:, None] * self.inv_freq.float()[None]
        return torch.cat([args.sin(), args.cos()], dim=-1)

    def forward(self, h: int, w: int, scale: float, base: int) -> torch.Tensor:
        dev = self.inv_freq.device
        rows = torch.arange(h, device=dev, dtype=torch.float32) / scale * (base / h)  # [h]
        cols = torch.arange(w, device=dev, dtype=torch.float32) / scale * (base / w)  # [w]
        r = rows[:, None].expand(h, w).reshape(-1)  # [S], (h, w) order, w fastest
        c = cols[None, :].expand(h, w).reshape(-1)
        return torch.cat([self._emb(c), self._emb(r)], dim=-1)  # [S, dim] float32


class TimestepEmbedder(nn.Module):
    """Scalar per sample (timestep, fps) -> sinusoid(256) -> Linear, SiLU, Linear."""

    def __init__(self, dim: int, freq_dim: int = FREQ_DIM):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # [B] -> [B, dim]
        return self.mlp(sinusoid(v, self.freq_dim).to(self.mlp[0].weight.dtype))


class CaptionEmbedder(nn.Module):
    """T5 tokens -> hidden via an MLP; holds the learned null caption `y_embedding` (persistent buffer)."""

    def __init__(self, caption_channels: int, dim: int, max_length: int, dropout_prob: float):
        super().__init__()
        self.dropout_prob = dropout_prob
        self.register_buffer("y_embedding", torch.randn(max_length, caption_channels) / caption_channels**0.5)
        self.y_proj = Mlp(caption_channels, dim, dim)

    def drop(self, y: torch.Tensor, drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Replace the captions of samples in drop_ids [B] bool (random in training) by the null caption."""
        if drop_ids is None:
            drop_ids = torch.rand(y.shape[0], device=y.device) < self.dropout_prob
        null = self.y_embedding.to(y.dtype)[None, None]  # [1, 1, L, Ccap]
        return torch.where(drop_ids.view(-1, 1, 1, 1), null, y)

    def forward(
        self, y: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if force_drop_ids is not None or (train and self.dropout_prob > 0):
            y = self.drop(y, None if force_drop_ids is None else force_drop_ids.bool())
        return self.y_proj(y)  # [B, 1, L, Ccap] -> [B, 1, L, C]


class RotaryEmbedding(nn.Module):
    """`rope.freqs` (a checkpoint entry, requires_grad=False): the per-pair frequencies of every RoPE axis."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)  # [dim/2]
        self.freqs = nn.Parameter(freqs, requires_grad=False)
        self.register_buffer("dummy", torch.tensor(0), persistent=False)

    def angles(self, *positions: torch.Tensor) -> torch.Tensor:
        """One [N] position tensor per axis -> [N, 2 * len(freqs) * axes]; pairs interleaved."""
        f = self.freqs.float()
        return torch.cat([(p.float()[:, None] * f[None]).repeat_interleave(2, dim=-1) for p in positions], -1)


# ----------------------------------------------------------------------------- attention
@dataclass
class AttnContext:
    """What the self-attentions need besides the tokens: resolution scale, RoPE, temporal windows."""

    scale: float
    rope: RotaryEmbedding
    kernel_size: tuple[int, int, int] | None
    use_spatial_rope: bool
    cache: dict[str, Any] = field(default_factory=dict)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention [.., H, N, D] with scale D^-0.5; keep [.., 1, 1, L] bool marks usable keys."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


class Attention(nn.Module):
    """Self-attention: qkv, per-head q/k RMSNorm, RoPE, SDPA, proj; per frame or in temporal windows."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, temporal: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.temporal = temporal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:  # [B, T, Hp, Wp, C]
        B, T, Hp, Wp, C = x.shape
        qkv = self.qkv(x).view(B, T, Hp, Wp, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(4)  # [B, T, Hp, Wp, nh, hd]
        q, k = self.q_norm(q), self.k_norm(k)
        if not self.temporal:
            out = self._spatial(q, k, v, ctx)
        elif ctx.kernel_size is None:
            out = self._temporal_full(q, k, v, ctx)
        else:
            out = self._temporal_windows(q, k, v, ctx)
        return self.proj(out.reshape(B, T, Hp, Wp, C))

    def _spatial(self, q, k, v, ctx: AttnContext) -> torch.Tensor:
        """Full attention among the Hp*Wp tokens of each frame; RoPE (t=0, row, column) / scale."""
        B, T, Hp, Wp, nh, hd = q.shape
        q, k, v = (a.reshape(B * T, Hp * Wp, nh, hd).transpose(1, 2) for a in (q, k, v))  # [BT, nh, S, hd]
        if ctx.use_spatial_rope:
            key = f"spatial:{Hp}x{Wp}"
            if key not in ctx.cache:
                dev = q.device
                rows = torch.arange(Hp, device=dev)[:, None].expand(Hp, Wp).reshape(-1) / ctx.scale
                cols = torch.arange(Wp, device=dev)[None, :].expand(Hp, Wp).reshape(-1) / ctx.scale
                ctx.cache[key] = ctx.rope.angles(torch.zeros_like(rows), rows, cols)  # [S, 3 * rope_dim]
            q, k = apply_rope(q, ctx.cache[key]), apply_rope(k, ctx.cache[key])
        out = sdpa(q, k, v)  # [BT, nh, S, hd]
        return out.transpose(1, 2).reshape(B, T, Hp, Wp, nh * hd)

    def _temporal_full(self, q, k, v, ctx: AttnContext) -> torch.Tensor:
        """v1.2 layout (kernel_size=None): each spatial position attends over its T frames; 1-D RoPE on t."""
        B, T, Hp, Wp, nh, hd = q.shape
        q, k, v = (a.permute(0, 2, 3, 4, 1, 5).reshape(B * Hp * Wp, nh, T, hd) for a in (q, k, v))
        ang = ctx.rope.angles(torch.arange(T, device=q.device))  # [T, hd]
        out = sdpa(apply_rope(q, ang), apply_rope(k, ang), v)  # [B Hp Wp, nh, T, hd]
        return out.view(B, Hp, Wp, nh, T, hd).permute(0, 4, 1, 2, 3, 5).reshape(B, T, Hp, Wp, nh * hd)

    def _temporal_windows(self, q, k, v, ctx: AttnContext) -> torch.Tensor:
        """Attention in (kh, kw, kt) windows (-1 = whole axis); zero-pad bottom/right, mask padded keys."""
        B, T, Hp, Wp, nh, hd = q.shape
        kh, kw, kt = (n if s == -1 else s for s, n in zip(ctx.kernel_size, (Hp, Wp, T), strict=True))
        ph, pw, pt = -Hp % kh, -Wp % kw, -T % kt
        Hq, Wq, Tq = Hp + ph, Wp + pw, T + pt
        nH, nW, nT = Hq // kh, Wq // kw, Tq // kt
        L = kh * kw * kt

        def windows(a: torch.Tensor) -> torch.Tensor:  # [B, T, Hp, Wp, nh, hd] -> [B nWin, nh, L, hd]
            a = a.permute(0, 2, 3, 1, 4, 5)  # [B, Hp, Wp, T, nh, hd]
            if ph or pw or pt:
                a = F.pad(a, (0, 0, 0, 0, 0, pt, 0, pw, 0, ph))
            a = a.reshape(B, nH, kh, nW, kw, nT, kt, nh, hd).permute(0, 1, 3, 5, 7, 2, 4, 6, 8)
            return a.reshape(B * nH * nW * nT, nh, L, hd)  # window tokens in (h, w, t) order

        q, k, v = windows(q), windows(k), windows(v)
        key = f"window:{T}x{Hp}x{Wp}"
        if key not in ctx.cache:
            dev = q.device
            hh = torch.arange(kh, device=dev).view(kh, 1, 1).expand(kh, kw, kt).reshape(-1) / ctx.scale
            ww = torch.arange(kw, device=dev).view(1, kw, 1).expand(kh, kw, kt).reshape(-1) / ctx.scale
            tt = torch.arange(kt, device=dev).view(1, 1, kt).expand(kh, kw, kt).reshape(-1)
            keep = None
            if ph or pw or pt:
                valid = torch.zeros(Hq, Wq, Tq, dtype=torch.bool, device=dev)
                valid[:Hp, :Wp, :T] = True
                valid = valid.view(nH, kh, nW, kw, nT, kt).permute(0, 2, 4, 1, 3, 5).reshape(-1, 1, 1, L)
                keep = valid.repeat(B, 1, 1, 1)  # [B nWin, 1, 1, L]
            ctx.cache[key] = (ctx.rope.angles(tt, hh, ww), keep)  # RoPE positions restart in every window
        ang, keep = ctx.cache[key]
        out = sdpa(apply_rope(q, ang), apply_rope(k, ang), v, keep)  # [B nWin, nh, L, hd]
        out = out.view(B, nH, nW, nT, nh, kh, kw, kt, hd).permute(0, 1, 5, 2, 6, 3, 7, 4, 8)
        out = out.reshape(B, Hq, Wq, Tq, nh * hd)[:, :Hp, :Wp, :T]  # drop padded queries
        return out.permute(0, 3, 1, 2, 4)  # [B, T, Hp, Wp, C]


class MultiHeadCrossAttention(nn.Module):
    """Video tokens attend to their own sample's valid caption tokens (no norm, no modulation)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_keep: torch.Tensor) -> torch.Tensor:
        """x [B, N, C], y [B, L, C], y_keep [B, L] bool -> [B, N, C]."""
        B, N, C = x.shape
        nh, hd = self.num_heads, self.head_dim
        q = self.q_linear(x).view(B, N, nh, hd).transpose(1, 2)  # [B, nh, N, hd]
        k, v = self.kv_linear(y).view(B, -1, 2, nh, hd).permute(2, 0, 3, 1, 4).unbind(0)  # [B, nh, L, hd]
        has_text = y_keep.any(-1)  # a sample without valid tokens gets no cross-attention output
        keep = torch.where(has_text[:, None], y_keep, True)[:, None, None]  # [B, 1, 1, L]
        out = sdpa(q, k, v, keep).transpose(1, 2).reshape(B, N, C)
        out = self.proj(out)
        return out if bool(has_text.all()) else out * has_text.view(B, 1, 1).to(out.dtype)


# ----------------------------------------------------------------------------- blocks
class STDiT3Block(nn.Module):
    """adaLN-single block: modulated self-attention -> cross-attention -> modulated MLP."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool, temporal: bool, drop_path: float
    ):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(dim, num_heads, qk_norm, temporal)
        self.cross_attn = MultiHeadCrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)
        self.drop_path = DropPath(drop_path)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, Hp, Wp, C]
        y: torch.Tensor,  # [B, L, C] projected captions
        y_keep: torch.Tensor,  # [B, L] bool
        t_mlp: torch.Tensor,  # [B, 6C]
        t0_mlp: torch.Tensor | None,  # [B, 6C] timestep-0 modulation (with x_mask)
        x_mask: torch.Tensor | None,  # [B, T] bool, False = conditioning frame
        y_null: torch.Tensor | None,  # [B, L, C] projected null captions (with mask_index)
        cond_frames: torch.Tensor | None,  # [n] long, frames that attend to y_null
        ctx: AttnContext,
    ) -> torch.Tensor:
        B, T, Hp, Wp, C = x.shape
        mod = self.scale_shift_table[None] + t_mlp.view(B, 6, C)  # [B, 6, C]
        mod = mod[:, None]  # [B, 1, 6, C]
        if x_mask is not None:
            mod0 = (self.scale_shift_table[None] + t0_mlp.view(B, 6, C))[:, None]
            mod = frame_select(x_mask, mod.expand(B, T, 6, C), mod0.expand(B, T, 6, C))  # [B, T, 6, C]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod[:, :, :, None, None].unbind(2)

        h = modulate(self.norm1(x), shift_msa, scale_msa)  # [B, T, Hp, Wp, C]
        x = x + self.drop_path(gate_msa * self.attn(h, ctx))

        ca = self.cross_attn(x.reshape(B, -1, C), y, y_keep).view(B, T, Hp, Wp, C)
        if cond_frames is not None:  # i2v / v2v: conditioning frames attend to the null caption
            xc = x.index_select(1, cond_frames)  # [B, n, Hp, Wp, C]
            ca_null = self.cross_attn(xc.reshape(B, -1, C), y_null, y_keep).view_as(xc)
            ca = ca.index_copy(1, cond_frames, ca_null)
        x = x + ca

        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        return x + self.drop_path(gate_mlp * self.mlp(h))


class FinalLayer(nn.Module):
    """LayerNorm + (shift, scale) from `table + t`, then a linear to prod(patch) * out_channels per token."""

    def __init__(self, dim: int, patch_numel: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(dim, patch_numel * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor, t0: torch.Tensor | None, x_mask: torch.Tensor | None):
        B, C = t.shape  # x [B, T, Hp, Wp, C]
        shift, scale = (self.scale_shift_table[None] + t[:, None]).view(B, 1, 2, 1, 1, C).unbind(2)
        out = modulate(self.norm_final(x), shift, scale)
        if x_mask is not None:
            # as the reference: x_mask=False frames re-normalise and re-modulate the *already modulated* out
            shift0, scale0 = (self.scale_shift_table[None] + t0[:, None]).view(B, 1, 2, 1, 1, C).unbind(2)
            out = frame_select(x_mask, out, modulate(self.norm_final(out), shift0, scale0))
        return self.linear(out)  # [B, T, Hp, Wp, prod(patch) * C_out]


# ----------------------------------------------------------------------------- the network
class STDiT3(nn.Module):
    """Open-Sora v1.3 STDiT3 denoiser; state_dict() keys, shapes and order equal the released checkpoint's."""

    def __init__(self, config: STDiT3Config | None = None, **kwargs: Any):
        super().__init__()
        if config is None:
            config = STDiT3Config(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = cfg = config
        C = cfg.hidden_size
        self.grad_checkpointing = False

        self.rope = RotaryEmbedding(cfg.rope_dim)
        self.pos_embed = PositionEmbedding2D(C)
        self.x_embedder = PatchEmbed3D(cfg.patch_size, cfg.in_channels, C)
        self.x_embedder_cond = PatchEmbed3D(cfg.patch_size, cfg.in_channels, C)
        self.x_embedder_cond_mask = PatchEmbed3D(cfg.patch_size, cfg.in_channels, C)
        self.t_embedder = TimestepEmbedder(C)
        self.fps_embedder = TimestepEmbedder(C)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        self.y_embedder = CaptionEmbedder(
            cfg.caption_channels, C, cfg.model_max_length, cfg.class_dropout_prob
        )
        dpr = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # linear 0 -> drop_path
        self.spatial_blocks = nn.ModuleList(
            STDiT3Block(C, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm, False, dpr[i]) for i in range(cfg.depth)
        )
        self.temporal_blocks = nn.ModuleList(
            STDiT3Block(C, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm, True, dpr[i]) for i in range(cfg.depth)
        )
        self.final_layer = FinalLayer(C, math.prod(cfg.patch_size), cfg.out_channels)
        self.initialize_weights()
        self.apply_freezing()

    # --------------------------------------------------------------- setup
    def initialize_weights(self) -> None:
        """From-scratch init (the released weights replace it): xavier linears, small embedder MLPs, zero-init
        of the temporal blocks' residual outputs and of the i2v patch embedders."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for emb in (self.x_embedder, self.x_embedder_cond, self.x_embedder_cond_mask):
            nn.init.xavier_uniform_(emb.proj.weight.view(emb.proj.weight.shape[0], -1))
            nn.init.zeros_(emb.proj.bias)
        for lin in (*self.t_embedder.mlp[::2], *self.fps_embedder.mlp[::2], self.t_block[1]):
            nn.init.normal_(lin.weight, std=0.02)
        for lin in (self.y_embedder.y_proj.fc1, self.y_embedder.y_proj.fc2):
            nn.init.normal_(lin.weight, std=0.02)
        for block in self.temporal_blocks:
            for lin in (block.attn.proj, block.cross_attn.proj, block.mlp.fc2):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
        for emb in (self.x_embedder_cond, self.x_embedder_cond_mask):
            nn.init.zeros_(emb.proj.weight)
        nn.init.zeros_(self.final_layer.linear.weight)

    def apply_freezing(self) -> None:
        """`only_train_temporal` / `freeze_y_embedder` turn requires_grad off (rope.freqs: always off)."""
        if self.config.only_train_temporal:
            for name, p in self.named_parameters():
                p.requires_grad_(name.startswith("temporal_blocks."))
        if self.config.freeze_y_embedder:
            self.y_embedder.requires_grad_(False)
        self.rope.freqs.requires_grad_(False)

    def reset_nonpersistent_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute `pos_embed.inv_freq` and `rope.dummy` (not in checkpoints), e.g. after a meta build."""
        device = device if device is not None else self.rope.freqs.device
        self.pos_embed.inv_freq = PositionEmbedding2D.make_inv_freq(self.config.hidden_size, device)
        self.rope.dummy = torch.tensor(0, device=device)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> STDiT3:
        """Recompute each block in the backward pass (training only); returns self."""
        self.grad_checkpointing = enabled
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.proj.weight.dtype

    # --------------------------------------------------------------- forward
    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        fps: torch.Tensor | float | None = None,
        height: torch.Tensor | float | None = None,
        width: torch.Tensor | float | None = None,
        cond: torch.Tensor | None = None,
        cond_mask: torch.Tensor | None = None,
        mask_index: Sequence[int] | None = None,
        y_null: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity (and sigma) prediction [B, C_out, T, H, W] float32.

        x [B, C, T, H, W] latents; timestep [B] in 0..1000; y [B, 1, L, Ccap] T5 tokens with mask [B, L]
        (nonzero = valid; None = all valid); fps [B] (default 24); height / width [B] in pixels (sample 0
        sets the resolution scale; default latent size * 8). x_mask [B, T] bool: False frames are clean
        conditioning frames (timestep-0 modulation). i2v / v2v: mask_index (latent frame indices) with
        cond = latents * cond_mask and cond_mask [B, C, T, H, W]; the frames in mask_index cross-attend to
        y_null [B, 1, L, Ccap] (default: the learned null caption). force_drop_ids [B] replaces captions by
        the null caption (classifier-free-guidance training).
        """
        cfg = self.config
        dtype = self.dtype
        B, _, T, H, W = x.shape
        dev = x.device

        # patchify (+ i2v condition embedders)
        tok = self.x_embedder(x.to(dtype))  # [B, C, Tp, Hp, Wp]
        if mask_index is not None:
            if cond is None or cond_mask is None:
                raise ValueError("mask_index needs cond and cond_mask")
            tok = tok + self.x_embedder_cond(cond.to(dtype)) + self.x_embedder_cond_mask(cond_mask.to(dtype))
        tok = tok.permute(0, 2, 3, 4, 1)  # [B, Tp, Hp, Wp, C]
        _, Tp, Hp, Wp, C = tok.shape

        # resolution-aware position table, added to every frame
        h_px = _first_value(height, H * VAE_SPATIAL)
        w_px = _first_value(width, W * VAE_SPATIAL)
        scale = math.sqrt(h_px * w_px) / cfg.input_sq_size
        base = round(math.sqrt(Hp * Wp))
        tok = tok + self.pos_embed(Hp, Wp, scale, base).to(dtype).view(1, 1, Hp, Wp, C)

        # timestep + fps -> t [B, C] and the shared modulation t_mlp [B, 6C]
        timestep = _per_sample(timestep, B, dev)
        fps_emb = self.fps_embedder(_per_sample(DEFAULT_FPS if fps is None else fps, B, dev))
        t = self.t_embedder(timestep) + fps_emb
        t_mlp = self.t_block(t)
        t0 = t0_mlp = None
        if x_mask is not None:
            x_mask = x_mask.to(dev).bool()
            if x_mask.shape != (B, Tp):
                raise ValueError(f"x_mask must be [B, T'] = {(B, Tp)}, got {tuple(x_mask.shape)}")
            t0 = self.t_embedder(torch.zeros_like(timestep)) + fps_emb
            t0_mlp = self.t_block(t0)

        # captions: project all tokens, keep the valid ones per sample (key mask)
        y_keep = y.new_ones(B, y.shape[-2], dtype=torch.bool) if mask is None else mask.to(dev) != 0
        if y_keep.shape[0] != B:  # one mask for a batch repeated in blocks of samples
            y_keep = y_keep.repeat(B // y_keep.shape[0], 1)
        y_emb = self._embed_captions(y, force_drop_ids)  # [B, L, C]
        y_null_emb = cond_frames = None
        if mask_index is not None:
            if y_null is None:
                y_null = self.y_embedder.y_embedding[None, None].expand(B, 1, -1, -1)
            y_null_emb = self._embed_captions(y_null, None, train=False)
            frames = sorted({int(i) % Tp for i in mask_index})
            cond_frames = torch.tensor(frames, dtype=torch.long, device=dev) if frames else None

        ctx = AttnContext(scale, self.rope, cfg.kernel_size, cfg.use_spatial_rope)
        args = (y_emb, y_keep, t_mlp, t0_mlp, x_mask, y_null_emb, cond_frames, ctx)
        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks, strict=True):
            tok = self._run_block(spatial, tok, args)
            if not cfg.skip_temporal:
                tok = self._run_block(temporal, tok, args)

        out = self.final_layer(tok, t, t0, x_mask)  # [B, Tp, Hp, Wp, pt*ph*pw*C_out]
        return self.unpatchify(out, T, H, W)

    def _embed_captions(self, y: torch.Tensor, force_drop_ids, train: bool | None = None) -> torch.Tensor:
        """[B, 1, L, Ccap] (or [B, L, Ccap]) -> [B, L, C]."""
        if y.ndim == 3:
            y = y[:, None]
        y = y.to(self.dtype)
        if self.config.skip_y_embedder:
            return y[:, 0]
        return self.y_embedder(y, self.training if train is None else train, force_drop_ids)[:, 0]

    def _run_block(self, block: STDiT3Block, tok: torch.Tensor, args: tuple) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return grad_checkpoint(block, tok, *args, use_reentrant=False)
        return block(tok, *args)

    def unpatchify(self, out: torch.Tensor, T: int, H: int, W: int) -> torch.Tensor:
        """[B, Tp, Hp, Wp, pt*ph*pw*C_out] -> [B, C_out, T, H, W].

        Token channel ((tp*ph + hp)*pw + wp)*C_out + c (c fastest); the result is cropped to T, H, W.
        """
        B, Tp, Hp, Wp, _ = out.shape
        pt, ph, pw = self.config.patch_size
        c_out = self.config.out_channels
        out = out.view(B, Tp, Hp, Wp, pt, ph, pw, c_out).permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = out.reshape(B, c_out, Tp * pt, Hp * ph, Wp * pw)
        return out[:, :, :T, :H, :W].float()


def _first_value(v: torch.Tensor | float | None, default: float) -> float:
    """Sample 0's value of a per-sample tensor (or a number) as a Python float."""
    if v is None:
        return float(default)
    if isinstance(v, torch.Tensor):
        return float(v.reshape(-1)[0].item())
    if isinstance(v, Sequence):
        return float(v[0])
    return float(v)


def _per_sample(v: torch.Tensor | float, B: int, device: torch.device) -> torch.Tensor:
    """A number or a [B] / [1] tensor as a float32 [B] tensor on `device`."""
    v = torch.as_tensor(v, device=device).float().reshape(-1)
    return v.expand(B) if v.numel() == 1 else v


# ----------------------------------------------------------------------------- loading
class STDiT3CheckpointError(ValueError):
    """A state dict whose keys or shapes do not match the STDiT3 being loaded."""


# config.json fields that describe the network's size. The v1.3 switches (qk_norm, kernel_size,
# use_spatial_rope) come from the preset, as Open-Sora's configs pass them to from_pretrained as overrides.
CONFIG_JSON_FIELDS = (
    "in_channels",
    "patch_size",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "pred_sigma",
    "caption_channels",
    "model_max_length",
)


def _config_overrides(folder: Path | None) -> dict[str, Any]:
    """The CONFIG_JSON_FIELDS of a `config.json` beside the weights (a hub repository or model folder)."""
    if folder is None or not (folder / "config.json").is_file():
        return {}
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in CONFIG_JSON_FIELDS}


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """STDiT3CheckpointError listing missing / unexpected keys and shape mismatches (first few of each)."""
    problem = state_mismatch(model.state_dict(), sd)
    if problem:
        raise STDiT3CheckpointError(f"{source} does not match STDiT3: {problem}")


def load_stdit3(
    path_or_id: str | Path = HUB_ID,
    size: str = "xl",
    *,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype = "float32",
    revision: str | None = None,
    **overrides: Any,
) -> STDiT3:
    """STDiT3 with strictly loaded weights, in eval mode.

    `path_or_id`: a .safetensors / .pt / .pth / .bin file, a folder holding one of WEIGHT_FILES (e.g.
    `model.safetensors`, a sharded index, `diffusion_pytorch_model.safetensors`), or a hub id such as
    "hpcai-tech/OpenSora-STDiT-v4" (offline: the cache only; missing -> ModelNotAvailable naming the id
    and the cache folder). The architecture is the `size` preset, updated by the size fields
    (CONFIG_JSON_FIELDS) of the folder's / repository's `config.json`, then by `overrides`. Torch
    checkpoints nested under state_dict/model/module/ema and keys all prefixed by `module.` / `model.`
    are accepted. The network is built on the meta device and takes the loaded tensors (cast to
    `dtype`, moved to `device`); key or shape mismatches raise STDiT3CheckpointError.
    """
    device = resolve_device(device)
    dtype = parse_dtype(dtype)
    weights = resolve_weight_file(path_or_id, "STDiT3 weights", revision)
    folder = None if Path(path_or_id).expanduser().is_file() else weights.parent  # a folder or hub id
    cfg = stdit3_config(size, **{**_config_overrides(folder), **overrides})
    sd = read_state_dict(weights)
    sd = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in sd.items()}
    with torch.device("meta"):
        model = STDiT3(cfg)
    check_state_dict(model, sd, f"{weights} (STDiT3 size {size!r})")
    model.load_state_dict(sd, strict=True, assign=True)
    model.reset_nonpersistent_buffers(device)
    return model.to(device).eval()
