"""FDM's Gaussian diffusion: schedules, respacing, masked eps loss, per-row seeded ancestral/DDIM sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from videxp.models.fdm.diffusion import GaussianDiffusion, mean_flat, space_timesteps
from videxp.models.fdm.unet import FDMUNet


def dummy_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A row-wise, elementwise stand-in for the network (x [B, ...], t [B] model time)."""
    return torch.tanh(x * 0.7 + t.view(-1, *[1] * (x.ndim - 1)) / 1000.0) * 0.9


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


# ----------------------------------------------------------------------------- schedules
def test_linear_schedule_endpoints_scale_with_steps():
    for n in (1000, 100):
        betas = GaussianDiffusion(n).base.betas
        assert len(betas) == n
        np.testing.assert_allclose([betas[0], betas[-1]], [1e-4 * 1000 / n, 0.02 * 1000 / n], rtol=1e-9)
    abar = GaussianDiffusion(1000).base.alphas_cumprod
    assert abar[0] == pytest.approx(1 - 1e-4) and abar[-1] < 1e-4


def test_cosine_schedule():
    s = GaussianDiffusion(1000, "cosine").base
    assert (s.betas > 0).all() and (s.betas <= 0.999).all()
    assert (np.diff(s.alphas_cumprod) < 0).all() and s.alphas_cumprod[-1] < 1e-6
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert s.alphas_cumprod[499] == pytest.approx(f(0.5) / f(0.0), rel=1e-6)
    with pytest.raises(ValueError, match="unknown noise schedule"):
        GaussianDiffusion(10, "quadratic")


def test_q_sample_statistics():
    d = GaussianDiffusion(1000)
    x0 = torch.full((4, 2, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 250, 600, 999])
    xt = d.q_sample(x0, t, noise)
    abar = torch.tensor(d.base.alphas_cumprod[t.numpy()], dtype=torch.float32)
    mean, std = xt.flatten(1).mean(1), xt.flatten(1).std(1)
    torch.testing.assert_close(mean, 0.5 * abar.sqrt(), atol=0.03, rtol=0)
    torch.testing.assert_close(std, (1 - abar).sqrt(), atol=0.03, rtol=0.03)


# ----------------------------------------------------------------------------- respacing (FDM semantics)
def test_space_timesteps_matches_fdm():
    assert sorted(space_timesteps(1000, "10")) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert sorted(space_timesteps(1000, "ddim10")) == list(range(0, 1000, 100))
    # two sections of 500, 25 steps each, stride 499/24 accumulated as a float running sum (as FDM)
    assert sorted(space_timesteps(1000, "25,25")) == [
        0,
        21,
        42,
        62,
        83,
        104,
        125,
        146,
        166,
        187,
        208,
        229,
        249,
        270,
        291,
        312,
        333,
        353,
        374,
        395,
        416,
        437,
        457,
        478,
        499,
        500,
        521,
        542,
        562,
        583,
        604,
        625,
        646,
        666,
        687,
        708,
        729,
        749,
        770,
        791,
        812,
        833,
        853,
        874,
        895,
        916,
        937,
        957,
        978,
        999,
    ]
    assert space_timesteps(1000, 1000) == set(range(1000))
    with pytest.raises(ValueError, match="cannot divide"):
        space_timesteps(10, "11")
    with pytest.raises(ValueError, match="integer stride"):
        space_timesteps(1000, "ddim999")


def test_respaced_schedule_and_model_time():
    d = GaussianDiffusion(1000)
    s = d.schedule("10")
    assert len(s) == 10 and s.timestep_map.tolist() == sorted(space_timesteps(1000, "10"))
    # the respaced chain keeps the cumulative alphas of the kept steps
    np.testing.assert_allclose(s.alphas_cumprod, d.base.alphas_cumprod[s.timestep_map], rtol=1e-12)
    torch.testing.assert_close(d.model_time(s, torch.tensor([0, 9])), torch.tensor([0.0, 999.0]))
    d100 = GaussianDiffusion(100)
    torch.testing.assert_close(d100.model_time(d100.base, torch.tensor([3, 99])), torch.tensor([30.0, 990.0]))
    raw = GaussianDiffusion(100, rescale_timesteps=False)
    assert raw.model_time(raw.base, torch.tensor([3])).tolist() == [3]
    assert d.schedule(None) is d.schedule("") is d.base


