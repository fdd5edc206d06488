"""Merging metric state across torch.distributed ranks (DDP validation, sharded evaluation); no-ops off it."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from videxp.metrics.base import FrameMetric
from videxp.metrics.frechet import FeatureStats


def is_distributed() -> bool:
    """Whether a torch.distributed process group is up with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _collective_device() -> torch.device:
    """Where tensors for collectives must live: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_frame_metric(metric: FrameMetric) -> FrameMetric:
    """A copy of `metric` holding every rank's scored frames (all ranks get the same), or `metric` itself
    when not distributed. Ranks may hold no frames; settings must match on all ranks. Collective: every
    rank must call it."""
    if not is_distributed():
        return metric
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, metric.state())
    merged = metric.empty_copy()
    for rank, state in enumerate(states):
        try:
            merged.add_state(state)
        except ValueError as e:
            raise ValueError(f"rank {rank}: {e}") from e
    return merged


def all_reduce_feature_stats(stats: FeatureStats) -> FeatureStats:
    """Sum `stats` over all ranks in place (float64 count, Σx, Σxxᵀ); every rank ends with the total.

    Ranks with no features yet (dim None) take the others' dim; differing dims raise. A no-op when not
    distributed. Collective: every rank must call it.
    """
    if not is_distributed():
        return stats
    dims: list = [None] * dist.get_world_size()
    dist.all_gather_object(dims, stats.dim)
    known = {d for d in dims if d is not None}
    if len(known) > 1:
        raise ValueError(f"feature dims differ across ranks: {dims}")
    if not known:
        return stats  # nobody has features
    dim = known.pop()
    device = _collective_device()
    count = torch.tensor([stats.count], dtype=torch.float64, device=device)  # [1], exact below 2**53
    s = torch.zeros(dim, dtype=torch.float64, device=device)  # [D]
    ss = torch.zeros(dim, dim, dtype=torch.float64, device=device)  # [D, D]
    if stats.dim is not None:
        s.copy_(torch.from_numpy(stats.sum))
        ss.copy_(torch.from_numpy(stats.sum_sq))
    for t in (count, s, ss):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    stats.dim = dim
    stats.count = int(count.item())
    stats.sum = s.cpu().numpy().astype(np.float64, copy=False)
    stats.sum_sq = ss.cpu().numpy().astype(np.float64, copy=False)
    return stats
