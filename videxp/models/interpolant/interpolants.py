"""Stochastic interpolants of RIVER (flow matching) and PFI (Föllmer-style), time sampling, loss."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F

STARTS_FROM = ("noise", "reference")
REDUCTIONS = ("mean", "sum")


def _check_time(t: torch.Tensor, like: torch.Tensor | None = None) -> None:
    """Raise a ValueError unless t is a floating 0-d tensor or a [B] tensor matching `like`'s batch."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise ValueError(f"time t must be a floating-point tensor, got {type(t).__name__}")
    if t.ndim > 1:
        raise ValueError(f"time t must be 0-d or [B], got shape {tuple(t.shape)}")
    if like is not None and t.ndim == 1 and (like.ndim == 0 or t.shape[0] != like.shape[0]):
        raise ValueError(f"time t has batch {t.shape[0]} but the state has shape {tuple(like.shape)}")


def _per_row(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a 0-d or [B] coefficient to broadcast against a [B, ...] tensor."""
    if coef.ndim == 0:
        return coef
    return coef.reshape(coef.shape[0], *([1] * (like.ndim - 1)))  # [B, 1, ..., 1]


class Interpolant(ABC):
    """A path `x_t = alpha(t) x0 + beta(t) x1 + sigma(t) W_t` from x0 (t = 0) to x1 (t = 1).

    alpha(0) = beta(1) = 1 and alpha(1) = beta(0) = sigma(1) = 0.

    `W_t` is a Wiener value; training draws it as `sqrt(t) z`, z ~ N(0, I). The drift-regression
    target is `R_t = alpha'(t) x0 + beta'(t) x1 + sigma'(t) W_t`, the time derivative of the path
    with the Wiener value held fixed (for sigma = 0, the ordinary flow-matching velocity).
    """

    name: str
    starts_from: str  # "noise": x0 ~ N(0, I); "reference": x0 = latent of the previous frame
    noisy: bool  # whether sigma is not identically zero (then `sample` needs z)

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Coefficient of x0, same shape as t."""

    @abstractmethod
    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """Coefficient of x1, same shape as t."""

    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Coefficient of the Wiener value W_t, same shape as t."""

    @abstractmethod
    def alpha_dot(self, t: torch.Tensor) -> torch.Tensor:
        """d alpha / dt, same shape as t."""

    @abstractmethod
    def beta_dot(self, t: torch.Tensor) -> torch.Tensor:
        """d beta / dt, same shape as t."""

    @abstractmethod
    def sigma_dot(self, t: torch.Tensor) -> torch.Tensor:
        """d sigma / dt, same shape as t."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The interpolant's settings as JSON-serialisable types."""

    def _check_pair(
        self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None
    ) -> None:
        """Raise a ValueError unless x0, x1 (and w) share a shape and t fits their batch."""
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}")
        if w is not None and w.shape != x0.shape:
            raise ValueError(f"Wiener value w has shape {tuple(w.shape)}, expected {tuple(x0.shape)}")
        _check_time(t, x0)

    def _wiener_term(
        self, coef: torch.Tensor, w: torch.Tensor | None, like: torch.Tensor
    ) -> torch.Tensor | float:
        """`coef * w` broadcast over [B, ...]; zero when the interpolant is deterministic and w is None."""
        if w is None:
            if self.noisy:
                raise ValueError(f"interpolant {self.name!r} is stochastic: the Wiener value w is required")
            return 0.0
        return _per_row(coef, like) * w

    def path(
        self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None
    ) -> torch.Tensor:
        """`x_t = alpha x0 + beta x1 + sigma w` for x0, x1, w [B, ...] and t [B] or 0-d."""
        self._check_pair(x0, x1, t, w)
        a, b = _per_row(self.alpha(t), x0), _per_row(self.beta(t), x0)  # [B, 1, ..., 1]
        return a * x0 + b * x1 + self._wiener_term(self.sigma(t), w, x0)

    def target(
        self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None
    ) -> torch.Tensor:
        """Drift-regression target `R_t = alpha' x0 + beta' x1 + sigma' w` (shape of x0)."""
        self._check_pair(x0, x1, t, w)
        a, b = _per_row(self.alpha_dot(t), x0), _per_row(self.beta_dot(t), x0)  # [B, 1, ..., 1]
        return a * x0 + b * x1 + self._wiener_term(self.sigma_dot(t), w, x0)

    def wiener(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The Wiener value `W_t = sqrt(t) z` for z [B, ...] and t [B] or 0-d."""
        _check_time(t, z)
        return _per_row(t.sqrt(), z) * z

    def sample(
        self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x_t, R_t)` with `W_t = sqrt(t) z`; z is the caller's N(0, I) draw (None allowed if not noisy)."""
        w = None if z is None else self.wiener(t, z)
        return self.path(x0, x1, t, w), self.target(x0, x1, t, w)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion coefficient g(t) of the generative SDE; PFI samples with g = sigma."""
        return self.sigma(t)


class LinearInterpolant(Interpolant):
    """RIVER flow matching from noise: `x_t = (1 - (1 - sigma_min) t) x0 + t x1`, x0 = epsilon ~ N(0, I).

    Target `x1 - (1 - sigma_min) x0`; sigma_min = 0 is PFI-video's `linear` interpolant.
    """

    name = "linear"
    starts_from = "noise"
    noisy = False

    def __init__(self, sigma_min: float = 1e-7) -> None:
        """Build with RIVER's minimal noise level sigma_min in [0, 1)."""
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"sigma_min must lie in [0, 1), got {sigma_min}")
        self.sigma_min = float(sigma_min)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """1 - (1 - sigma_min) t."""
        return 1.0 - (1.0 - self.sigma_min) * t

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """t."""
        return t.clone()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """0."""
        return torch.zeros_like(t)

    def alpha_dot(self, t: torch.Tensor) -> torch.Tensor:
        """-(1 - sigma_min)."""
        return torch.full_like(t, -(1.0 - self.sigma_min))

    def beta_dot(self, t: torch.Tensor) -> torch.Tensor:
        """1."""
        return torch.ones_like(t)

    def sigma_dot(self, t: torch.Tensor) -> torch.Tensor:
        """0."""
        return torch.zeros_like(t)

    def describe(self) -> dict[str, Any]:
        """Name, start and sigma_min."""
        return {"name": self.name, "starts_from": self.starts_from, "sigma_min": self.sigma_min}