# ----------------------------------------------------------------------------- loss
def test_training_loss_is_masked_fdm_style():
    d = GaussianDiffusion(1000)
    g = torch.Generator().manual_seed(0)
    B, T = 2, 4
    x = torch.rand(B, T, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x.shape, generator=g)
    t = torch.tensor([5, 700])
    obs = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0]])
    latent = 1 - obs
    seen = {}

    def model_fn(x_t, t_model):
        seen["x_t"], seen["t"] = x_t, t_model
        eps = dummy_eps(x_t, t_model)
        return torch.where(obs[..., None, None, None] > 0, torch.full_like(eps, 1e3), eps)  # junk on obs

    loss = d.training_losses(model_fn, x, t, noise, obs, latent)
    assert loss.shape == (B,)
    eps = dummy_eps(seen["x_t"], seen["t"])
    expected = ((noise - eps) ** 2 * latent[..., None, None, None]).flatten(1).sum(1) / (T * 3 * 8 * 8)
    torch.testing.assert_close(loss, expected)  # junk on observed frames: zero weight; mean over ALL elements
    torch.testing.assert_close(seen["t"], t.float())
    torch.testing.assert_close(seen["x_t"][obs > 0], x[obs > 0], rtol=0, atol=0)  # observed frames clean
    # "masked" normalisation divides by the masked elements instead
    dm = GaussianDiffusion(1000, loss_normalisation="masked")
    torch.testing.assert_close(
        dm.training_losses(model_fn, x, t, noise, obs, latent), expected * T / latent.sum(1)
    )
    # FDM's [B, T, 1, 1, 1] masks give the same
    torch.testing.assert_close(
        d.training_losses(model_fn, x, t, noise, obs[..., None, None, None], latent[..., None, None, None]),
        loss,
    )


def test_mean_flat():
    x = torch.ones(2, 3, 4)
    m = torch.tensor([[1.0, 0, 0], [0, 0, 0]])[..., None]
    torch.testing.assert_close(mean_flat(x, m), torch.tensor([1 / 3, 0.0]))
    torch.testing.assert_close(mean_flat(x, m, "masked"), torch.tensor([1.0, 0.0]))


# ----------------------------------------------------------------------------- sampling
def _cond(B: int = 2, T: int = 4, size: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(B, T, 3, size, size, generator=g) * 2 - 1
    obs = torch.zeros(B, T)
    obs[:, 0] = 1
    obs[1, 2] = 1
    return x0, obs


@pytest.mark.parametrize(
    "kw",
    [
        dict(timestep_respacing="10"),
        dict(timestep_respacing="ddim10", use_ddim=True),
        dict(timestep_respacing=5, use_ddim=True, eta=1.0),
    ],
    ids=["ancestral", "ddim", "ddim-eta1"],
)
def test_sampling_keeps_observed_frames_and_rows_independent(kw):
    d = GaussianDiffusion(1000)
    x0, obs = _cond()
    both = d.sample(dummy_eps, x0.shape, x0, obs, 1 - obs, generators=gens(7, 8), **kw)
    assert torch.equal(both[obs > 0], x0[obs > 0])
    assert both.isfinite().all() and both.abs().max() <= 1.0 + 1e-6 and not torch.equal(both, x0)
    alone = d.sample(dummy_eps, x0[:1].shape, x0[:1], obs[:1], generators=gens(7), **kw)
    assert torch.equal(alone[0], both[0])
    other = d.sample(dummy_eps, x0.shape, x0, obs, generators=gens(7, 9), **kw)  # row 1's seed changes
    assert torch.equal(other[0], both[0]) and not torch.equal(other[1], both[1])


def test_sample_equals_fdm_reference_values():
    """Pinned outputs of FDM's own p_sample_loop / ddim_sample_loop (same noise stream, B = 1) for
    `dummy_eps`, shape (1, 2, 3, 4, 4), torch seed 0."""
    x0, obs = torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 2)
    cases = [
        (
            GaussianDiffusion(1000),
            dict(timestep_respacing="10"),
            -22.268531799316406,
            [0.883902370929718, -0.22452616691589355, -0.7551368474960327, -1.0],
        ),
        (
            GaussianDiffusion(1000),
            dict(timestep_respacing="ddim10", use_ddim=True, eta=0.5),
            -23.0703125,
            [-0.7280640602111816, -0.7647087574005127, -0.8063470125198364, -1.0],
        ),
        (
            GaussianDiffusion(100, "cosine", sigma_small=True),
            {},
            -31.85924530029297,
            [0.692040205001831, -0.8418477177619934, -0.6162857413291931, -0.09118614345788956],
        ),
    ]
    for d, kw, total, first in cases:
        out = d.sample(dummy_eps, x0.shape, x0, obs, generators=gens(0), **kw)
        assert out.sum().item() == pytest.approx(total, abs=1e-4)
        torch.testing.assert_close(out.flatten()[:4], torch.tensor(first), rtol=0, atol=1e-6)


