"""Folder walks under attack: symlink cycles must not multiply files, symlink loops must be named."""

from __future__ import annotations

import os

import numpy as np
import pytest

from videxp.data.hdf5 import shard_files
from videxp.data.video_folder import list_videos as folder_videos
from videxp.errors import SymlinkLoopError
from videxp.scoring.comparison import discover
from videxp.scoring.folders import list_videos as scoring_videos
from videxp.video import read_video
from videxp.video.walk import entries, walk


def _two_videos(root):
    (root / "sub").mkdir(parents=True)
    np.save(root / "a.npy", np.zeros((2, 4, 4, 3), np.uint8))
    np.save(root / "sub" / "b.npy", np.zeros((2, 4, 4, 3), np.uint8))
    return root


def test_directory_cycle_is_walked_once(tmp_path):
    root = _two_videos(tmp_path / "videos")
    os.symlink(".", root / "cyc")  # ln -s . cyc
    os.symlink("..", root / "sub" / "up")
    files = [f for _, _, fs in walk(root) for f in fs]
    assert sorted(f.name for f in files) == ["a.npy", "b.npy"]
    assert list(scoring_videos(root)) == ["a", "sub/b"]
    assert sorted(folder_videos(root)) == ["a.npy", "sub/b.npy"]


def test_linked_folder_outside_the_root_is_followed_once(tmp_path):
    root = _two_videos(tmp_path / "videos")
    other = tmp_path / "elsewhere"
    other.mkdir()
    np.save(other / "c.npy", np.zeros((2, 4, 4, 3), np.uint8))
    os.symlink(other, root / "linked")
    os.symlink(other, root / "linked_again")
    assert list(scoring_videos(root)) == ["a", "linked/c", "sub/b"]


def test_file_symlink_loop_is_named(tmp_path):
    root = _two_videos(tmp_path / "videos")
    os.symlink(root / "y.npy", root / "x.npy")
    os.symlink(root / "x.npy", root / "y.npy")  # x -> y -> x
    for list_them in (scoring_videos, folder_videos, entries, lambda r: list(walk(r))):
        with pytest.raises(SymlinkLoopError, match=r"x\.npy: symlink loop"):
            list_them(root)
    with pytest.raises(OSError, match="symlink loop"):  # still an OSError for existing handlers
        shard_files(root)


def test_frame_folder_with_a_looping_frame_is_named(tmp_path):
    frames = tmp_path / "clip"
    frames.mkdir()
    os.symlink(frames / "1.png", frames / "0.png")
    os.symlink(frames / "0.png", frames / "1.png")
    with pytest.raises(SymlinkLoopError, match=r"0\.png: symlink loop"):
        read_video(frames)


def test_metrics_discovery_survives_a_cycle(tmp_path):
    run = tmp_path / "sweep" / "0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    os.symlink("..", run / "parent")
    assert discover(tmp_path / "sweep") == [run / "metrics.json"]
