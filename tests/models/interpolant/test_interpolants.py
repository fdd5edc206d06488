"""Interpolants (RIVER flow matching, PFI Föllmer-style, trigonometric) and their ODE / SDE samplers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from videxp.models.interpolant.interpolants import (
    INTERPOLANTS,
    FollmerInterpolant,
    Interpolant,
    LinearInterpolant,
    TrigonometricInterpolant,
    build_interpolant,
    regression_loss,
    sample_times,
)
from videxp.models.interpolant.samplers import count_calls, em_sample, ode_grid, ode_sample

SHAPE = (3, 2, 4, 4)  # [B, C, h, w] latents
ALL = [
    LinearInterpolant(),
    LinearInterpolant(sigma_min=0.0),
    FollmerInterpolant(),
    TrigonometricInterpolant(),
]
ALL += [FollmerInterpolant(epsilon=0.3, beta="t")]
IDS = ["linear", "linear-pfi", "follmer", "trigonometric", "follmer-beta-t"]


def _draws(seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """Fixed (x0, x1, z) draws of shape SHAPE."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(SHAPE, generator=gen, dtype=dtype) for _ in range(3))


# ---------------------------------------------------------------- interpolants


@pytest.mark.parametrize("interp", ALL, ids=IDS)
def test_path_hits_endpoints(interp: Interpolant) -> None:
    """x_t = x0 at t = 0 and x1 at t = 1 with a drawn Wiener value W_t = sqrt(t) z."""
    x0, x1, z = _draws()
    zeros, ones = torch.zeros(SHAPE[0], dtype=x0.dtype), torch.ones(SHAPE[0], dtype=x0.dtype)
    start, _ = interp.sample(x0, x1, zeros, z)
    end, _ = interp.sample(x0, x1, ones, z)
    torch.testing.assert_close(start, x0)
    torch.testing.assert_close(end, x1, atol=1e-6, rtol=0)  # RIVER's sigma_min leaves 1e-7 x0 at t = 1
    mid, _ = interp.sample(x0, x1, torch.full((SHAPE[0],), 0.5, dtype=x0.dtype), z)
    assert not torch.allclose(mid, x0) and not torch.allclose(mid, x1)


@pytest.mark.parametrize("interp", ALL, ids=IDS)
def test_target_is_path_time_derivative(interp: Interpolant) -> None:
    """R_t equals d x_t / dt by autograd with the Wiener value w held fixed, at several t."""
    x0, x1, z = _draws(1)
    for t_val in (0.0, 0.05, 0.3, 0.7, 0.999):
        t = torch.tensor([t_val, t_val / 2, 1 - t_val / 3], dtype=x0.dtype)  # [B]
        w = interp.wiener(t, z)

        def path_of_t(tt: torch.Tensor, w: torch.Tensor = w) -> torch.Tensor:
            """x_t as a function of t alone."""
            return interp.path(x0, x1, tt, w)

        _, dxdt = torch.autograd.functional.jvp(path_of_t, (t,), (torch.ones_like(t),))
        torch.testing.assert_close(interp.target(x0, x1, t, w), dxdt)


@pytest.mark.parametrize("interp", ALL, ids=IDS)
def test_coefficient_derivatives_by_autograd(interp: Interpolant) -> None:
    """alpha', beta', sigma' match autograd of alpha, beta, sigma."""
    t = torch.linspace(0.0, 1.0, 7, dtype=torch.float64, requires_grad=True)
    pairs = [(interp.alpha, interp.alpha_dot), (interp.beta, interp.beta_dot)]
    for f, f_dot in [*pairs, (interp.sigma, interp.sigma_dot)]:
        value = f(t)
        if value.requires_grad:
            (grad,) = torch.autograd.grad(value.sum(), t)
        else:  # a constant coefficient (sigma = 0)
            grad = torch.zeros_like(t)
        torch.testing.assert_close(f_dot(t.detach()), grad)


def test_follmer_matches_pfi_video_literally() -> None:
    """PFI `ours`: x_t = (1-t) z0 + t^2 z1 + 0.1 (1-t) sqrt(t) eps; target -z0 + 2t z1 - 0.1 sqrt(t) eps."""
    z0, z1, eps = _draws(2, torch.float32)
    t = torch.tensor([1e-4, 0.4, 0.9])
    tb = t[:, None, None, None]
    x_t, target = FollmerInterpolant().sample(z0, z1, t, eps)
    torch.testing.assert_close(x_t, (1 - tb) * z0 + tb**2 * z1 + 0.1 * (1 - tb) * tb.sqrt() * eps)
    torch.testing.assert_close(target, -z0 + 2 * tb * z1 - 0.1 * tb.sqrt() * eps)