def test_ddim_eta0_is_deterministic_given_initial_noise():
    d = GaussianDiffusion(1000)
    x0, obs = _cond()
    kw = dict(timestep_respacing="ddim20", use_ddim=True)
    g = gens(3, 4)
    a = d.sample(dummy_eps, x0.shape, x0, obs, generators=g, **kw)
    # eta = 0 draws nothing after the initial noise: the generators are exactly one draw further on
    ref = gens(3, 4)
    for gi, ri in zip(g, ref, strict=True):
        torch.randn(x0.shape[1:], generator=ri)
        assert torch.equal(gi.get_state(), ri.get_state())
    b = d.sample(dummy_eps, x0.shape, x0, obs, generators=gens(3, 4), **kw)
    assert torch.equal(a, b)
    c = d.sample(dummy_eps, x0.shape, x0, obs, generators=gens(5, 6), **kw)
    assert not torch.equal(a[obs == 0], c[obs == 0])


def test_sample_argument_errors():
    d = GaussianDiffusion(100)
    x0, obs = _cond()
    with pytest.raises(ValueError, match="one torch.Generator per batch row"):
        d.sample(dummy_eps, x0.shape, x0, obs, generators=gens(1))
    with pytest.raises(ValueError, match="obs_mask"):
        d.sample(dummy_eps, x0.shape, x0, obs[:, :2], generators=gens(1, 2))
    with pytest.raises(ValueError, match="model output"):
        d.sample(
            lambda x, t: torch.cat([x, x], 2),
            x0.shape,
            x0,
            obs,
            generators=gens(1, 2),
            timestep_respacing="2",
        )


def test_sampling_with_the_unet():
    """End to end with a tiny FDMUNet: observed frames exact, row 0 the same alone or batched."""
    torch.manual_seed(0)
    net = FDMUNet(
        model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,), num_heads=2
    ).eval()
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    d = GaussianDiffusion(1000)
    x0, obs = _cond(B=2, T=3, size=8)
    lat = 1 - obs
    idx = torch.tensor([[0, 4, 8], [10, 11, 30]])

    def model_fn(rows):
        return lambda x_t, t: net(
            x_t, x0=x0[rows], timesteps=t, frame_indices=idx[rows], obs_mask=obs[rows], latent_mask=lat[rows]
        )

    both = d.sample(model_fn(slice(0, 2)), x0.shape, x0, obs, lat, gens(1, 2), timestep_respacing="4")
    alone = d.sample(
        model_fn(slice(0, 1)), x0[:1].shape, x0[:1], obs[:1], lat[:1], gens(1), timestep_respacing="4"
    )
    assert torch.equal(both[obs > 0], x0[obs > 0])
    # equal up to float32 kernels that depend on the batch size (amplified by 1/sqrt(abar) at high noise)
    torch.testing.assert_close(alone[0], both[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "kw",
    [
        dict(timestep_respacing=None),
        dict(timestep_respacing="25"),
        dict(timestep_respacing="ddim25", use_ddim=True),
    ],
    ids=["full-chain", "respaced", "ddim"],
)
def test_oracle_denoiser_recovers_its_target(kw):
    """With the exact noise prediction for a fixed clean video, every sampler ends at that video."""
    d = GaussianDiffusion(1000)
    x0, obs = _cond()
    target = torch.rand_like(x0) * 1.6 - 0.8  # [B, T, C, H, W], the video the oracle denoises towards
    abar = torch.from_numpy(d.base.alphas_cumprod).float()

    def oracle(x_t: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
        a = abar[t_model.round().long()].view(-1, *[1] * (x_t.ndim - 1))
        return (x_t - a.sqrt() * target) / (1 - a).sqrt()

    out = d.sample(oracle, x0.shape, x0, obs, generators=gens(1, 2), **kw)
    latent = obs == 0
    assert torch.allclose(out[latent], target[latent], atol=2e-3)


# ----------------------------------------------------------------------------- x0 / v targets (videxp)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_prediction_targets_invert_exactly(prediction):
    """The training target of each parameterisation maps back to the same (x0, eps) at every step."""
    d = GaussianDiffusion(1000, "cosine", prediction=prediction)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 2, 3, 4, 4, generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 300, 700, 999])
    x_t = d.q_sample(x0, t, eps)
    got_x0, got_eps = d.split_prediction(d.base, d.target(x0, eps, t), x_t, t)
    # x0 from an eps prediction divides by sqrt(abar) (tiny at t = 999): compare where it is well conditioned
    rows = slice(0, 3) if prediction == "eps" else slice(None)
    torch.testing.assert_close(got_x0[rows], x0[rows], atol=1e-4, rtol=0)
    rows = (
        slice(1, 4) if prediction == "x0" else slice(None)
    )  # eps from x0 divides by sqrt(1 - abar), 0 at t = 0
    torch.testing.assert_close(got_eps[rows], eps[rows], atol=1e-4, rtol=0)


