"""Fixed-grid samplers of RIVER / PFI: torchdiffeq Euler / RK4 ODE integration and PFI's Euler-Maruyama."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

Drift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, ...], t 0-d) -> velocity [B, ...]
ODE_METHODS = ("euler", "rk4")


def _check_grid(times: torch.Tensor) -> None:
    """Raise a ValueError unless times is a strictly increasing 1-D float grid of >= 2 finite points."""
    if not isinstance(times, torch.Tensor) or times.ndim != 1 or not times.is_floating_point():
        raise ValueError(f"times must be a 1-D floating-point tensor, got {times!r:.80}")
    if times.numel() < 2:
        raise ValueError(f"times needs at least 2 grid points, got {times.numel()}")
    if not torch.isfinite(times).all():
        raise ValueError("times contains non-finite values")
    if not (times[1:] > times[:-1]).all():
        raise ValueError("times must be strictly increasing")


def ode_grid(
    steps: int,
    t_start: float = 0.0,
    t_end: float = 1.0,
    scale_with_span: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """1-D grid `linspace(t_start, t_end, n)`; `steps` counts grid points, as RIVER and PFI name it.

    n = steps, or n = int((t_end - t_start) * steps) with `scale_with_span` (RIVER's warm-start rule,
    truncating like Python's int). Integrating over n points takes n - 1 solver steps.
      - RIVER, warm start w: `ode_grid(100, w, 1.0, scale_with_span=True)` (w = 0: 100 points, 99 steps).
      - PFI `linear` (Euler) and `ours` (Euler-Maruyama): `ode_grid(100, 1e-4, 1 - 1e-4)`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps (number of grid points) must be an int >= 2, got {steps!r}")
    if not 0.0 <= t_start < t_end <= 1.0:
        raise ValueError(f"need 0 <= t_start < t_end <= 1, got t_start={t_start}, t_end={t_end}")
    points = int((t_end - t_start) * steps) if scale_with_span else steps
    if points < 2:
        raise ValueError(
            f"grid over [{t_start}, {t_end}] with steps={steps} has {points} point(s); need >= 2 "
            "(raise steps or lower the warm start)"
        )
    return torch.linspace(t_start, t_end, points, device=device, dtype=dtype)  # [points]


def ode_sample(drift: Drift, x_init: torch.Tensor, times: torch.Tensor, method: str = "rk4") -> torch.Tensor:
    """Integrate dx/dt = drift(x, t) over the grid `times` with torchdiffeq; the state at times[-1].

    Uses `torchdiffeq.odeint(func, x_init, times, method=method)` exactly as RIVER (rk4) and PFI
    (euler) do. Note torchdiffeq's fixed-grid "rk4" is the 3/8-rule variant (`rk4_alt_step_func`:
    stages at t, t + h/3, t + 2h/3, t + h, weights 1/8, 3/8, 3/8, 1/8), not the classic midpoint
    RK4; both are 4th order with 4 drift calls per step. Euler makes 1 call per step.
    """
    if method not in ODE_METHODS:
        raise ValueError(f"method must be one of {ODE_METHODS}, got {method!r}")
    _check_grid(times)
    if times.device != x_init.device:
        raise ValueError(f"times on {times.device} but x_init on {x_init.device}")

    def func(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """torchdiffeq's (t, x) argument order adapted to drift(x, t)."""
        return drift(x, t)

    trajectory = odeint(func, x_init, times, method=method)  # [len(times), B, ...]
    return trajectory[-1]


def em_sample(
    drift: Drift,
    diffusion: Callable[[torch.Tensor], torch.Tensor],
    x_init: torch.Tensor,
    times: torch.Tensor,
    noise: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """PFI's Euler-Maruyama for dX = b dt + g dW; returns the last mean (no noise on the final step).

    For every grid point t_k (all len(times) of them, dt = times[1] - times[0] constant):
    `mean = z + b(z, t_k) dt; z = mean + g(t_k) sqrt(dt) xi`, xi = noise(mean). PFI-video draws xi on
    the last step too and discards it; `noise` is called len(times) times likewise, so a caller's
    generator advances as PFI's does. With PFI's 100-point grid this integrates 100 dt ~ 1.01 time
    units (its slight overshoot). `diffusion(t_k)` gets a 0-d tensor and returns a number, a 0-d or a
    [B] tensor. With g = 0 this is Euler on `times` extended by one point times[-1] + dt.
    """
    _check_grid(times)
    if times.device != x_init.device:
        raise ValueError(f"times on {times.device} but x_init on {x_init.device}")
    spacing = times[1:] - times[:-1]  # [n - 1]
    if not torch.allclose(spacing, spacing[0].expand_as(spacing), rtol=1e-3, atol=1e-6):
        raise ValueError("em_sample needs a uniformly spaced grid (PFI uses dt = times[1] - times[0])")
    dt = float(times[1] - times[0])
    sqrt_dt = dt**0.5
    z = x_init
    mean = x_init
    for t_k in times:  # t_k: 0-d
        mean = z + drift(z, t_k) * dt  # [B, ...]
        g = torch.as_tensor(diffusion(t_k), dtype=mean.dtype, device=mean.device)  # 0-d or [B]
        if g.ndim == 1:
            g = g.reshape(g.shape[0], *([1] * (mean.ndim - 1)))  # [B, 1, ..., 1]
        xi = noise(mean)
        if xi.shape != mean.shape:
            raise ValueError(f"noise returned shape {tuple(xi.shape)}, expected {tuple(mean.shape)}")
        z = mean + g * sqrt_dt * xi
    return mean


@dataclass
class CallCounter:
    """Number of times a wrapped drift has been evaluated."""

    calls: int = 0


def count_calls(drift: Drift) -> tuple[Drift, CallCounter]:
    """Wrap `drift` so every evaluation increments the returned counter (for network-call benchmarks)."""
    counter = CallCounter()

    def wrapped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The original drift, counted."""
        counter.calls += 1
        return drift(x, t)

    return wrapped, counter
