"""RIVER's vector-field network: a U-ViT-style transformer over latent pixels, conditioned on two frames."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

# Named sizes: "paper" is RIVER's KTH / CLEVRER / BAIR-64 config, the others are for fast tests.
PRESETS: dict[str, dict[str, Any]] = {
    "test": {"inner_dim": 32, "depth": 1, "mid_depth": 1, "nhead": 4},
    "tiny": {"inner_dim": 64, "depth": 2, "mid_depth": 2},
    "paper": {"inner_dim": 768, "depth": 4, "mid_depth": 5},
}


def timestep_embedding(
    t: torch.Tensor, dim: int, scale: float = 200.0, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of flow times t [B]: `[cos(scale·t·f), sin(scale·t·f)]`, cos first.

    The frequencies are `f_i = max_period^(-i/half)` for i < half = dim // 2; an odd dim gets a zero column.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B, 2·half]
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)  # [B, dim]
    return emb


class LearnedPositionEncoding2d(nn.Module):
    """Learned 2-D absolute positions: token (h, w) gets `[col_embed[w], row_embed[h]]`, column half first."""

    def __init__(self, dim: int, max_positions: int = 512):
        super().__init__()
        if dim % 2:
            raise ValueError(f"LearnedPositionEncoding2d needs an even dim (two halves), got {dim}")
        self.max_positions = max_positions
        self.row_embed = nn.Embedding(max_positions, dim // 2)
        self.col_embed = nn.Embedding(max_positions, dim // 2)
        nn.init.uniform_(self.row_embed.weight)  # DETR-style learned positions start in U[0, 1)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, height: int, width: int) -> torch.Tensor:
        """Position vectors [height·width, dim] for a row-major (h, w) token grid."""
        if height > self.max_positions or width > self.max_positions:
            raise ValueError(
                f"token grid {height}x{width} exceeds the position tables' {self.max_positions} rows"
            )
        device = self.row_embed.weight.device
        rows = self.row_embed(torch.arange(height, device=device))  # [H, D/2]
        cols = self.col_embed(torch.arange(width, device=device))  # [W, D/2]
        grid = torch.cat(
            [cols[None, :, :].expand(height, -1, -1), rows[:, None, :].expand(-1, width, -1)], dim=-1
        )  # [H, W, D]
        return grid.reshape(height * width, -1)  # [H·W, D]


class GridToTokens(nn.Module):
    """Parameter-free reshape of a feature map [B, C, H, W] into row-major tokens [B, H·W, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten the spatial grid of x [B, C, H, W] to [B, H·W, C]."""
        return x.flatten(2).transpose(1, 2)  # [B, H·W, C]


class TokensToGrid(nn.Module):
    """Parameter-free reshape of row-major tokens [B, H·W, D] back into a feature map [B, D, H, W]."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height = height
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unflatten x [B, H·W, D] to [B, D, H, W]."""
        b, n, d = x.shape
        if n != self.height * self.width:
            raise ValueError(
                f"expected {self.height}x{self.width} = {self.height * self.width} tokens, got {n}"
            )
        return x.transpose(1, 2).reshape(b, d, self.height, self.width)  # [B, D, H, W]

    def extra_repr(self) -> str:
        """Grid size, for printing."""
        return f"height={self.height}, width={self.width}"


def encoder_layer(dim: int, nhead: int, ff_mult: int, dropout: float) -> nn.TransformerEncoderLayer:
    """One pre-norm transformer layer as RIVER builds it: `x + SA(LN(x))`, then `x + FF(LN(x))` with GELU."""
    return nn.TransformerEncoderLayer(
        d_model=dim,
        nhead=nhead,
        dim_feedforward=ff_mult * dim,
        dropout=dropout,
        activation="gelu",
        norm_first=True,
        batch_first=True,
    )


class FlowTransformer(nn.Module):
    """RIVER's vector-field regressor v(x_t, reference, context, distance, t) on latent frames [B, C, H, W].

    Tokens are the latent pixels: `Linear(3C → D)` of the channel concat `[x_t, reference, context]`, plus
    a learned 2-D position and an MLP embedding of `log(index_distance)`. A sinusoidal flow-time token is
    prepended. The body is U-ViT: `depth` in-blocks whose outputs are kept, `mid_depth` mid-blocks, then
    `depth` out-blocks that each fuse the matching skip (in reverse order) with `Linear(2D → D)` before a
    layer. The head maps the spatial tokens back to a [B, C, H, W] velocity.

    `state_dict()` keys equal those of RIVER's `VectorFieldRegressor` (prefixed `vector_field_regressor.`
    inside RIVER's full model).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    def __init__(
        self,
        *,
        state_size: int = 4,
        state_res: tuple[int, int] | list[int] = (8, 8),
        inner_dim: int = 768,
        depth: int = 4,
        mid_depth: int = 5,
        out_norm: str = "ln",
        nhead: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.05,
        max_positions: int = 512,
    ):
        super().__init__()
        if len(state_res) != 2:
            raise ValueError(f"state_res must be (height, width), got {state_res!r}")
        height, width = int(state_res[0]), int(state_res[1])
        if inner_dim % 2:
            raise ValueError(f"inner_dim must be even (row and column position halves), got {inner_dim}")
        if inner_dim % nhead:
            raise ValueError(f"inner_dim {inner_dim} is not divisible by nhead {nhead}")
        if height > max_positions or width > max_positions:
            raise ValueError(f"state_res {height}x{width} exceeds max_positions {max_positions}")
        if out_norm not in ("ln", "bn"):
            raise ValueError(f"out_norm must be 'ln' or 'bn', got {out_norm!r}")
        self.state_size = state_size
        self.state_res = (height, width)
        self.inner_dim = inner_dim
        self.out_norm = out_norm

        d = inner_dim
        self.position_encoding = LearnedPositionEncoding2d(d, max_positions)
        self.project_in = nn.Sequential(GridToTokens(), nn.Linear(3 * state_size, d))
        self.time_projection = nn.Sequential(nn.Linear(1, 256), nn.ReLU(), nn.Linear(256, d))  # distance MLP

        self.in_blocks = nn.ModuleList(encoder_layer(d, nhead, ff_mult, dropout) for _ in range(depth))
        self.mid_blocks = nn.ModuleList(encoder_layer(d, nhead, ff_mult, dropout) for _ in range(mid_depth))
        self.out_blocks = nn.ModuleList(  # each: fuse [skip, x] with Linear(2D → D), then a layer
            nn.ModuleList([nn.Linear(2 * d, d), encoder_layer(d, nhead, ff_mult, dropout)])
            for _ in range(depth)
        )

        if out_norm == "ln":
            self.project_out = nn.Sequential(
                nn.Linear(d, d),
                nn.GELU(),
                nn.LayerNorm(d),
                TokensToGrid(height, width),
                nn.Conv2d(d, state_size, kernel_size=3, padding=1),
            )
        else:  # "bn", RIVER's BAIR-256 head: the norm runs on the feature map
            self.project_out = nn.Sequential(
                nn.Linear(d, d),
                TokensToGrid(height, width),
                nn.GELU(),
                nn.BatchNorm2d(d),
                nn.Conv2d(d, state_size, kernel_size=3, padding=1),
            )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> FlowTransformer:
        """Build a named size from `PRESETS` ("test", "tiny", "paper"); keyword overrides win."""
        if name not in PRESETS:
            raise KeyError(f"unknown FlowTransformer preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def _check_inputs(
        self,
        input_latents: torch.Tensor,
        reference_latents: torch.Tensor,
        conditioning_latents: torch.Tensor,
        index_distances: torch.Tensor,
        timestamps: torch.Tensor,
    ) -> None:
        """Raise a ValueError naming the first input whose shape or values do not fit."""
        expected = (self.state_size, *self.state_res)
        for name, z in (
            ("input_latents", input_latents),
            ("reference_latents", reference_latents),
            ("conditioning_latents", conditioning_latents),
        ):
            if z.ndim != 4 or tuple(z.shape[1:]) != expected:
                raise ValueError(f"{name} must be [B, {', '.join(map(str, expected))}], got {list(z.shape)}")
        b = input_latents.shape[0]
        if reference_latents.shape[0] != b or conditioning_latents.shape[0] != b:
            raise ValueError(
                f"latent batch sizes differ: input {b}, reference {reference_latents.shape[0]}, "
                f"conditioning {conditioning_latents.shape[0]}"
            )
        if tuple(index_distances.shape) != (b,):
            raise ValueError(f"index_distances must be [B]=[{b}], got {list(index_distances.shape)}")
        if tuple(timestamps.shape) != (b,):
            raise ValueError(f"timestamps must be [B]=[{b}], got {list(timestamps.shape)}")
        if bool((index_distances < 1).any()):
            raise ValueError(
                f"index_distances must be >= 1 (reference − context index), got {index_distances.tolist()}"
            )

    def forward(
        self,
        input_latents: torch.Tensor,
        reference_latents: torch.Tensor,
        conditioning_latents: torch.Tensor,
        index_distances: torch.Tensor,
        timestamps: torch.Tensor,
    ) -> torch.Tensor:
        """Velocity [B, C, H, W] at flow time `timestamps` [B] in [0, 1] for the noisy latent x_t.

        `input_latents` is x_t, `reference_latents` the previous frame's latent, `conditioning_latents` an
        earlier context frame's latent (all [B, C, H, W]); `index_distances` [B] (int64, >= 1) is the frame
        index of the reference minus that of the context.
        """
        self._check_inputs(
            input_latents, reference_latents, conditioning_latents, index_distances, timestamps
        )
        height, width = self.state_res
        dtype = self.project_in[1].weight.dtype

        # Flow-time token (not projected), prepended as token 0.
        t_tok = timestep_embedding(timestamps, self.inner_dim).to(dtype)[:, None, :]  # [B, 1, D]
        # Learned 2-D positions and the context-distance embedding, both added to every spatial token.
        pos = self.position_encoding(height, width)[None]  # [1, N, D]
        log_dist = torch.log(index_distances.to(dtype))[:, None]  # [B, 1]
        dist = self.time_projection(log_dist)[:, None, :]  # [B, 1, D]

        frames = torch.cat([input_latents, reference_latents, conditioning_latents], dim=1)  # [B, 3C, H, W]
        x = self.project_in(frames.to(dtype)) + pos + dist  # [B, N, D]
        x = torch.cat([t_tok, x], dim=1)  # [B, 1 + N, D]

        skips = []
        for block in self.in_blocks:
            x = block(x)  # [B, 1 + N, D]
            skips.append(x)
        for block in self.mid_blocks:
            x = block(x)  # [B, 1 + N, D]
        for fuse, block in self.out_blocks:
            x = block(fuse(torch.cat([skips.pop(), x], dim=-1)))  # [B, 1 + N, 2D] -> [B, 1 + N, D]

        return self.project_out(x[:, 1:])  # drop the time token: [B, N, D] -> [B, C, H, W]
