"""Clip sampling: window ranges, seeded reproducibility, LARP/SRVP conventions, fps steps, short videos."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from videxp.data.clips import ClipSampler, Window, frame_step, span

NUM_FRAMES = [60, 100, 37, 128, 16, 250]
FPS = [25.0] * len(NUM_FRAMES)


def _check_in_range(sampler: ClipSampler, windows: list[Window], num_frames: list[int]) -> None:
    for w in windows:
        idx = sampler.frame_indices(w)
        assert len(idx) == sampler.length
        assert idx[0] == w.start >= 0
        assert idx[-1] < num_frames[w.video], (w, num_frames[w.video])
        assert np.all(np.diff(idx) == w.step)


def test_span_and_frame_step():
    assert span(16, 1) == 16
    assert span(16, 5) == 76  # RIVER CLEVRER: 16 frames at skip 4 cover 76 source frames
    assert frame_step(25.0, stride=5) == 5
    assert frame_step(None, stride=3) == 3
    assert frame_step(25.0, target_fps=25.0) == 1
    assert frame_step(50.0, target_fps=25.0) == 2
    assert frame_step(29.97, target_fps=15.0) == 2  # near an integer: no warning expected
    with pytest.warns(UserWarning, match="not an integer"):
        assert frame_step(30.0, target_fps=8.0) == 4  # 3.75
    with pytest.raises(ValueError, match="unknown"):
        frame_step(None, target_fps=10.0)
    with pytest.raises(ValueError, match="exceeds"):
        frame_step(25.0, target_fps=30.0)
    with pytest.raises(ValueError, match="not both"):
        frame_step(25.0, stride=2, target_fps=12.5)


def test_near_integer_ratio_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert frame_step(29.97, target_fps=15.0) == 2


def test_target_fps_sets_per_video_step():
    s = ClipSampler(length=4, target_fps=12.5, mode="first")
    windows = s.plan([40, 40], [25.0, 50.0])
    assert [w.step for w in windows] == [2, 4]
    assert list(s.frame_indices(windows[1])) == [0, 4, 8, 12]


def test_random_mode_draws_in_range():
    s = ClipSampler(length=16, stride=2, mode="random")
    assert span(16, 2) == 31
    windows = s.plan(NUM_FRAMES, FPS)
    assert all(w.start is None for w in windows)
    assert [w.video for w in windows] == [0, 1, 2, 3, 5]  # 16 frames < span 31
    rng = np.random.default_rng(0)
    for _ in range(100):
        for w in windows:
            idx = s.frame_indices(w, s.draw_start(w, NUM_FRAMES, rng))
            assert idx[0] >= 0 and idx[-1] < NUM_FRAMES[w.video]
    starts = {s.draw_start(windows[0], 60, rng) for _ in range(2000)}
    assert starts == set(range(60 - 31 + 1))  # every start reachable, none beyond
    with pytest.raises(ValueError, match="no fixed start"):
        s.frame_indices(windows[0])


def test_first_mode():
    s = ClipSampler(length=10, mode="first")
    windows = s.plan(NUM_FRAMES)
    assert all(w.start == 0 for w in windows)
    assert [w.video for w in windows] == [0, 1, 2, 3, 4, 5]


def test_fixed_mode_reproducible_and_independent_of_other_videos():
    s = ClipSampler(length=16, mode="fixed", seed=7)
    a = s.plan(NUM_FRAMES, FPS)
    b = ClipSampler(length=16, mode="fixed", seed=7).plan(NUM_FRAMES, FPS)
    assert a == b
    _check_in_range(s, a, NUM_FRAMES)
    # changing other videos (lengths, count) does not move video 1's window
    other = ClipSampler(length=16, mode="fixed", seed=7).plan([20, NUM_FRAMES[1], 500, 300, 17], None)
    assert [w for w in other if w.video == 1] == [w for w in a if w.video == 1]
    # a different seed moves at least one start
    c = ClipSampler(length=16, mode="fixed", seed=8).plan(NUM_FRAMES, FPS)
    assert [w.start for w in c] != [w.start for w in a]


def test_fixed_srvp_style_num_clips():
    s = ClipSampler(length=40, mode="fixed", num_clips=1000, seed=42)
    lengths = [60, 100, 37, 128, 45, 250, 41]
    a = s.plan(lengths)
    assert len(a) == 1000
    assert a == ClipSampler(length=40, mode="fixed", num_clips=1000, seed=42).plan(lengths)
    _check_in_range(s, a, lengths)
    assert s.skipped == [(2, "37 frames < 40 needed for 40 frames at step 1")]
    # the documented draw order: video then start, one generator
    rng = np.random.default_rng(42)
    eligible = [0, 1, 3, 4, 5, 6]
    expected = []
    for _ in range(1000):
        v = eligible[int(rng.integers(0, len(eligible)))]
        expected.append(Window(v, int(rng.integers(0, lengths[v] - 40 + 1)), 1))
    assert a == expected
    assert {w.video for w in a} == set(eligible)


def test_all_mode_non_overlapping_windows():
    s = ClipSampler(length=16, mode="all")
    windows = s.plan(NUM_FRAMES)
    per_video = {v: [w for w in windows if w.video == v] for v in range(len(NUM_FRAMES))}
    for v, n in enumerate(NUM_FRAMES):
        assert len(per_video[v]) == n // 16  # LARP: len(video) // frame_num
        covered = np.concatenate([s.frame_indices(w) for w in per_video[v]]) if per_video[v] else np.array([])
        assert len(np.unique(covered)) == len(covered)  # no frame in two windows
        assert np.all(covered < n)
    assert s.skipped == []  # 37 and 16 frames still hold at least one window


def test_all_mode_with_stride():
    s = ClipSampler(length=4, stride=3, mode="all")
    (n,) = [30]
    windows = s.plan([n])
    spans = [(int(s.frame_indices(w)[0]), int(s.frame_indices(w)[-1])) for w in windows]
    assert spans == [(0, 9), (12, 21)]  # hop = length * step, ranges disjoint, all inside 30 frames


def test_all_mode_larp_subsample_matches_direct_computation():
    lengths = [int(x) for x in np.random.default_rng(1).integers(10, 200, size=50)]
    s = ClipSampler(length=16, mode="all", num_clips=100, seed=42)
    picked = s.plan(lengths)
    # direct LARP computation: index_map over videos in order, then Random(42).sample of the indices
    index_map = []
    for v, n in enumerate(lengths):
        for i in range(n // 16):
            index_map.append((v, i * 16))
    idx = random.Random(42).sample(range(len(index_map)), 100)
    assert [(w.video, w.start) for w in picked] == [index_map[i] for i in idx]
    assert len(set(picked)) == 100
    too_many = ClipSampler(length=16, mode="all", num_clips=len(index_map) + 1, seed=42)
    with pytest.raises(ValueError, match="exceeds"):
        too_many.plan(lengths)


def test_uniform_mode():
    s = ClipSampler(length=16, mode="uniform", num_clips=3)
    windows = s.plan([100, 16, 10])
    assert [(w.video, w.start) for w in windows] == [(0, 0), (0, 42), (0, 84), (1, 0), (1, 0), (1, 0)]
    assert s.skipped and s.skipped[0][0] == 2
    one = ClipSampler(length=16, mode="uniform", num_clips=1).plan([100])
    assert one == [Window(0, 42, 1)]
    with pytest.raises(ValueError, match="num_clips"):
        ClipSampler(length=16, mode="uniform")


def test_short_videos_skipped_with_reason_and_logged(caplog):
    s = ClipSampler(length=20, stride=2, mode="first")
    with caplog.at_level("WARNING"):
        windows = s.plan([50, 38, 39, 5])
    assert [w.video for w in windows] == [0, 2]
    assert s.skipped == [
        (1, "38 frames < 39 needed for 20 frames at step 2"),
        (3, "5 frames < 39 needed for 20 frames at step 2"),
    ]
    assert "skipped 2 of 4" in caplog.text
    # plan resets the record
    s.plan([50])
    assert s.skipped == []


def test_short_videos_padded_with_repeat_last():
    s = ClipSampler(length=8, mode="random", pad="repeat_last")
    windows = s.plan([5, 20])
    assert [w.video for w in windows] == [0, 1] and s.skipped == []
    start = s.draw_start(windows[0], 5, np.random.default_rng(0))
    assert start == 0
    assert list(s.frame_indices(windows[0], start, num_frames=5)) == [0, 1, 2, 3, 4, 4, 4, 4]
    strict = ClipSampler(length=8, mode="first")
    with pytest.raises(ValueError, match="run past"):
        strict.frame_indices(Window(0, 0, 1), num_frames=5)
    # all mode: a short video gives one padded window
    all_mode = ClipSampler(length=8, mode="all", pad="repeat_last").plan([5, 20])
    assert all_mode == [Window(0, 0, 1), Window(1, 0, 1), Window(1, 8, 1)]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mode"):
        ClipSampler(length=4, mode="sliding")
    with pytest.raises(ValueError, match="pad"):
        ClipSampler(length=4, pad="zeros")
    with pytest.raises(ValueError, match="num_clips must be None"):
        ClipSampler(length=4, mode="random", num_clips=3)
    with pytest.raises(ValueError, match="fps has"):
        ClipSampler(length=4).plan([10, 10], [25.0])
