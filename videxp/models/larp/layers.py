"""Building blocks of the LARP tokenizer and its discriminator: timm-layout ViT blocks (plain torch), the
parallel encoder over [context, queries], the fused encoder over one sequence, the video patch embedder, the
output layer, and the sin-cos tables of a fresh init."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "Block",
    "OutputLayer",
    "PatchEmbed",
    "TransformerEncoderFused",
    "TransformerEncoderParallel",
    "sincos_1d",
    "sincos_3d",
]


# ----------------------------------------------------------------------------- sin-cos tables (fresh init)
def sincos_1d(dim: int, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """[sin | cos] of pos * base^(-2i/dim): pos [M] -> [M, dim] float64 (MAE's 1-D table)."""
    omega = 1.0 / base ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # [dim/2]
    out = pos.double().reshape(-1, 1) * omega  # [M, dim/2]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_3d(dim: int, grid: int, frames: int) -> torch.Tensor:
    """LARP's 3-D table [frames * grid * grid, dim]: MAE's 2-D table (first half from the column index, second
    half from the row index) plus the 1-D table of the frame index, tokens in (t, h, w) order."""
    ar = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(ar, ar, indexing="ij")  # [grid, grid]
    half = dim // 2
    emb_2d = torch.cat([sincos_1d(half, cols), sincos_1d(half, rows)], dim=1)  # [grid*grid, dim]
    emb_t = sincos_1d(dim, torch.arange(frames, dtype=torch.float64))  # [frames, dim]
    return (emb_2d.view(1, grid * grid, dim) + emb_t.view(frames, 1, dim)).reshape(-1, dim)


# ----------------------------------------------------------------------------- ViT parts (timm Block layout)
def xavier_linears(module: nn.Module) -> None:
    """LARP's fresh init of every Linear below `module`: xavier-uniform weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Attention(nn.Module):
    """timm ViT attention: one `qkv` Linear without bias, head-major channels, `proj` with bias."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D]
        B, L, D = x.shape
        q, k, v = (
            self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # [B, h, L, hd]
        y = F.scaled_dot_product_attention(q, k, v)  # full bidirectional attention
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm ViT Block(dim, heads, mlp_ratio=4, qkv_bias=False): x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, ln_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D]
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoderParallel(nn.Module):
    """Blocks over cat([context, query]) with no mask; returns the query positions [B, Lq, D]."""

    def __init__(self, dim: int, depth: int, num_heads: int, ln_eps: float):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads, ln_eps) for _ in range(depth))

    def forward(self, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        h = torch.cat([context, query], dim=1)  # [B, Lc + Lq, D]
        for block in self.blocks:
            h = block(h)
        return h[:, -query.shape[1] :]


class TransformerEncoderFused(nn.Module):
    """Blocks over one sequence, no mask (LARP's TransformerEncoderFused: `blocks`, an nn.Sequential)."""

    def __init__(self, dim: int, depth: int, num_heads: int, ln_eps: float):
        super().__init__()
        self.blocks = nn.Sequential(*(Block(dim, num_heads, ln_eps) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [B, L, D]
        return self.blocks(x)


class PatchEmbed(nn.Module):
    """Video -> patch tokens [B, t*h*w, D] in (t, h, w) order (w fastest); the size is checked strictly.
    `proj` is a Conv3d (kernel = stride = (Pt, P, P)), or per frame a Conv2d when Pt == 1 (LARP's
    VideoPatchEmbed)."""

    def __init__(self, size: int, frames: int, patch: int, t_patch: int, in_channels: int, dim: int):
        super().__init__()
        if size % patch or frames % t_patch:
            raise ValueError(
                f"video {frames}x{size}x{size} is not divisible into {t_patch}x{patch}x{patch} patches"
            )
        self.size, self.frames, self.t_patch = size, frames, t_patch
        self.num_spatial_patches = (size // patch) ** 2
        self.num_temporal_patches = frames // t_patch
        if t_patch == 1:
            self.proj: nn.Module = nn.Conv2d(in_channels, dim, patch, stride=patch)
        else:
            self.proj = nn.Conv3d(in_channels, dim, (t_patch, patch, patch), stride=(t_patch, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T, S, S]
        B, _, T, H, W = x.shape
        if (self.frames, self.size, self.size) != (T, H, W):
            want = [self.frames, self.size, self.size]
            raise ValueError(f"LARP tokenizer input must be [B, 3, *{want}], got {list(x.shape)}")
        if self.t_patch == 1:
            y = self.proj(x.transpose(1, 2).flatten(0, 1))  # [B T, D, h, w]
            return y.flatten(2).transpose(1, 2).reshape(B, -1, y.shape[1])  # [B, T h w, D]
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, t h w, D]


class OutputLayer(nn.Module):
    """LayerNorm (eps 1e-6) + Linear D -> Pt*P*P*C."""

    def __init__(self, dim: int, t_patch: int, patch: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=1e-6)
        self.linear = nn.Linear(dim, t_patch * patch * patch * out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm_final(x))
