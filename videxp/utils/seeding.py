"""Per-sample seeds that depend only on (seed, video index, sample index, ...)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys, e.g. (run seed, video, sample, step).

    Independent of batch composition, process, or shard, so a run split into pieces draws
    exactly the randomness of the unsplit run.
    """
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative, got {keys}")
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str = "cpu", enabled: bool = True) -> Iterator[None]:
    """Inside: torch's global RNG (the CPU's, and `device`'s when it is a GPU) seeded with `seed`; outside:
    the states from before, untouched. For code that draws from the global RNG (dropout, torch.rand) and must
    draw the same again, e.g. a training step of a resumed run. `enabled=False` does nothing."""
    if not enabled:
        yield
        return
    device = torch.device(device)
    gpu = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpu):
        torch.random.default_generator.manual_seed(int(seed))
        if gpu:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(int(seed))
        yield


def row_generators(seeds: list[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per batch row, row b seeded with seeds[b]."""
    return [torch_generator(s, device) for s in seeds]


def randn_rows(generators, shape, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise [len(generators), *shape]; row b is drawn from generators[b] alone (on the
    generator's device), then moved to `device`."""
    rows = [torch.randn(tuple(shape), generator=g, device=g.device, dtype=dtype) for g in generators]
    return torch.stack(rows).to(device or rows[0].device)