@pytest.mark.parametrize("prediction", ["x0", "v"])
@pytest.mark.parametrize("kw", [dict(timestep_respacing="25"), dict(timestep_respacing="10", use_ddim=True)])
def test_oracle_x0_and_v_predictions_recover_their_target(prediction, kw):
    """The sampler reads x0 / v outputs correctly: the exact prediction of a fixed video ends on that video
    (and an x0 output read as eps does not; v is close to eps at the last, low-noise steps)."""
    d = GaussianDiffusion(1000, "cosine", prediction=prediction)
    x0, obs = _cond()
    target = torch.rand_like(x0) * 1.6 - 0.8
    abar = torch.from_numpy(d.base.alphas_cumprod).float()

    def oracle(x_t: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
        a = abar[t_model.round().long()].view(-1, *[1] * (x_t.ndim - 1))
        eps = (x_t - a.sqrt() * target) / (1 - a).sqrt()
        return target if prediction == "x0" else a.sqrt() * eps - (1 - a).sqrt() * target

    out = d.sample(oracle, x0.shape, x0, obs, generators=gens(1, 2), **kw)
    latent = obs == 0
    assert torch.allclose(out[latent], target[latent], atol=2e-3)
    if prediction == "x0":
        misread = GaussianDiffusion(1000, "cosine").sample(
            oracle, x0.shape, x0, obs, generators=gens(1, 2), **kw
        )
        assert not torch.allclose(misread[latent], target[latent], atol=0.1)


def test_min_snr_weights_and_timestep_sampling():
    t = torch.tensor([10, 500, 990])
    for prediction, unit in (("x0", lambda s: 1.0), ("eps", lambda s: s), ("v", lambda s: s + 1)):
        d = GaussianDiffusion(
            1000, "cosine", prediction=prediction, loss_weighting="min_snr", min_snr_gamma=5
        )
        abar = torch.from_numpy(d.base.alphas_cumprod[t.numpy()])
        snr = abar / (1 - abar)
        # weight x (target MSE in x0 units) = min(SNR, 5) x x0-MSE
        torch.testing.assert_close(d.loss_weight(t).double() * unit(snr), snr.clamp(max=5), rtol=1e-5, atol=0)
    assert torch.equal(GaussianDiffusion(1000).loss_weight(t), torch.ones(3))

    g = torch.Generator().manual_seed(0)
    uniform = GaussianDiffusion(1000).sample_timesteps(4, g)
    assert torch.equal(uniform, torch.randint(0, 1000, (4,), generator=torch.Generator().manual_seed(0)))
    high = GaussianDiffusion(1000, timestep_sampling="logit_normal", logit_mean=1.0).sample_timesteps(
        20000, g
    )
    assert high.min() >= 0 and high.max() <= 999
    assert (high > 500).float().mean().item() == pytest.approx(0.8413, abs=0.01)  # P(n > -1) for m = 1
    with pytest.raises(ValueError, match="prediction"):
        GaussianDiffusion(prediction="score")
