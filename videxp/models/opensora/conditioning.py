"""Open-Sora v1.3 condition masks (`cond_type` -> `mask_index`) and the pixel <-> latent conditioning plan."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from videxp.models.opensora.vae import latent_frames, pixel_frames_of_latent

COND_TYPES = ("v2v_head", "i2v_head", "i2v_tail", "i2v_loop")


def mask_index(cond_type: str | None, num_latents: int, condition_frame_length: int = 5) -> list[int]:
    """Latent frames conditioned by `cond_type` (Open-Sora's `prep_ref_and_mask`): v2v_head the first
    `condition_frame_length`, i2v_head [0], i2v_tail [T-1], i2v_loop [0, T-1]; None: none (t2v)."""
    T = int(num_latents)
    if T < 1:
        raise ValueError(f"need at least one latent frame, got {T}")
    if cond_type is None:
        return []
    if cond_type == "v2v_head":
        n = int(condition_frame_length)
        if not 1 <= n <= T:
            raise ValueError(f"condition_frame_length={n} must lie in [1, {T}] ({T} latent frames)")
        return list(range(n))
    if cond_type == "i2v_head":
        return [0]
    if cond_type == "i2v_tail":
        return [T - 1]
    if cond_type == "i2v_loop":
        return sorted({0, T - 1})
    raise ValueError(f"unknown cond_type {cond_type!r}; known: {COND_TYPES} or None")


def condition_tensors(latents: torch.Tensor, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """STDiT3's i2v inputs from latents [B, C, T, H, W]: cond_mask [B, C, T, H, W] (1 on the frames in
    `index`, 0 elsewhere) and cond = latents * cond_mask."""
    mask = torch.zeros_like(latents)
    if index:
        mask[:, :, sorted(set(index))] = 1
    return latents * mask, mask


def legal_frames(n: int, micro_frame_size: int = 17) -> int:
    """The smallest count the VAE accepts that is >= n: 1, or (M-1)k + 1 (16k+1: 17, 33, 49, ...)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"need at least one frame, got {n}")
    step = micro_frame_size - 1
    return 1 if n == 1 else 1 + step * -(-(n - 1) // step)


def head_latents(num_observed: int, micro_frame_size: int = 17) -> int:
    """How many leading latents stand only for observed frames 0..num_observed-1 (their temporal slots, see
    `pixel_frames_of_latent`): 1 -> 1, 4 -> 1, 5 -> 2, 8 -> 2, 9 -> 3, 17 -> 5 (condition_frame_length 5 =
    17 frames), 21 -> 7. A latent whose slot reaches a frame to be generated is never conditioned. The first
    latent of a later chunk stands for the frame shared with the previous chunk, which that chunk's last
    latent already covers; it is conditioned only together with the latents after it (18 -> 5, not 6)."""
    n = 0
    while pixel_frames_of_latent(n, micro_frame_size)[-1] < int(num_observed):
        n += 1
    if n > 1 and len(pixel_frames_of_latent(n - 1, micro_frame_size)) == 1:
        n -= 1  # a chunk's first latent (slot = the shared frame 16c) with nothing after it
    return n


@dataclass(frozen=True)
class ConditionPlan:
    """What one head-conditioned call does, in pixel and latent frames (recorded in the sample manifest)."""

    observed_frames: int  # pixel frames given (the head of the clip)
    target_frames: int  # pixel frames asked for, right after them
    model_frames: int  # frames the model runs on: observed + target padded to the next legal count
    padded_frames: int  # model_frames - observed - target: generated, then trimmed away
    latent_frames: int  # latents of model_frames
    conditioned_latents: list[int]  # latent frames conditioned on the observed frames (mask_index)
    conditioned_pixel_frames: list[int]  # [first, last] pixel frames those latents stand for (empty: none)
    unused_observed_frames: list[int]  # observed frames not covered by a conditioned latent ([] if all are)

    def to_dict(self) -> dict:
        return asdict(self)


def plan_head_call(
    num_observed: int, num_target: int, max_frames: int | None = None, micro_frame_size: int = 17
) -> ConditionPlan:
    """The conditioning of a call that continues `num_observed` head frames with `num_target` frames."""
    if num_target < 1:
        raise ValueError("a call must generate at least one frame")
    total = int(num_observed) + int(num_target)
    model = legal_frames(total, micro_frame_size)
    if max_frames is not None and model > int(max_frames):
        raise ValueError(
            f"{num_observed} observed + {num_target} generated frames = {total}, padded to {model} "
            f"(16k+1) > model.max_frames={max_frames}; lower inference.step_size or raise max_frames"
        )
    n_lat = latent_frames(model, micro_frame_size)
    k = min(head_latents(num_observed, micro_frame_size), n_lat) if num_observed else 0
    covered = pixel_frames_of_latent(k - 1, micro_frame_size)[-1] + 1 if k else 0
    return ConditionPlan(
        observed_frames=int(num_observed),
        target_frames=int(num_target),
        model_frames=model,
        padded_frames=model - total,
        latent_frames=n_lat,
        conditioned_latents=list(range(k)),
        conditioned_pixel_frames=[0, covered - 1] if k else [],
        unused_observed_frames=list(range(covered, int(num_observed))),
    )
