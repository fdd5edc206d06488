"""CPU work of the frame metrics in chunks of frames, spread over one shared thread pool per process."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")
CHUNKS_PER_WORKER = 4  # fewer chunks per thread run on the calling thread (a handover costs about a chunk)
_POOLS: dict[int, ThreadPoolExecutor] = {}  # worker count -> threads, kept between calls
os.register_at_fork(after_in_child=_POOLS.clear)  # a forked child has none of its parent's threads


def pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of `workers` threads, made once per process."""
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="videxp-metrics")
    return _POOLS[workers]


def chunks(count: int, per_item: int, elements: int) -> list[slice]:
    """Slices of `count` items of `per_item` elements each, about `elements` elements per slice."""
    step = max(1, elements // max(1, per_item))
    return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def map_chunks(fn: Callable[[slice], T], parts: Sequence[slice]) -> list[T]:
    """[fn(part) for part in parts], over `torch.get_num_threads()` threads when there are enough parts
    (numpy and OpenCV release the GIL, so the threads run in parallel)."""
    workers = min(torch.get_num_threads(), len(parts) // CHUNKS_PER_WORKER)
    if workers <= 1:
        return [fn(part) for part in parts]
    return list(pool(workers).map(fn, parts))


def merge_extremes(parts: Sequence[Sequence[float]]) -> np.ndarray:
    """(min x, max x, min y, max y) [4] float64 over chunks' own extremes [chunks, 4]; NaN propagates."""
    ext = np.asarray(parts, dtype=np.float64)  # [chunks, 4]
    return np.array([ext[:, 0].min(), ext[:, 1].max(), ext[:, 2].min(), ext[:, 3].max()])