class FollmerInterpolant(Interpolant):
    """PFI "ours" from the previous frame: alpha = 1 - t, beta = t^2 (or t), sigma = epsilon (1 - t).

    With W_t = sqrt(t) z: `x_t = (1 - t) x0 + t^2 x1 + epsilon (1 - t) sqrt(t) z` and target
    `-x0 + 2 t x1 - epsilon sqrt(t) z`.
    """

    name = "follmer"
    starts_from = "reference"
    noisy = True
    BETAS = ("t", "t^2")

    def __init__(self, epsilon: float = 0.1, beta: str = "t^2") -> None:
        """Build with noise strength epsilon > 0 and beta schedule "t^2" (PFI default) or "t"."""
        if not (math.isfinite(epsilon) and epsilon > 0.0):
            raise ValueError(f"epsilon must be a finite positive number, got {epsilon}")
        if beta not in self.BETAS:
            raise ValueError(f"beta must be one of {self.BETAS}, got {beta!r}")
        self.epsilon = float(epsilon)
        self.beta_fn = beta

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """1 - t."""
        return 1.0 - t

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """t^2 or t."""
        return t * t if self.beta_fn == "t^2" else t.clone()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """epsilon (1 - t)."""
        return self.epsilon * (1.0 - t)

    def alpha_dot(self, t: torch.Tensor) -> torch.Tensor:
        """-1."""
        return torch.full_like(t, -1.0)

    def beta_dot(self, t: torch.Tensor) -> torch.Tensor:
        """2 t or 1."""
        return 2.0 * t if self.beta_fn == "t^2" else torch.ones_like(t)

    def sigma_dot(self, t: torch.Tensor) -> torch.Tensor:
        """-epsilon."""
        return torch.full_like(t, -self.epsilon)

    def describe(self) -> dict[str, Any]:
        """Name, start, epsilon and the beta schedule."""
        return {
            "name": self.name,
            "starts_from": self.starts_from,
            "epsilon": self.epsilon,
            "beta": self.beta_fn,
        }


class TrigonometricInterpolant(Interpolant):
    """Variance-preserving path from noise: alpha = cos(pi t / 2), beta = sin(pi t / 2), sigma = 0."""

    name = "trigonometric"
    starts_from = "noise"
    noisy = False

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """cos(pi t / 2)."""
        return torch.cos(0.5 * math.pi * t)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """sin(pi t / 2)."""
        return torch.sin(0.5 * math.pi * t)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """0."""
        return torch.zeros_like(t)

    def alpha_dot(self, t: torch.Tensor) -> torch.Tensor:
        """-(pi / 2) sin(pi t / 2)."""
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def beta_dot(self, t: torch.Tensor) -> torch.Tensor:
        """(pi / 2) cos(pi t / 2)."""
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def sigma_dot(self, t: torch.Tensor) -> torch.Tensor:
        """0."""
        return torch.zeros_like(t)

    def describe(self) -> dict[str, Any]:
        """Name and start."""
        return {"name": self.name, "starts_from": self.starts_from}


INTERPOLANTS: dict[str, type[Interpolant]] = {
    "linear": LinearInterpolant,
    "follmer": FollmerInterpolant,
    "trigonometric": TrigonometricInterpolant,
}


def build_interpolant(name: str, **kwargs: Any) -> Interpolant:
    """Instantiate the interpolant registered under `name` with its keyword settings."""
    if name not in INTERPOLANTS:
        raise ValueError(f"unknown interpolant {name!r}; known: {sorted(INTERPOLANTS)}")
    try:
        return INTERPOLANTS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad settings {kwargs} for interpolant {name!r}: {err}") from err


def sample_times(
    batch: int,
    generator: torch.Generator | None = None,
    t_min: float = 0.0,
    t_max: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """[batch] training times `t_min + (t_max - t_min) U[0, 1)`: RIVER (0, 1); PFI (1e-4, 1 - 1e-4)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    u = torch.rand(batch, generator=generator, device=device, dtype=dtype)  # [B] in [0, 1)
    return t_min + (t_max - t_min) * u


def regression_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Scalar squared error: "mean" over all elements (RIVER) or "sum" per row then mean over batch (PFI)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if reduction == "mean":
        return F.mse_loss(pred, target)
    if pred.ndim < 2:
        raise ValueError(f"'sum' reduction needs a [B, ...] tensor with >= 2 dims, got {tuple(pred.shape)}")
    return (pred - target).pow(2).flatten(1).sum(dim=1).mean()  # [B] -> scalar
