"""Open-Sora's rectified flow: timestep schedule and warp, training targets, guided Euler sampling."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

NUM_TIMESTEPS = 1000  # the model's timestep scale: t in (0, 1000], t = 1000 is pure noise
BASE_RESOLUTION = 512 * 512  # pixels of the timestep warp's reference size
OSCILLATION_FULL_STEPS = 10  # oscillation guidance: full scale for these first steps, then alternate


# ----------------------------------------------------------------------------- the forward process
def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t/1000) * x0 + (t/1000) * noise, t [B] per row (x0, noise [B, C, T, H, W])."""
    s = (t.float() / NUM_TIMESTEPS).view(-1, *([1] * (x0.ndim - 1))).to(x0.device, x0.dtype)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What STDiT3 predicts: v = x0 - noise. Open-Sora's sign; diffusers' flow matching uses noise - x0."""
    return x0 - noise


def warp_timesteps(
    t: torch.Tensor, height: float, width: float, num_frames: int, scale: float = 1.0
) -> torch.Tensor:
    """Open-Sora v1.3's resolution- and length-aware timestep warp: t -> r t' / (1 + (r - 1) t') * 1000 with
    t' = t / 1000 and r = sqrt(H W / 512^2) * sqrt((num_frames - 1) // 4), times `scale` for videos; images
    (num_frames 1) use r = sqrt(H W / 512^2). Larger and longer clips spend more steps at high noise.
    Monotone, fixes 0 and 1000."""
    video = int(num_frames) > 1
    n = (int(num_frames) - 1) // 4 if video else 1
    r = (
        math.sqrt(float(height) * float(width) / BASE_RESOLUTION)
        * math.sqrt(n)
        * (float(scale) if video else 1.0)
    )
    u = t / NUM_TIMESTEPS
    return r * u / (1 + (r - 1) * u) * NUM_TIMESTEPS


def sample_training_timesteps(
    n: int, g: torch.Generator, method: str = "logit-normal", loc: float = 0.0, scale: float = 1.0
) -> torch.Tensor:
    """n training timesteps in (0, 1000) [n]: 1000 * sigmoid(N(loc, scale)) (Open-Sora's `logit-normal`)
    or uniform, drawn from g (the warp is applied by the caller)."""
    if method == "logit-normal":
        u = torch.sigmoid(loc + scale * torch.randn(n, generator=g))
    elif method == "uniform":
        u = torch.rand(n, generator=g)
    else:
        raise ValueError(f"unknown timestep sampling {method!r}; use 'logit-normal' or 'uniform'")
    return u * NUM_TIMESTEPS


# ----------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class RFlowSettings:
    """The sampler's knobs (configs/opensora-v1-3/inference/v2v.py defaults)."""

    steps: int = 30  # num_sampling_steps
    cfg_scale: float = 7.5  # text guidance
    image_cfg_scale: float = 5.0  # guidance on the conditioned frames; 1 = none (i2v / v2v only)
    scale_image_weight: bool = True  # image scale per latent frame: 1 at the first, up to a decaying top
    initial_image_scale: float = 1.0  # the bottom of that ramp
    use_timestep_transform: bool = True  # the warp above
    transform_scale: float = 1.0  # extra factor of the warp ratio (videos)
    use_oscillation_guidance_for_text: bool = True  # full scale for 10 steps, then 1.0 on odd steps
    use_oscillation_guidance_for_image: bool = True
    use_flaw_fix: bool = True  # text-to-video only: rescale the guided prediction's std (0.7 blend)
    use_sdedit: bool = True  # re-noise the conditioned latents from the reference at every step
    hold_condition: bool = False  # videxp option: set the conditioned latents to the reference at the end

    def __post_init__(self) -> None:
        if int(self.steps) < 1:
            raise ValueError(f"model.sampling.steps must be >= 1, got {self.steps}")
        for name in ("cfg_scale", "image_cfg_scale"):
            if float(getattr(self, name)) < 1.0:
                raise ValueError(
                    f"model.sampling.{name} must be >= 1 (1 = no guidance), got {getattr(self, name)}"
                )

    def to_dict(self) -> dict:
        return asdict(self)


def timesteps(settings: RFlowSettings, height: float, width: float, num_frames: int) -> list[float]:
    """The sampling timesteps t_i = (1 - i/N) * 1000, i = 0..N-1 (warped if enabled); Euler steps end at 0."""
    N = settings.steps
    ts = torch.tensor([(1 - i / N) * NUM_TIMESTEPS for i in range(N)], dtype=torch.float64)
    if settings.use_timestep_transform:
        ts = warp_timesteps(ts, height, width, num_frames, settings.transform_scale)
    return ts.tolist()


def guidance_scale(scale: float, step: int, oscillate: bool) -> float:
    """The scale at sampling step `step`: oscillation keeps it for 10 steps, then uses 1.0 on odd steps."""
    if oscillate and step >= OSCILLATION_FULL_STEPS and step % 2 == 1:
        return 1.0
    return float(scale)


def image_scale(s: RFlowSettings, step: int, num_latents: int) -> float | torch.Tensor:
    """The image guidance at `step`: a float, or with `scale_image_weight` a per-latent-frame ramp
    [1, 1, T, 1, 1] from `initial_image_scale` (frame 0) to a top that decays linearly over the steps from
    the image scale to `initial_image_scale` (frames far from the condition are pushed hardest, early)."""
    gs = guidance_scale(s.image_cfg_scale, step, s.use_oscillation_guidance_for_image)
    lo = float(s.initial_image_scale)
    if not s.scale_image_weight or gs <= lo:
        return gs
    top = torch.linspace(gs, lo, s.steps, dtype=torch.float64)[step].item()
    return torch.linspace(lo, top, num_latents).view(1, 1, -1, 1, 1)


def flaw_fix(guided: torch.Tensor, cond: torch.Tensor, blend: float = 0.7) -> torch.Tensor:
    """Rescale the guided prediction to the conditional prediction's per-sample std, blended with the
    unrescaled one (Lin et al., "Common diffusion noise schedules and sample steps are flawed")."""
    dims = tuple(range(1, guided.ndim))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12)
    return guided * (blend * ratio + (1 - blend))


# model(z [B, C, T, H, W], t [B], mode) -> velocity [B, C, T, H, W]; mode is "cond" (prompt + condition),
# "uncond_text" (null text + condition) or "uncond_all" (null text, condition latents zeroed)
VelocityFn = Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]