def test_linear_matches_river_and_pfi_literally() -> None:
    """RIVER: x_t = (1-(1-s)t) eps + t z1, u = (z1 - (1-s) x_t) / (1-(1-s)t); PFI linear: target z1 - z0."""
    eps, z1, _ = _draws(3)
    t = torch.tensor([0.0, 0.25, 0.8], dtype=eps.dtype)
    tb, s = t[:, None, None, None], 1e-7
    x_t, target = LinearInterpolant().sample(eps, z1, t, None)
    torch.testing.assert_close(x_t, (1 - (1 - s) * tb) * eps + tb * z1)
    torch.testing.assert_close(target, (z1 - (1 - s) * x_t) / (1 - (1 - s) * tb))
    _, target_pfi = LinearInterpolant(sigma_min=0.0).sample(eps, z1, t, None)
    torch.testing.assert_close(target_pfi, z1 - eps)


def test_trigonometric_is_variance_preserving() -> None:
    """alpha^2 + beta^2 = 1 on [0, 1]."""
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    interp = TrigonometricInterpolant()
    torch.testing.assert_close(interp.alpha(t) ** 2 + interp.beta(t) ** 2, torch.ones_like(t))


def test_registry_describe_and_starts() -> None:
    """Registry builds each class; describe() is JSON; starts_from and diffusion follow the spec."""
    assert set(INTERPOLANTS) == {"linear", "follmer", "trigonometric"}
    follmer = build_interpolant("follmer", epsilon=0.2, beta="t")
    assert json.loads(json.dumps(follmer.describe())) == {
        "name": "follmer",
        "starts_from": "reference",
        "epsilon": 0.2,
        "beta": "t",
    }
    assert build_interpolant("linear").starts_from == "noise"
    assert build_interpolant("trigonometric").describe()["starts_from"] == "noise"
    t = torch.tensor([0.0, 0.5])
    torch.testing.assert_close(follmer.diffusion(t), torch.tensor([0.2, 0.1]))
    torch.testing.assert_close(build_interpolant("linear").diffusion(t), torch.zeros(2))


