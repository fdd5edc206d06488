"""A cheap stand-in for I3D in FVD tests: the real Detector code path around a tiny fixed network."""

from __future__ import annotations

import torch
import torch.nn as nn

from videxp.metrics.detector import Detector


class PooledProjection(nn.Module):
    """Cheap stand-in detector: a fixed random projection of pooled pixels, squares and temporal diffs."""

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(3 * 3 * 4 * 4, dim, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 3, T, 224, 224] in [-1, 1]
        dt = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(2)  # [B, 3, H, W]
        parts = [x.mean(2), (x * x).mean(2), dt]  # each [B, 3, H, W]
        pooled = torch.cat([nn.functional.adaptive_avg_pool2d(p, 4) for p in parts], 1)  # [B, 9, 4, 4]
        return pooled.flatten(1) @ self.proj  # [B, D]


class Counting(Detector):
    """A stand-in Detector that counts the clips it embeds."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__(PooledProjection(dim), name="pooled-projection", feature_dim=dim, min_frames=2)
        self.clips = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.clips += x.shape[0]
        return super().__call__(x)
