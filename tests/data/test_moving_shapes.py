"""Tests for videxp.data.moving_shapes: determinism, content, and the materialised-shards path."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from videxp.data.hdf5 import shard_files
from videxp.data.moving_shapes import COLOURS, MovingShapes, materialize
from videxp.video import VideoError

SMALL = dict(
    num_videos={"train": 12, "val": 4, "test": 5}, video_length=10, image_size=32, sprite_size=(4, 10)
)


def test_same_arguments_give_identical_bytes_in_any_order():
    a, b = MovingShapes(**SMALL, seed=3), MovingShapes(**SMALL, seed=3)
    forward = [a.clip(i).tobytes() for i in range(12)]
    backward = [b.clip(i).tobytes() for i in reversed(range(12))][::-1]
    assert forward == backward
    assert a.clip(-1).tobytes() == forward[-1]


def test_same_bytes_in_another_process():
    code = (
        "import hashlib; from videxp.data.moving_shapes import MovingShapes; "
        "d = MovingShapes(split='val', num_videos=4, video_length=10, image_size=32, "
        "sprite_size=(4, 10), seed=3); print(hashlib.sha256(d.clip(2).tobytes()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    here = MovingShapes(**{**SMALL, "num_videos": 4}, split="val", seed=3).clip(2)
    assert out.stdout.strip() == hashlib.sha256(here.tobytes()).hexdigest()


def test_different_index_split_or_seed_differ():
    train, val = MovingShapes(**SMALL), MovingShapes(**SMALL, split="val")
    clips = {train.clip(i).tobytes() for i in range(12)}
    assert len(clips) == 12
    assert not clips & {val.clip(i).tobytes() for i in range(4)}
    assert not np.array_equal(train.clip(0), MovingShapes(**SMALL, seed=1).clip(0))


def test_shape_dtype_and_values():
    data = MovingShapes(**SMALL, num_sprites=3)
    assert len(data) == 12 and data.video_id(7) == "train_000007"
    video = data.clip(0)
    assert video.shape == (10, 32, 32, 3) and video.dtype == np.uint8
    colours = np.unique(video.reshape(-1, 3), axis=0)
    palette = {tuple(c) for c in COLOURS} | {(0, 0, 0)}
    assert {tuple(c) for c in colours} <= palette
    assert len(colours) >= 2  # background plus at least one visible sprite
    assert (video[0] == 0).mean() > 0.3  # mostly black background
    assert any(not np.array_equal(video[0], frame) for frame in video[1:])  # things move


def test_sprites_bounce_and_stay_inside():
    data = MovingShapes(
        num_videos=20, video_length=64, image_size=16, num_sprites=1, sprite_size=4, speed=(3.0, 3.0)
    )
    for i in range(20):
        video = data.clip(i)  # [T, H, W, 3]
        covered = (video.max(axis=-1) > 0).reshape(64, -1).sum(axis=1)
        assert (covered == covered[0]).all()  # the sprite is never clipped by a border
        ys = [np.nonzero(frame.max(axis=(1, 2)))[0].min() for frame in video]  # top row per frame
        xs = [np.nonzero(frame.max(axis=(0, 2)))[0].min() for frame in video]
        assert max(ys) - min(ys) > 0 or max(xs) - min(xs) > 0


def test_grayscale_is_replicated():
    video = MovingShapes(**SMALL, grayscale=True, num_sprites=4).clip(1)
    assert video.shape == (10, 32, 32, 3)
    assert (video[..., 0] == video[..., 1]).all() and (video[..., 1] == video[..., 2]).all()
    assert len(np.unique(video)) >= 2


def test_argument_errors():
    with pytest.raises(ValueError, match="split"):
        MovingShapes(split="validation")
    with pytest.raises(ValueError, match="no entry for split 'test'"):
        MovingShapes(split="test", num_videos={"train": 3})
    with pytest.raises(ValueError, match="sprite_size"):
        MovingShapes(image_size=16, sprite_size=(4, 16))
    with pytest.raises(ValueError, match="num_sprites"):
        MovingShapes(num_sprites=20)
    with pytest.raises(IndexError, match="out of range"):
        MovingShapes(**SMALL).clip(12)
    assert len(MovingShapes(num_videos=7)) == 7


def test_generation_is_fast():
    data = MovingShapes(num_videos=200, video_length=16, image_size=32, sprite_size=(4, 8))
    start = time.perf_counter()
    for i in range(200):
        data.clip(i)
    per_clip = (time.perf_counter() - start) / 200
    assert per_clip < 5e-3  # measured ~0.15 ms; generous bound for loaded CI machines


def test_materialize_then_read_from_root(tmp_path):
    source = MovingShapes(**SMALL, seed=7)
    written = materialize(source, tmp_path, videos_per_shard=5)
    assert written == {"train": 12, "val": 4, "test": 5}
    assert [p.name for p in shard_files(tmp_path / "train")] == [f"shard_{k:04d}.hdf5" for k in (1, 2, 3)]
    for split in ("train", "val", "test"):
        generated = MovingShapes(**SMALL, seed=7, split=split)
        stored = MovingShapes(**SMALL, seed=7, split=split, root=tmp_path)
        assert len(stored) == len(generated)
        for i in range(len(generated)):
            np.testing.assert_array_equal(stored.clip(i), generated.clip(i))


def test_materialize_rerun_is_a_no_op_and_resumes(tmp_path):
    source = MovingShapes(**SMALL, grayscale=True)
    materialize(source, tmp_path)
    files = sorted(tmp_path.rglob("*.hdf5"))
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    assert materialize(source, tmp_path) == {"train": 0, "val": 0, "test": 0}
    assert {p: p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("*.hdf5"))} == mtimes
    (tmp_path / "test" / "shard_0001.hdf5").unlink()  # an interrupted run
    assert materialize(source, tmp_path) == {"train": 0, "val": 0, "test": 5}
    train_shard = tmp_path / "train" / "shard_0001.hdf5"
    assert train_shard.stat().st_mtime_ns == mtimes[train_shard]


def test_materialize_refuses_other_content_and_root_checks_counts(tmp_path):
    materialize(MovingShapes(**SMALL, seed=0), tmp_path, splits=("val",))
    with pytest.raises(VideoError, match="differs"):
        materialize(MovingShapes(**SMALL, seed=1), tmp_path, splits=("val",))
    with pytest.raises(VideoError, match="holds 4 videos"):
        MovingShapes(**{**SMALL, "num_videos": 6}, split="val", root=tmp_path)
    with pytest.raises(VideoError, match="expected video_length"):
        MovingShapes(**{**SMALL, "video_length": 8}, split="val", root=tmp_path)
    with pytest.raises(FileNotFoundError):
        MovingShapes(**SMALL, split="train", root=tmp_path)
