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
    """Open-Sora's resolution- and length-aware timestep warp: t -> r t' / (1 + (r - 1) t') * 1000 with
    t' = t / 1000 and r = sqrt(H W / 512^2) * sqrt(n) * scale, n = (num_frames - 1) / 4 for videos, 1 for
    images (the frame count mapping of reference/large_models.md §3.5). Larger and longer clips spend more
    steps at high noise. Monotone, fixes 0 and 1000."""
    n = 1.0 if int(num_frames) <= 1 else (int(num_frames) - 1) / 4
    r = math.sqrt(float(height) * float(width) / BASE_RESOLUTION) * math.sqrt(n) * float(scale)
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
    """The sampler's knobs (configs/opensora-v1-3/inference/{t2v,v2v}.py defaults)."""

    steps: int = 30  # num_sampling_steps
    cfg_scale: float = 7.5  # text guidance
    image_cfg_scale: float = 5.0  # image (condition) guidance; 1 = none (i2v/v2v only)
    use_timestep_transform: bool = True  # the warp above
    transform_scale: float = 1.0  # extra factor of the warp ratio
    use_oscillation_guidance_for_text: bool = True  # full scale for 10 steps, then alternate with 1.0
    use_oscillation_guidance_for_image: bool = True
    use_flaw_fix: bool = True  # rescale the guided prediction's std towards the conditional one's
    flaw_fix_blend: float = 0.7  # weight of the rescaled prediction
    use_sdedit: bool = True  # re-noise the conditioned latent frames from the reference at every step

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
    ts = torch.tensor(
        [(1 - i / settings.steps) * NUM_TIMESTEPS for i in range(settings.steps)], dtype=torch.float64
    )
    if settings.use_timestep_transform:
        ts = warp_timesteps(ts, height, width, num_frames, settings.transform_scale)
    return ts.tolist()


def guidance_scale(scale: float, step: int, oscillate: bool) -> float:
    """The scale at sampling step `step`: oscillation keeps it for 10 steps, then uses 1.0 on odd steps."""
    if oscillate and step >= OSCILLATION_FULL_STEPS and step % 2 == 1:
        return 1.0
    return float(scale)


def flaw_fix(guided: torch.Tensor, cond: torch.Tensor, blend: float) -> torch.Tensor:
    """Rescale the guided prediction to the conditional prediction's per-sample std, blended with the
    unrescaled one (Lin et al., "Common diffusion noise schedules and sample steps are flawed")."""
    dims = tuple(range(1, guided.ndim))
    rescaled = guided * (
        cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12)
    )
    return blend * rescaled + (1 - blend) * guided


# model(z [B, C, T, H, W], t [B], mode) -> velocity [B, C, T, H, W]; mode is "cond" (prompt + condition),
# "uncond_text" (null text + condition) or "uncond_all" (null text, no condition)
VelocityFn = Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]


def guided_velocity(
    model: VelocityFn, z: torch.Tensor, t: torch.Tensor, step: int, s: RFlowSettings, conditioned: bool
) -> torch.Tensor:
    """Classifier-free guidance. Text only: u + gs (c - u). With a condition (i2v / v2v) three-way:
    uncond_all + image_gs (uncond_text - uncond_all) + text_gs (cond - uncond_text)."""
    text_gs = guidance_scale(s.cfg_scale, step, s.use_oscillation_guidance_for_text)
    image_gs = (
        guidance_scale(s.image_cfg_scale, step, s.use_oscillation_guidance_for_image) if conditioned else 1.0
    )
    cond = model(z, t, "cond")
    if text_gs == 1.0 and image_gs == 1.0:
        return cond
    if not conditioned:
        out = (u := model(z, t, "uncond_all")) + text_gs * (cond - u)
    else:
        u_text = model(z, t, "uncond_text")
        u_all = model(z, t, "uncond_all") if image_gs != 1.0 else u_text
        out = u_all + image_gs * (u_text - u_all) + text_gs * (cond - u_text)
    return flaw_fix(out, cond, s.flaw_fix_blend) if s.use_flaw_fix else out


@torch.no_grad()
def sample(
    model: VelocityFn,
    noise: torch.Tensor,  # [B, C, T, H, W]
    settings: RFlowSettings,
    height: float,
    width: float,
    num_frames: int,
    reference: torch.Tensor | None = None,  # [B, C, T, H, W] clean latents of the conditioned frames
    cond_index: list[int] | None = None,  # latent frames held to the reference
) -> torch.Tensor:  # [B, C, T, H, W] clean latents
    """Euler integration of z' = v from t = 1000 (noise) to 0: z <- z + v * dt/1000, dt = t_i - t_{i+1}.

    With `cond_index`, the conditioned frames are re-noised from `reference` at every step when
    `use_sdedit` (with the initial noise, so they follow the forward process), and set to the clean
    reference at the end: the returned latents hold the condition exactly."""
    ts = timesteps(settings, height, width, num_frames)
    z = noise.clone()
    idx = None
    if cond_index:
        if reference is None:
            raise ValueError("cond_index needs the reference latents")
        idx = torch.tensor(sorted(cond_index), dtype=torch.long, device=z.device)
    B = z.shape[0]
    for i, t_now in enumerate(ts):
        t = torch.full((B,), t_now, device=z.device, dtype=torch.float32)
        if idx is not None and settings.use_sdedit:
            z = z.index_copy(2, idx, add_noise(reference.index_select(2, idx), noise.index_select(2, idx), t))
        v = guided_velocity(model, z, t, i, settings, conditioned=idx is not None)
        t_next = ts[i + 1] if i + 1 < len(ts) else 0.0
        z = z + v.to(z.dtype) * ((t_now - t_next) / NUM_TIMESTEPS)
    if idx is not None:
        z = z.index_copy(2, idx, reference.index_select(2, idx).to(z.dtype))
    return z