def guided_velocity(
    model: VelocityFn, z: torch.Tensor, t: torch.Tensor, step: int, s: RFlowSettings, conditioned: bool
) -> torch.Tensor:
    """Classifier-free guidance. Text only: u + gs (c - u), then the flaw fix. With a condition (i2v / v2v)
    three-way: uncond_all + image_gs (uncond_text - uncond_all) + text_gs (cond - uncond_text). Passes
    whose scale is 1 are skipped (they cancel)."""
    text_gs = guidance_scale(s.cfg_scale, step, s.use_oscillation_guidance_for_text)
    cond = model(z, t, "cond")
    if not conditioned:
        if text_gs == 1.0:
            return cond
        out = (u := model(z, t, "uncond_all")) + text_gs * (cond - u)
        return flaw_fix(out, cond) if s.use_flaw_fix else out
    image_gs = image_scale(s, step, z.shape[2])
    image_off = isinstance(image_gs, float) and image_gs == 1.0
    if text_gs == 1.0 and image_off:
        return cond
    u_text = model(z, t, "uncond_text")
    if image_off:
        return u_text + text_gs * (cond - u_text)
    u_all = model(z, t, "uncond_all")
    if isinstance(image_gs, torch.Tensor):
        image_gs = image_gs.to(z.device, z.dtype)
    return u_all + image_gs * (u_text - u_all) + text_gs * (cond - u_text)


