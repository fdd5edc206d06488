"""Open-Sora condition masks, the pixel <-> latent conditioning plan and the rectified-flow sampler."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from videxp.models.opensora import rflow
from videxp.models.opensora.conditioning import (
    condition_tensors,
    head_latents,
    legal_frames,
    mask_index,
    plan_head_call,
)
from videxp.models.opensora.vae import pixel_frames_of_latent

NO_GUIDANCE = dict(cfg_scale=1.0, image_cfg_scale=1.0, use_flaw_fix=False)


# ----------------------------------------------------------------------------- masks and plans
def test_mask_index_per_cond_type():
    assert mask_index("v2v_head", 15) == [0, 1, 2, 3, 4]  # condition_frame_length 5 = 17 frames
    assert mask_index("v2v_head", 15, 2) == [0, 1]
    assert mask_index("i2v_head", 15) == [0]
    assert mask_index("i2v_tail", 15) == [14]
    assert mask_index("i2v_loop", 15) == [0, 14]
    assert mask_index("i2v_loop", 1) == [0]
    assert mask_index(None, 15) == []
    with pytest.raises(ValueError, match="unknown cond_type"):
        mask_index("v2v_tail", 15)
    with pytest.raises(ValueError, match="condition_frame_length=6"):
        mask_index("v2v_head", 5, 6)


def test_condition_tensors_mask_only_the_indexed_frames():
    z = torch.randn(2, 16, 5, 2, 3)
    cond, mask = condition_tensors(z, [0, 3])
    assert mask.shape == z.shape
    assert mask[:, :, [0, 3]].eq(1).all() and mask[:, :, [1, 2, 4]].eq(0).all()
    assert torch.equal(cond, z * mask)


def test_legal_frames_and_head_latents():
    assert [legal_frames(n) for n in (1, 2, 17, 18, 45, 49, 50)] == [1, 17, 17, 33, 49, 49, 65]
    table = {1: 1, 4: 1, 5: 2, 8: 2, 9: 3, 16: 4, 17: 5, 18: 5, 20: 5, 21: 7, 33: 10, 34: 10}
    assert {n: head_latents(n) for n in table} == table


@pytest.mark.parametrize("n_obs", range(1, 41))
def test_conditioned_latents_stand_only_for_observed_frames(n_obs):
    p = plan_head_call(n_obs, 49 - n_obs)
    slots = [pixel_frames_of_latent(i) for i in range(p.latent_frames)]
    for i in p.conditioned_latents:  # each conditioned latent stands only for observed frames
        assert slots[i][-1] < n_obs
    k = len(p.conditioned_latents)
    assert p.conditioned_latents == list(range(k))
    rest = [i for i in range(k, p.latent_frames) if slots[i][-1] >= n_obs]
    assert rest and rest[0] <= k + 1  # at most a chunk's shared first frame lies between
    if rest[0] == k + 1:
        assert slots[k] == range(slots[k - 1][-1], slots[k - 1][-1] + 1)  # covered by latent k-1 already


def test_w5_plan_pads_45_to_49_and_conditions_on_frames_0_to_4():
    p = plan_head_call(8, 37)
    assert (p.model_frames, p.padded_frames, p.latent_frames) == (49, 4, 15)
    assert p.conditioned_latents == [0, 1] and p.conditioned_pixel_frames == [0, 4]
    assert p.unused_observed_frames == [5, 6, 7]
    # Open-Sora's own v2v_head: 17 observed frames = condition_frame_length 5
    p17 = plan_head_call(17, 32)
    assert p17.conditioned_latents == mask_index("v2v_head", 15) and p17.unused_observed_frames == []
    assert plan_head_call(0, 17).conditioned_latents == []  # text-to-video
    with pytest.raises(ValueError, match="padded to 65.*max_frames=49"):
        plan_head_call(8, 45, max_frames=49)


# ----------------------------------------------------------------------------- the flow
def test_add_noise_endpoints_and_velocity_sign():
    x0, n = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    assert torch.allclose(rflow.add_noise(x0, n, torch.zeros(2)), x0)
    assert torch.allclose(rflow.add_noise(x0, n, torch.full((2,), 1000.0)), n)
    # d x_t / d t = (n - x0) / 1000: the model's v = x0 - n points from noise to data (diffusers: n - x0)
    t = torch.full((2,), 400.0)
    slope = (rflow.add_noise(x0, n, t + 1) - rflow.add_noise(x0, n, t)) * 1000
    assert torch.allclose(slope, -rflow.velocity_target(x0, n), atol=1e-3)


def oracle(x0: torch.Tensor, sign: float = 1.0):
    """The exact velocity towards x0 from any z_t: v = x0 - eps with eps = (z_t - (1 - s) x0) / s."""

    def velocity(z, t, mode):
        s = (t / 1000).view(-1, 1, 1, 1, 1)
        return sign * (x0 - (z - (1 - s) * x0) / s)

    return velocity


@pytest.mark.parametrize("warp", [False, True])
def test_euler_with_the_exact_velocity_lands_on_the_data(warp):
    x0, noise = torch.randn(2, 4, 5, 4, 4), torch.randn(2, 4, 5, 4, 4)
    s = rflow.RFlowSettings(steps=7, use_timestep_transform=warp, **NO_GUIDANCE)
    out = rflow.sample(oracle(x0), noise, s, 360, 640, 49)
    assert torch.allclose(out, x0, atol=1e-4)
    flipped = rflow.sample(oracle(x0, -1.0), noise, s, 360, 640, 49)  # diffusers' sign
    assert not torch.allclose(flipped, x0, atol=1e-1)


def test_timesteps_and_warp():
    s = rflow.RFlowSettings(steps=4, use_timestep_transform=False)
    assert rflow.timesteps(s, 512, 512, 1) == [1000.0, 750.0, 500.0, 250.0]
    t = torch.linspace(0, 1000, 11, dtype=torch.float64)
    assert torch.allclose(rflow.warp_timesteps(t, 512, 512, 1), t)  # reference size, one frame: identity
    assert torch.allclose(rflow.warp_timesteps(t, 512, 512, 1, scale=3.0), t)  # scale: videos only
    warped = rflow.warp_timesteps(t, 360, 640, 49)  # ratio sqrt(0.879) * sqrt(12) = 3.25
    assert warped[0] == 0 and warped[-1] == pytest.approx(1000)
    assert (warped[1:-1] > t[1:-1]).all() and (warped.diff() > 0).all()
    ratio = (360 * 640 / 512**2) ** 0.5 * 12**0.5
    assert warped[5].item() == pytest.approx(1000 * ratio * 0.5 / (1 + (ratio - 1) * 0.5))
    # (T - 1) // 4 latent-ish frames: 45 frames count like 44 // 4 = 11
    assert torch.allclose(rflow.warp_timesteps(t, 360, 640, 45), rflow.warp_timesteps(t, 360, 640, 47))


def constant_model(values: dict[str, float], calls: list[str]):
    def velocity(z, t, mode):
        calls.append(mode)
        return torch.full_like(z, values[mode])

    return velocity


def test_three_way_guidance_and_oscillation():
    calls: list[str] = []
    model = constant_model({"cond": 3.0, "uncond_text": 2.0, "uncond_all": 1.5}, calls)
    s = rflow.RFlowSettings(cfg_scale=7.5, image_cfg_scale=2.0, scale_image_weight=False)
    z, t = torch.zeros(1, 2, 3, 2, 2), torch.full((1,), 500.0)
    v = rflow.guided_velocity(model, z, t, 0, s, conditioned=True)
    assert torch.allclose(v, torch.full_like(z, 1.5 + 2.0 * 0.5 + 7.5 * 1.0))  # no flaw fix with a condition
    assert calls == ["cond", "uncond_text", "uncond_all"]
    calls.clear()  # text-to-video: two-way
    v = rflow.guided_velocity(model, z, t, 0, rflow.RFlowSettings(use_flaw_fix=False), conditioned=False)
    assert torch.allclose(v, torch.full_like(z, 1.5 + 7.5 * 1.5)) and calls == ["cond", "uncond_all"]
    # oscillation: full scale for 10 steps, then 1.0 on odd steps
    assert [rflow.guidance_scale(7.5, i, True) for i in (9, 10, 11, 12, 13)] == [7.5, 7.5, 1.0, 7.5, 1.0]
    assert rflow.guidance_scale(7.5, 11, False) == 7.5
    calls.clear()  # both scales 1 at step 11: one conditional pass
    v = rflow.guided_velocity(model, z, t, 11, s, conditioned=True)
    assert calls == ["cond"] and torch.allclose(v, torch.full_like(z, 3.0))


def test_image_scale_ramps_over_frames_and_decays_over_steps():
    s = rflow.RFlowSettings(steps=30, image_cfg_scale=5.0, use_oscillation_guidance_for_image=False)
    first = rflow.image_scale(s, 0, 15).flatten()
    assert first[0] == pytest.approx(1.0) and first[-1] == pytest.approx(5.0)
    assert torch.allclose(first.diff(), torch.full((14,), 4 / 14, dtype=first.dtype))
    mid = rflow.image_scale(s, 15, 15).flatten()
    assert mid[-1] == pytest.approx(5.0 - 4.0 * 15 / 29)
    assert torch.all(rflow.image_scale(s, 29, 15) == 1.0)  # the top has decayed to initial_image_scale
    flat = rflow.RFlowSettings(image_cfg_scale=5.0, scale_image_weight=False)
    assert rflow.image_scale(flat, 3, 15) == 5.0
    calls: list[str] = []
    model = constant_model({"cond": 3.0, "uncond_text": 2.0, "uncond_all": 1.5}, calls)
    z = torch.zeros(1, 2, 15, 2, 2)
    v = rflow.guided_velocity(model, z, torch.full((1,), 900.0), 0, s, conditioned=True)
    expected = 1.5 + first.view(1, 1, -1, 1, 1).float() * 0.5 + 7.5
    assert torch.allclose(v, expected.expand_as(v))


def test_flaw_fix_rescales_the_guided_std():
    cond = torch.randn(2, 4, 3, 4, 4)
    guided = 3 * cond + 1
    out = rflow.flaw_fix(guided, cond, 0.7)
    dims = (1, 2, 3, 4)
    rescaled = guided * cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    assert torch.allclose(out, 0.7 * rescaled + 0.3 * guided)
    assert torch.allclose(rflow.flaw_fix(cond, cond, 0.7), cond)


def test_sdedit_renoises_the_conditioned_frames_from_the_row_generators():
    ref, noise = torch.randn(2, 4, 5, 2, 2), torch.randn(2, 4, 5, 2, 2)
    seen = []

    def model(z, t, mode):
        seen.append((t[0].item(), z.clone()))
        return torch.ones_like(z)

    s = rflow.RFlowSettings(steps=3, use_timestep_transform=False, cfg_scale=1.0, image_cfg_scale=1.0)
    gens = [torch.Generator().manual_seed(k) for k in (5, 6)]
    out = rflow.sample(model, noise, s, 32, 32, 17, ref, [0, 1], generators=gens)
    replay = [torch.Generator().manual_seed(k) for k in (5, 6)]
    for t, z in seen:  # each step: the reference noised to t with fresh noise from row b's generator
        eps = torch.stack([torch.randn(4, 2, 2, 2, generator=g) for g in replay])
        expected = rflow.add_noise(ref[:, :, :2], eps, torch.tensor([t, t]))
        assert torch.allclose(z[:, :, :2], expected, atol=1e-6)
        assert torch.allclose(z[:, :, 2:], seen[0][1][:, :, 2:] + (1000 - t) / 1000, atol=1e-5)  # v = 1
    assert not torch.equal(out[:, :, :2], ref[:, :, :2])  # Open-Sora ends on the last Euler step
    held = rflow.sample(model, noise, dataclasses.replace(s, hold_condition=True), 32, 32, 17, ref, [0, 1])
    assert torch.equal(held[:, :, :2], ref[:, :, :2]) and torch.equal(held[:, :, 2:], out[:, :, 2:])
    with pytest.raises(ValueError, match="reference"):
        rflow.sample(model, noise, s, 32, 32, 17, cond_index=[0])
    with pytest.raises(ValueError, match="cfg_scale must be >= 1"):
        rflow.RFlowSettings(cfg_scale=0.5)


def test_edit_mask_keeps_regenerates_and_partly_renoises_frames():
    ref, noise = torch.randn(1, 4, 4, 2, 2), torch.randn(1, 4, 4, 2, 2)
    edit = torch.tensor([[0.0, 1.0, 0.5, 0.0]])  # keep, generate, edit from t = 500 on, keep
    seen = []

    def model(z, t, mode, x_mask=None):
        seen.append((t[0].item(), z.clone(), x_mask.clone()))
        return torch.ones_like(z)

    s = rflow.RFlowSettings(steps=4, use_timestep_transform=False, cfg_scale=1.0)
    out = rflow.sample(model, noise, s, 32, 32, 17, ref, edit_mask=edit, generators=[torch.Generator()])
    assert torch.equal(out[:, :, [0, 3]], ref[:, :, [0, 3]])  # kept exactly
    assert [x[0].tolist() for _, _, x in seen] == [[False, True, False, False]] * 2 + [
        [False, True, True, False]
    ] * 2
    (t0, z0, _), (_, z1, _), (t2, z2, _) = seen[:3]
    assert torch.equal(z0[:, :, 1], noise[:, :, 1]) and torch.equal(z0[:, :, 2], ref[:, :, 2])
    assert torch.equal(z1[:, :, 2], ref[:, :, 2])  # t = 750 > 500: still the reference
    assert t2 == 500 and not torch.equal(z2[:, :, 2], ref[:, :, 2])  # noised to t = 500 once, then generated
    assert torch.allclose(out[:, :, 1], noise[:, :, 1] + 1.0)  # v = 1 over the whole path
    with pytest.raises(ValueError, match="either cond_index"):
        rflow.sample(model, noise, s, 32, 32, 17, ref, [0], edit_mask=edit)
    with pytest.raises(ValueError, match=r"edit_mask must be \[B, T\]"):
        rflow.sample(model, noise, s, 32, 32, 17, ref, edit_mask=edit[:, :3])
