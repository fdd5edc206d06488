"""The resumable training order: a seed-fixed stream of permutations, read from any position."""

from __future__ import annotations

import itertools

import torch

from videxp.data.order import ResumableShuffle


def _stream(size: int, seed: int, start: int, n: int) -> list[tuple[int, int]]:
    return list(itertools.islice(ResumableShuffle(size, seed, lambda: start), n))


def test_each_pass_is_a_permutation_and_draws_are_numbered():
    items = _stream(10, 0, 0, 10)
    assert sorted(i for i, _ in items) == list(range(10))
    assert [d for _, d in items] == list(range(10))


def test_a_pass_from_any_position_continues_the_same_stream():
    whole = _stream(10, 3, 0, 10) + _stream(10, 3, 10, 10)  # two epochs read from the start
    for start in (0, 4, 7, 10):  # resumed mid-epoch, at an epoch boundary: a pass yields `size` draws
        assert _stream(10, 3, start, 10) == whole[start : start + 10]


def test_the_order_depends_on_the_seed_not_on_the_global_rng():
    torch.manual_seed(1)
    a = _stream(50, 7, 0, 50)
    torch.manual_seed(2)
    assert _stream(50, 7, 0, 50) == a
    assert _stream(50, 8, 0, 50) != a