def _fresh_noise(like: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like `like` [B, ...]: row b from generators[b] (global RNG if None)."""
    if generators is None:
        return torch.randn_like(like)
    rows = [torch.randn(like.shape[1:], generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(like.device, like.dtype)


@torch.no_grad()
def sample(
    model: VelocityFn,
    noise: torch.Tensor,  # [B, C, T, H, W]
    settings: RFlowSettings,
    height: float,
    width: float,
    num_frames: int,
    reference: torch.Tensor | None = None,  # [B, C, T, H, W] clean latents of the conditioned frames
    cond_index: list[int] | None = None,  # v1.3 i2v / v2v: latent frames conditioned on the reference
    generators: list[torch.Generator] | None = None,  # one per row: the fresh noise of every step
    edit_mask: torch.Tensor | None = None,  # v1.2 x_mask path: [B, T] edit ratio per latent frame
) -> torch.Tensor:  # [B, C, T, H, W] clean latents
    """Euler integration of z' = v from t = 1000 (noise) to 0: z <- z + v * dt/1000, dt = t_i - t_{i+1}.

    Two conditioning mechanisms, as Open-Sora's sampler:
    - `cond_index` (v1.3 `mask_index`): three-way guidance; with `use_sdedit` the conditioned frames are
      replaced by the reference noised to the current t (fresh noise each step) before every model call;
      `hold_condition` also sets them to the clean reference at the end.
    - `edit_mask` (v1.2 `x_mask`): frame f starts from the reference and is only regenerated once
      t <= 1000 * edit_mask[f] (0 = kept exactly, 1 = generated from noise, between = partly re-noised).
      The model gets `x_mask=` (True = being generated; False frames use the timestep-0 modulation) as a
      keyword, and text-only guidance.
    """
    if cond_index and edit_mask is not None:
        raise ValueError("use either cond_index (mask_index) or edit_mask (x_mask), not both")
    if (cond_index or edit_mask is not None) and reference is None:
        raise ValueError("cond_index / edit_mask need the reference latents")
    ts = timesteps(settings, height, width, num_frames)
    z = noise.clone()
    B = z.shape[0]
    idx = None
    if cond_index:
        idx = torch.tensor(sorted(set(cond_index)), dtype=torch.long, device=z.device)
        ref = reference.index_select(2, idx).to(z.dtype)  # [B, C, n, H, W]
    if edit_mask is not None:
        if edit_mask.shape != (B, z.shape[2]):
            raise ValueError(f"edit_mask must be [B, T] = {(B, z.shape[2])}, got {tuple(edit_mask.shape)}")
        edit = edit_mask.to(z.device, torch.float32) * NUM_TIMESTEPS  # [B, T]
        ref_frames = (edit_mask.to(z.device) < 1)[:, None, :, None, None]  # start from the reference
        z = torch.where(ref_frames, reference.to(z.dtype), z)
        started = edit_mask.to(z.device) == 1  # frames already noise
    for i, t_now in enumerate(ts):
        t = torch.full((B,), t_now, device=z.device, dtype=torch.float32)
        step_model = model
        if idx is not None and settings.use_sdedit:
            z = z.index_copy(2, idx, add_noise(ref, _fresh_noise(ref, generators), t))
        if edit_mask is not None:
            active = edit >= t[:, None]  # [B, T] frames being generated at this t
            x0 = z.clone()
            start = (active & ~started)[:, None, :, None, None]  # frames noised to t now, once
            z = torch.where(start, add_noise(x0, _fresh_noise(x0, generators), t), x0)
            started = active

            def step_model(z_, t_, mode, _active=active):
                return model(z_, t_, mode, x_mask=_active)

        v = guided_velocity(step_model, z, t, i, settings, conditioned=idx is not None)
        t_next = ts[i + 1] if i + 1 < len(ts) else 0.0
        z = z + v.to(z.dtype) * ((t_now - t_next) / NUM_TIMESTEPS)
        if edit_mask is not None:
            z = torch.where(active[:, None, :, None, None], z, x0)  # frames not yet generated stay put
    if idx is not None and settings.hold_condition:
        z = z.index_copy(2, idx, ref)
    return z
