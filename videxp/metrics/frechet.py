"""Fréchet distance of Gaussians (symmetric eigen square roots, float64) and streaming feature statistics."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videxp.utils.io import atomic_path

ArrayLike = np.ndarray | torch.Tensor


def _as_f64(x: Any, name: str) -> np.ndarray:
    """Copy `x` (numpy, torch or sequence) to a float64 numpy array and reject NaN / inf."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _clip_eigvals(w: np.ndarray) -> np.ndarray:
    """Zero the eigenvalues of a PSD matrix that are below eigh's round-off level (D·eps·max|λ|).

    Negative ones are round-off by assumption; tiny positive ones would otherwise contribute
    sqrt(noise) ≈ 1e-8 each to the trace (visible for rank-deficient covariances, N < D).
    """
    tol = (
        w.shape[0]
        * np.finfo(np.float64).eps
        * max(float(np.abs(w).max(initial=0.0)), np.finfo(np.float64).tiny)
    )
    return np.where(w > tol, w, 0.0)


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via `eigh` (round-off eigenvalues zeroed)."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(_clip_eigvals(w))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(Σ1 Σ2)) = tr(sqrt(A Σ2 A)), A = sqrt(Σ1): symmetric PSD throughout, no complex numbers."""
    a = _sym_sqrt(sigma1)
    m = a @ sigma2 @ a
    m = (m + m.T) / 2  # remove round-off asymmetry before eigvalsh
    return float(np.sqrt(_clip_eigvals(np.linalg.eigvalsh(m))).sum())


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½) of two Gaussians, in float64.

    mu: `[D]`, sigma: `[D, D]` symmetric PSD (rank-deficient is fine, e.g. N < D samples). Uses the
    symmetric eigen method (as TF-GAN's trace_sqrt_product, but with `eigh`), never scipy's sqrtm.
    """
    mu1, mu2 = _as_f64(mu1, "mu1"), _as_f64(mu2, "mu2")
    sigma1, sigma2 = _as_f64(sigma1, "sigma1"), _as_f64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be 1-D of equal length, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}) to match the means, got {s.shape}")
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product((sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


class FeatureStats:
    """Streaming float64 statistics of feature vectors: count N, Σx `[D]`, Σxxᵀ `[D, D]`.

    Memory is O(D²) regardless of N; shards (DDP ranks, files) merge exactly with `merge`. `cov()` divides
    by N (population, StyleGAN-V `FeatureStats`) by default, or by N − 1 with `unbiased=True` (TF / np.cov).
    `metadata` (JSON-serialisable) travels with `save` / `load`.
    """

    def __init__(self, dim: int | None = None, metadata: dict[str, Any] | None = None) -> None:
        self.dim = dim
        self.count = 0
        self.sum = None if dim is None else np.zeros(dim, np.float64)
        self.sum_sq = None if dim is None else np.zeros((dim, dim), np.float64)
        self.metadata: dict[str, Any] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"FeatureStats(dim={self.dim}, count={self.count})"

    def _init(self, dim: int) -> None:
        if self.dim is None:
            self.dim = dim
            self.sum = np.zeros(dim, np.float64)
            self.sum_sq = np.zeros((dim, dim), np.float64)
        elif dim != self.dim:
            raise ValueError(f"feature dim {dim} does not match the statistics' dim {self.dim}")

    def update(self, feats: ArrayLike) -> FeatureStats:
        """Add a batch of features `[N, D]` (accumulated in float64)."""
        x = _as_f64(feats, "feats")
        if x.ndim != 2:
            raise ValueError(f"feats must be [N, D], got shape {x.shape}")
        self._init(x.shape[1])
        self.count += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sum_sq += x.T @ x
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add another shard's statistics in place (exact: sums of sums); metadata is kept from self."""
        if other.dim is None:
            return self
        self._init(other.dim)
        self.count += other.count
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        return self

    def _require(self, n: int) -> None:
        if self.count < n:
            raise ValueError(f"need at least {n} feature vectors, have {self.count}")

    def mean(self) -> np.ndarray:
        """μ = Σx / N, `[D]` float64."""
        self._require(1)
        return self.sum / self.count

    def cov(self, unbiased: bool = False) -> np.ndarray:
        """Σ = (Σxxᵀ − N μμᵀ) / N (default, StyleGAN-V) or / (N − 1) (`unbiased=True`), `[D, D]` float64."""
        self._require(2 if unbiased else 1)
        mu = self.mean()
        scatter = self.sum_sq - self.count * np.outer(mu, mu)
        return scatter / (self.count - 1 if unbiased else self.count)

    def save(self, path: str | os.PathLike) -> None:
        """Write count, sums and metadata (as a JSON string) to a .npz file, atomically."""
        if self.dim is None:
            raise ValueError("cannot save empty FeatureStats (no feature dimension yet)")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                count=np.int64(self.count),
                sum=self.sum,
                sum_sq=self.sum_sq,
                metadata=np.array(json.dumps(self.metadata)),
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Read statistics written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"feature statistics not found: {path}")
        with np.load(path, allow_pickle=False) as z:
            stats = cls(dim=int(z["sum"].shape[0]), metadata=json.loads(str(z["metadata"])))
            stats.count = int(z["count"])
            stats.sum = z["sum"].astype(np.float64)
            stats.sum_sq = z["sum_sq"].astype(np.float64)
        return stats


def frechet_from_stats(a: FeatureStats, b: FeatureStats, unbiased: bool = False) -> float:
    """Fréchet distance between the Gaussians fitted to two `FeatureStats`."""
    return frechet_distance(a.mean(), a.cov(unbiased), b.mean(), b.cov(unbiased))
