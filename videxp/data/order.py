"""The training order: a stream of per-epoch permutations from (seed, epoch), resumable at any batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from videxp.utils.seeding import derive_seed, torch_generator

SHUFFLE_KEY = 7_340_033  # derive_seed key of the shuffle (apart from the models' (seed, step) draws)


class ResumableShuffle(Sampler[tuple[int, int]]):
    """Shuffled clip indices from a stream that depends on the seed alone, never on the global RNG.

    The stream is permutation 0 of the `size` clips, then permutation 1, ... (each drawn from (seed, n)).
    Each pass over the sampler yields `size` draws starting at `position()`, the number of draws the run
    has used so far (batches done × batch size): a run resumed after any batch, or continued past its
    former `max_steps`, gets exactly the draws an uninterrupted run would have got. Items are
    `(clip index, draw)` pairs; `draw` numbers the draw in the stream, so a dataset can seed per-draw
    randomness (random windows) from it.
    """

    def __init__(self, size: int, seed: int, position: Callable[[], int]):
        if size < 1:
            raise ValueError(f"ResumableShuffle needs at least one item, got {size}")
        self.size, self.seed, self.position = int(size), int(seed), position

    def permutation(self, n: int) -> list[int]:
        """The n-th permutation of the stream."""
        g = torch_generator(derive_seed(self.seed, SHUFFLE_KEY, n))
        return torch.randperm(self.size, generator=g).tolist()  # [size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = int(self.position())
        orders: dict[int, list[int]] = {}
        for draw in range(start, start + self.size):
            n, k = divmod(draw, self.size)
            if n not in orders:
                orders[n] = self.permutation(n)
            yield orders[n][k], draw

    def __len__(self) -> int:
        return self.size


def training_order(trainer: Any, size: int, batch_size: int) -> ResumableShuffle | None:
    """The resumable order of `size` training items for a Lightning `trainer` on one process: the run seed
    (seed_everything, the same on resume) and the position read from the batches already done, restored
    from a checkpoint on resume. None without a trainer or with several processes (DDP keeps Lightning's
    distributed sampler, which restarts the epoch on resume)."""
    if trainer is None or trainer.world_size > 1:
        return None
    progress = trainer.fit_loop.epoch_loop.batch_progress.total  # restored from a checkpoint on resume

    def position() -> int:
        return progress.processed * batch_size  # draws used: batches whose step ran x batch size

    return ResumableShuffle(size, torch.initial_seed(), position)


def item_rng(seed: int, index: int, draw: int | None, random: bool = True) -> np.random.Generator:
    """The generator of a dataset item's random choices (window start, view): for a numbered `draw` of the
    training order (ResumableShuffle) seeded by (seed, draw, index), reproducible on resume; without one
    from torch's generator (DataLoader worker seeding applies); not `random` (evaluation) by (seed, index)."""
    if not random:
        return np.random.default_rng([seed & 0xFFFFFFFF, index])
    if draw is not None:
        return np.random.default_rng([seed & 0xFFFFFFFF, draw, index])
    return np.random.default_rng(int(torch.randint(0, 2**62, ())))