def test_interpolant_argument_errors() -> None:
    """Bad names, settings and shapes raise ValueErrors naming the problem."""
    x0, x1, z = _draws()
    t = torch.rand(SHAPE[0], dtype=x0.dtype)
    with pytest.raises(ValueError, match="unknown interpolant"):
        build_interpolant("cosine")
    with pytest.raises(ValueError, match="bad settings"):
        build_interpolant("trigonometric", epsilon=0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        LinearInterpolant(sigma_min=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        FollmerInterpolant(epsilon=0.0)
    with pytest.raises(ValueError, match="beta"):
        FollmerInterpolant(beta="t^3")
    with pytest.raises(ValueError, match="Wiener value w is required"):
        FollmerInterpolant().sample(x0, x1, t, None)
    with pytest.raises(ValueError, match="differ in shape"):
        LinearInterpolant().path(x0, x1[:, :1], t, None)
    with pytest.raises(ValueError, match="batch"):
        LinearInterpolant().path(x0, x1, t[:2], None)
    with pytest.raises(ValueError, match="floating-point"):
        LinearInterpolant().path(x0, x1, torch.zeros(SHAPE[0], dtype=torch.long), None)


def test_sample_times() -> None:
    """Times lie in [t_min, t_max), are reproducible per generator, and bad ranges raise."""
    t = sample_times(4096, torch.Generator().manual_seed(0), 1e-4, 1 - 1e-4)
    assert t.shape == (4096,) and t.min() >= 1e-4 and t.max() < 1 - 1e-4
    assert 0.45 < t.mean() < 0.55
    again = sample_times(4096, torch.Generator().manual_seed(0), 1e-4, 1 - 1e-4)
    torch.testing.assert_close(t, again)
    river = sample_times(8, torch.Generator().manual_seed(1))
    torch.testing.assert_close(river, torch.rand(8, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="t_min < t_max"):
        sample_times(4, None, 0.5, 0.5)
    with pytest.raises(ValueError, match="batch"):
        sample_times(0)


def test_regression_loss_reductions() -> None:
    """'mean' averages every element (RIVER); 'sum' sums non-batch dims and averages rows (PFI)."""
    pred, target = torch.zeros(2, 2, 3), torch.ones(2, 2, 3)
    target[1] = 2.0
    assert regression_loss(pred, target, "mean").item() == pytest.approx((6 * 1 + 6 * 4) / 12)
    assert regression_loss(pred, target, "sum").item() == pytest.approx((6 * 1 + 6 * 4) / 2)
    with pytest.raises(ValueError, match="reduction"):
        regression_loss(pred, target, "none")
    with pytest.raises(ValueError, match="differ in shape"):
        regression_loss(pred, target[:1])


# ---------------------------------------------------------------- samplers


def _exp_sin_error(method: str, points: int) -> float:
    """|x(1) - x0 exp(sin 1)| for dx/dt = cos(t) x integrated on `points` grid points (float64)."""
    x_init = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    times = torch.linspace(0, 1, points, dtype=torch.float64)
    out = ode_sample(lambda x, t: torch.cos(t) * x, x_init, times, method)
    return (out - x_init * math.exp(math.sin(1.0))).abs().max().item()


def test_euler_converges_at_order_one() -> None:
    """Halving the Euler step halves the error."""
    ratio = _exp_sin_error("euler", 51) / _exp_sin_error("euler", 101)
    assert 1.8 < ratio < 2.2


def test_rk4_converges_at_order_four() -> None:
    """Halving the RK4 step divides the error by ~16."""
    ratio = _exp_sin_error("rk4", 11) / _exp_sin_error("rk4", 21)
    assert 13 < ratio < 19


def test_rk4_is_torchdiffeq_three_eighths_rule() -> None:
    """One step on dx/dt = t^4 gives the 3/8-rule quadrature (11/54), not Simpson's (5/24); exact is 1/5."""
    x_init = torch.zeros(1, 1, dtype=torch.float64)
    out = ode_sample(
        lambda x, t: t**4 * torch.ones_like(x), x_init, torch.tensor([0.0, 1.0], dtype=torch.float64)
    )
    assert out.item() == pytest.approx(11 / 54, abs=1e-12)


def test_grids_and_call_counts() -> None:
    """RIVER rk4 on 100 points: 99 steps x 4 = 396 calls; PFI Euler 99 calls; EM one call per point."""
    river = ode_grid(100)
    assert river.shape == (100,) and river[0] == 0 and river[-1] == 1
    assert ode_grid(100, 0.1, 1.0, scale_with_span=True).shape == (int((1 - 0.1) * 100),)
    pfi = ode_grid(100, 1e-4, 1 - 1e-4)
    torch.testing.assert_close(pfi, torch.linspace(1e-4, 1 - 1e-4, 100))
    x = torch.zeros(2, 2, 4, 4)
    drift, counter = count_calls(lambda x, t: -x)
    ode_sample(drift, x, river, "rk4")
    assert counter.calls == 396
    counter.calls = 0
    ode_sample(drift, x, pfi, "euler")
    assert counter.calls == 99
    counter.calls = 0
    em_sample(drift, lambda t: 0.1 * (1 - t), x, pfi, torch.randn_like)
    assert counter.calls == 100


def test_sampler_argument_errors() -> None:
    """Bad grids and methods raise ValueErrors naming the problem."""
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="method"):
        ode_sample(lambda x, t: x, x, ode_grid(4), "dopri5")
    with pytest.raises(ValueError, match="strictly increasing"):
        ode_sample(lambda x, t: x, x, torch.tensor([0.0, 0.5, 0.5]), "euler")
    with pytest.raises(ValueError, match="at least 2"):
        ode_sample(lambda x, t: x, x, torch.tensor([0.0]), "euler")
    with pytest.raises(ValueError, match="uniformly spaced"):
        em_sample(lambda x, t: x, lambda t: 0.0, x, torch.tensor([0.0, 0.1, 0.5]), torch.randn_like)
    with pytest.raises(ValueError, match="noise returned shape"):
        em_sample(lambda x, t: x, lambda t: 0.0, x, ode_grid(3), lambda m: torch.zeros(2))
    with pytest.raises(ValueError, match="steps"):
        ode_grid(1)
    with pytest.raises(ValueError, match="need >= 2"):
        ode_grid(10, 0.95, 1.0, scale_with_span=True)
    with pytest.raises(ValueError, match="t_start"):
        ode_grid(10, 0.5, 0.2)


def test_em_without_diffusion_equals_euler() -> None:
    """With g = 0, EM on a grid equals torchdiffeq Euler on that grid extended by one dt."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 4, 4, generator=gen, dtype=torch.float64)
    times = torch.linspace(1e-4, 1 - 1e-4, 20, dtype=torch.float64)

    def drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A time-dependent nonlinear drift."""
        return torch.sin(3 * t) - x**3 * 0.5

    extended = torch.cat([times, times[-1:] + (times[1] - times[0])])
    em = em_sample(drift, lambda t: torch.zeros(()), x, times, torch.randn_like)
    torch.testing.assert_close(em, ode_sample(drift, x, extended, "euler"))


def test_em_returns_last_mean_without_final_noise() -> None:
    """With b = 0, g = 1: result = x + sqrt(dt) * (all noise draws but the last); noise drawn per point."""
    times = ode_grid(5, dtype=torch.float64)
    draws = [torch.full((1, 2), float(10**k), dtype=torch.float64) for k in range(5)]
    calls = []

    def noise(like: torch.Tensor) -> torch.Tensor:
        """Return the next fixed draw."""
        calls.append(like.shape)
        return draws[len(calls) - 1]

    x = torch.zeros(1, 2, dtype=torch.float64)
    out = em_sample(lambda x, t: torch.zeros_like(x), lambda t: torch.ones(1), x, times, noise)
    assert len(calls) == 5
    torch.testing.assert_close(out, math.sqrt(0.25) * sum(draws[:-1]))


# ---------------------------------------------------------------- overfitting one pair


class TinyDrift(nn.Module):
    """MLP on flattened [2, 4, 4] latents, conditioned on t (Fourier features) and optionally on x0."""

    def __init__(self, with_x0: bool, dim: int = 32, hidden: int = 512) -> None:
        """Build the layers."""
        super().__init__()
        self.with_x0 = with_x0
        self.register_buffer("freqs", torch.tensor([1.0, 2.0, 4.0, 8.0]) * math.pi)
        in_dim = dim * (2 if with_x0 else 1) + 1 + 2 * 4
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """x, x0 [B, 2, 4, 4], t [B] or 0-d -> drift [B, 2, 4, 4]."""
        b = x.shape[0]
        t = t.expand(b) if t.ndim == 0 else t  # [B]
        ang = t[:, None] * self.freqs  # [B, 4]
        feats = [x.flatten(1), t[:, None], ang.sin(), ang.cos()]  # [B, 32], [B, 1], [B, 4], [B, 4]
        if self.with_x0:
            feats.insert(1, x0.flatten(1))
        return self.net(torch.cat(feats, dim=1)).view_as(x)


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed 'previous frame' x0 and a quite different 'next frame' x1, [1, 2, 4, 4]."""
    gen = torch.Generator().manual_seed(11)
    prev = torch.randn(1, 2, 4, 4, generator=gen)
    nxt = 0.3 * prev.roll(1, dims=-1) + torch.randn(1, 2, 4, 4, generator=gen)
    return prev, nxt


def _sample(
    interp: Interpolant, model: TinyDrift, prev: torch.Tensor, method: str, seed: int
) -> torch.Tensor:
    """Sample 8 next frames with the PFI / RIVER sampler matching the interpolant."""
    gen = torch.Generator().manual_seed(seed)
    ref = prev.expand(8, -1, -1, -1)  # [8, 2, 4, 4]
    drift = lambda x, t: model(x, t, ref)  # noqa: E731
    with torch.no_grad():
        if interp.starts_from == "reference":
            times = ode_grid(100, 1e-4, 1 - 1e-4)
            return em_sample(
                drift, interp.diffusion, ref, times, lambda m: torch.randn(m.shape, generator=gen)
            )
        x_init = torch.randn(ref.shape, generator=gen)
        return ode_sample(drift, x_init, ode_grid(50), method)


def _relative_error(samples: torch.Tensor, target: torch.Tensor) -> float:
    """Largest per-sample ||sample - target|| / ||target||."""
    return ((samples - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)).max().item()


@pytest.fixture
def one_thread():
    """Run torch on one thread: on a loaded 2-core machine two threads spin and are ~8x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("name", "methods", "reduction"),
    [
        ("linear", ("rk4", "euler"), "mean"),
        ("trigonometric", ("rk4", "euler"), "mean"),
        ("follmer", ("em",), "sum"),
    ],
)
def test_overfit_one_pair_lands_on_next_frame(name: str, methods: tuple[str, ...], reduction: str) -> None:
    """A tiny net fit to one (previous, next) pair samples within 10 % of the next frame; untrained fails."""
    torch.manual_seed(0)
    interp = build_interpolant(name)
    prev, nxt = _pair()
    model = TinyDrift(with_x0=interp.starts_from == "reference")
    for method in methods:
        assert _relative_error(_sample(interp, model, prev, method, 1), nxt) > 0.1
    steps, batch = 800, 128
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(5)
    x1 = nxt.expand(batch, -1, -1, -1)  # [B, 2, 4, 4]
    for _ in range(steps):
        t = sample_times(batch, gen, 1e-4, 1 - 1e-4)
        z = torch.randn(x1.shape, generator=gen)
        x0 = prev.expand_as(x1) if interp.starts_from == "reference" else torch.randn(x1.shape, generator=gen)
        x_t, target = interp.sample(x0, x1, t, z if interp.noisy else None)
        loss = regression_loss(model(x_t, t, x0), target, reduction)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    for method in methods:
        assert _relative_error(_sample(interp, model, prev, method, 2), nxt) < 0.1, method
