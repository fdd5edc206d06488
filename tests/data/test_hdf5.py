"""Tests for videxp.data.hdf5: the RIVER shard layout, the writer, and the lazy multi-process reader."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from videxp.data.hdf5 import HDF5Videos, ShardWriter, shard_files, write_shards
from videxp.video import VideoError


def random_videos(n: int, seed: int = 0, h: int = 8, w: int = 10) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(3, 9)), h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_write_read_equality(tmp_path):
    videos = random_videos(5)
    assert write_shards(videos, tmp_path / "train") == 5
    store = HDF5Videos(tmp_path / "train")
    assert len(store) == 5
    for i, video in enumerate(videos):
        assert store.num_frames(i) == len(video)
        np.testing.assert_array_equal(store.read(i), video)
        np.testing.assert_array_equal(store[i], video)
    np.testing.assert_array_equal(store.lengths, [len(v) for v in videos])


def test_exact_river_layout(tmp_path):
    videos = random_videos(3)
    write_shards(videos, tmp_path / "val")
    assert [p.name for p in (tmp_path / "val").iterdir()] == ["shard_0001.hdf5"]
    with h5py.File(tmp_path / "val" / "shard_0001.hdf5", "r") as f:
        assert set(f.keys()) == {"len", "videos", "0", "1", "2"}
        assert isinstance(f["videos"], h5py.Group) and len(f["videos"]) == 0
        assert sorted(f["len"].keys()) == ["0", "1", "2"]
        assert f["len/0"].shape == () and int(f["len/0"][()]) == len(videos[0])
        assert len(f["0"]) == len(videos[0])
        ds = f["0/0"]
        assert ds.shape == (8, 10, 3) and ds.dtype == np.uint8 and ds.compression == "lzf"
        np.testing.assert_array_equal(f["2/1"][()], videos[2][1])


def test_multiple_shards(tmp_path):
    videos = random_videos(5, seed=1)
    with ShardWriter(tmp_path / "s", videos_per_shard=2) as writer:
        for v in videos:
            writer.add(v)
    assert writer.num_videos == 5 and writer.num_frames == sum(len(v) for v in videos)
    names = [p.name for p in shard_files(tmp_path / "s")]
    assert names == ["shard_0001.hdf5", "shard_0002.hdf5", "shard_0003.hdf5"]
    assert [p.name for p in writer.shards] == names
    store = HDF5Videos(tmp_path / "s")
    assert len(store) == 5
    assert [(p.name, k) for p, k in map(store.locate, range(5))] == [
        ("shard_0001.hdf5", 0),
        ("shard_0001.hdf5", 1),
        ("shard_0002.hdf5", 0),
        ("shard_0002.hdf5", 1),
        ("shard_0003.hdf5", 0),
    ]
    for i, video in enumerate(videos):
        np.testing.assert_array_equal(store.read(i), video)
    single = HDF5Videos(tmp_path / "s" / "shard_0002.hdf5")  # one file works too
    assert len(single) == 2
    np.testing.assert_array_equal(single.read(1), videos[3])


def test_partial_reads(tmp_path):
    video = random_videos(1, seed=2)[0]
    video = np.concatenate([video, video])  # >= 6 frames
    write_shards([video], tmp_path / "p")
    store = HDF5Videos(tmp_path / "p")
    np.testing.assert_array_equal(store.read(0, 2, 6, 2), video[2:6:2])
    np.testing.assert_array_equal(store.read(0, start=1), video[1:])
    np.testing.assert_array_equal(store.read(0, -3), video[-3:])
    np.testing.assert_array_equal(store.read(-1, 0, None, 3), video[::3])
    with pytest.raises(VideoError, match=r"shard_0001\.hdf5.*selects none"):
        store.read(0, 5, 5)
    with pytest.raises(ValueError, match="step"):
        store.read(0, step=0)


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        HDF5Videos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="empty.*no .hdf5"):
        HDF5Videos(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "shard_0001.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(VideoError, match=r"shard_0001\.hdf5.*HDF5"):
        HDF5Videos(tmp_path / "junk")
    write_shards(random_videos(2), tmp_path / "ok")
    store = HDF5Videos(tmp_path / "ok")
    with pytest.raises(IndexError, match="index 2 out of range"):
        store.read(2)
    with pytest.raises(IndexError):
        store.num_frames(-3)


def test_wrong_frame_shape_names_file_and_key(tmp_path):
    path = tmp_path / "bad" / "shard_0001.hdf5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f.create_group("videos")
        f.create_group("len").create_dataset("0", data=2)
        f.create_dataset("0/0", data=np.zeros((4, 4, 3), np.uint8))
        f.create_dataset("0/1", data=np.zeros((4, 5, 3), np.uint8))
    store = HDF5Videos(path.parent)
    np.testing.assert_array_equal(store.read(0, 0, 1), np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(VideoError, match=r"shard_0001\.hdf5: '0/1'.*\(4, 5, 3\)"):
        store.read(0)
    store.close()
    with h5py.File(path, "a") as f:
        f["len/0"][()] = 3
    with pytest.raises(VideoError, match=r"shard_0001\.hdf5.*'0/2' missing"):
        HDF5Videos(path).read(0, start=2)


def test_writer_refuses_existing_shards_and_cleans_up_on_error(tmp_path):
    write_shards(random_videos(2), tmp_path / "t")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ShardWriter(tmp_path / "t")
    videos = random_videos(3, seed=5)
    with pytest.raises(RuntimeError, match="boom"), ShardWriter(tmp_path / "u", videos_per_shard=2) as writer:
        for v in videos:
            writer.add(v)
        raise RuntimeError("boom")
    # the full first shard is kept, the unfinished second one leaves nothing behind
    assert [p.name for p in (tmp_path / "u").iterdir()] == ["shard_0001.hdf5"]
    with pytest.raises(VideoError, match="video 0 for"):
        write_shards([np.zeros((2, 4, 4), np.float32)], tmp_path / "v")
    assert list((tmp_path / "v").iterdir()) == []
    assert write_shards(videos, tmp_path / "t", overwrite=True) == 3
    assert len(HDF5Videos(tmp_path / "t")) == 3


def test_pickle_drops_handles(tmp_path):
    videos = random_videos(3)
    write_shards(videos, tmp_path / "w")
    store = HDF5Videos(tmp_path / "w")
    store.read(0)  # opens a handle in this process
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read(2), videos[2])
    store.close()
    np.testing.assert_array_equal(store.read(1), videos[1])  # reopens lazily


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_dataloader_workers(tmp_path, context):
    videos = random_videos(6, seed=3)
    videos = [v[:3] for v in videos]  # equal lengths so the default collate can stack
    write_shards(videos, tmp_path / "d", videos_per_shard=4)
    store = HDF5Videos(tmp_path / "d")
    store.read(5)  # the parent holds an open handle before the workers start
    loader = torch.utils.data.DataLoader(store, batch_size=2, num_workers=2, multiprocessing_context=context)
    batches = list(loader)
    got = torch.cat(batches).numpy()
    np.testing.assert_array_equal(got, np.stack(videos))
