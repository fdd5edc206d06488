"""FDM's training-batch construction: which frames of each video are observed, generated, or padding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class TrainingBatch:
    """K frames per row, gathered from whole videos, with FDM's masks."""

    frames: (
        torch.Tensor
    )  # [B, K, C, H, W] chosen frames (observed + latent first, in index order; then padding)
    frame_indices: torch.Tensor  # [B, K] int64 absolute indices in the source video
    obs_mask: torch.Tensor  # [B, K] float, 1 = observed (enters the network clean)
    latent_mask: torch.Tensor  # [B, K] float, 1 = to be generated; both 0 = padding (own attention group)
    num_chosen: (
        torch.Tensor
    )  # [B] int64: slots [0, num_chosen) hold this row's chosen frames, the rest padding


def _uniform(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def sample_some_indices(max_indices: int, T: int, g: torch.Generator) -> list[int]:
    """One group of evenly spaced frames: size s ~ U{1..max_indices}, log-uniform spacing in
    [1, T/(s-0.999)]."""
    while True:
        s = int(torch.randint(1, max_indices + 1, (), generator=g))
        max_scale = T / (s - 0.999)
        scale = math.exp(_uniform(g) * math.log(max_scale))
        pos = _uniform(g) * (T - scale * (s - 1))
        indices = [int(pos + i * scale) for i in range(s)]
        if all(0 <= i < T for i in indices):  # FDM resamples on the (rare) out-of-range draw
            return indices


def sample_masks(
    batch_size: int, T: int, max_frames: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """FDM's `sample_all_masks`: per row, one latent group, then groups added to obs or latent (p = 0.5 each)
    until the next group would not fit into `max_frames`, or every frame is chosen (FDM itself loops forever
    there). Returns obs, latent masks [B, T] (float)."""
    if max_frames > T:
        raise ValueError(
            f"videos have {T} frames, fewer than max_frames={max_frames}: FDM's masks need at least "
            "max_frames frames per video (set dataset.video_length >= model.max_frames)"
        )
    obs = torch.zeros(batch_size, T)
    latent = torch.zeros(batch_size, T)
    for b in range(batch_size):
        latent[b, sample_some_indices(max_frames, T, g)] = 1.0
        while obs[b].sum() + latent[b].sum() < T:  # every frame chosen (T == max_frames): FDM would spin
            target = obs if _uniform(g) < 0.5 else latent
            idx = torch.tensor(sample_some_indices(max_frames, T, g))
            idx = idx[(obs[b, idx] + latent[b, idx]) == 0]  # drop frames already chosen
            if len(idx) > max_frames - obs[b].sum() - latent[b].sum():
                break
            target[b, idx] = 1.0
    return obs, latent


def build_training_batch(
    videos: torch.Tensor,  # [B, T, C, H, W]
    max_frames: int,
    g: torch.Generator,
    pad_with_random_frames: bool = True,
) -> TrainingBatch:
    """Sample FDM masks and gather K = max_frames frames per row (FDM's `prepare_training_batch`).

    Chosen frames go first, in increasing index order. With `pad_with_random_frames` the remaining
    slots are filled with frames at random indices of another video (the next row of the batch; with
    a batch of one, the same video) and take this row's mask flags at those indices, as FDM does
    (normally 0: an attention group of their own). Without it, rows are padded to the longest row
    with frame 0 of their own video and zero flags.
    """
    B, T = videos.shape[:2]
    obs, latent = sample_masks(B, T, max_frames, g)
    chosen = (obs + latent).clamp(max=1)  # [B, T]
    K = max_frames if pad_with_random_frames else int(chosen.sum(1).max())
    indices = torch.zeros(B, K, dtype=torch.int64)
    frames = videos.new_zeros(B, K, *videos.shape[2:])
    obs_k = torch.zeros(B, K)
    latent_k = torch.zeros(B, K)
    num_chosen = chosen.sum(1).long()
    for b in range(B):
        picked = chosen[b].nonzero().flatten()  # ascending
        n = len(picked)
        indices[b, :n] = picked
        if pad_with_random_frames:
            indices[b, n:] = torch.randint(0, T, (K - n,), generator=g)
            source = videos[(b + 1) % B]
        else:
            source = videos[b]
        frames[b, :n] = videos[b, picked]
        frames[b, n:] = source[indices[b, n:]]
        obs_k[b] = obs[b, indices[b]]
        latent_k[b] = latent[b, indices[b]]
        if not pad_with_random_frames:
            obs_k[b, n:] = 0.0
            latent_k[b, n:] = 0.0
    return TrainingBatch(frames, indices, obs_k.to(videos), latent_k.to(videos), num_chosen)


def build_window_batch(
    videos: torch.Tensor,  # [B, T, C, H, W]
    max_frames: int,
    observed: tuple[int, int],
    g: torch.Generator,
) -> TrainingBatch:
    """Contiguous windows of K = max_frames frames at random starts, the first n observed and the rest latent,
    n ~ U{observed[0]..observed[1]} per row: the index patterns `inference=autoreg` asks for (a videxp
    option, `training_masks=autoregressive`; FDM's own rows are `build_training_batch`'s)."""
    B, T = videos.shape[:2]
    lo, hi = observed
    if not 0 <= lo <= hi < max_frames:
        raise ValueError(
            f"observed frames per window must satisfy 0 <= {lo} <= {hi} < max_frames={max_frames}"
        )
    if max_frames > T:
        raise ValueError(f"videos have {T} frames, fewer than max_frames={max_frames}")
    starts = torch.randint(0, T - max_frames + 1, (B,), generator=g)  # [B]
    indices = starts[:, None] + torch.arange(max_frames)[None]  # [B, K]
    frames = videos[torch.arange(B)[:, None], indices.to(videos.device)]  # [B, K, C, H, W]
    n_obs = torch.randint(lo, hi + 1, (B,), generator=g)  # [B]
    obs = (torch.arange(max_frames)[None] < n_obs[:, None]).to(videos)  # [B, K]
    return TrainingBatch(frames, indices, obs, 1.0 - obs, torch.full((B,), max_frames, dtype=torch.int64))
