"""HDF5 shards under attack: a flipped pixel byte or a corrupt compressed chunk is named, not read."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
from conftest import compose_cfg
from hydra.utils import instantiate

from videxp.data import hdf5
from videxp.data.hdf5 import CHECKSUMS, HDF5Videos, write_shards
from videxp.data.moving_shapes import MovingShapes, materialize
from videxp.data.sources import PreparedSource
from videxp.errors import CorruptDataError
from videxp.video import VideoError


def videos(n: int = 3, t: int = 4, size: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for _ in range(n)]


def _patch(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _flip_pixel_byte(shard, video: int, frame: int) -> int:
    """Flip one byte inside frame `frame` of `video` of an uncompressed shard; returns the byte's index."""
    with h5py.File(shard, "r") as h5:
        offset = h5[f"{video}/{frame}"].id.get_offset()
    with open(shard, "rb") as f:
        f.seek(offset + 5)
        old = f.read(1)[0]
    _patch(shard, offset + 5, bytes([old ^ 0xFF]))
    return 5


def test_flipped_pixel_byte_is_named_with_shard_and_video(tmp_path):
    data = videos()
    write_shards(data, tmp_path / "train", compress=False)
    shard = tmp_path / "train" / "shard_0001.hdf5"
    byte = _flip_pixel_byte(shard, video=1, frame=2)
    store = HDF5Videos(tmp_path / "train")
    np.testing.assert_array_equal(store[0], data[0])  # other videos still read
    with pytest.raises(
        CorruptDataError, match=r"shard_0001\.hdf5: video 1 .*frame 2 does not match its stored sha256"
    ):
        store.read(1)
    with pytest.raises(
        VideoError, match="verify_checksums=false"
    ):  # a VideoError: existing handlers catch it
        store.read(1, start=2, stop=3)
    np.testing.assert_array_equal(store.read(1, 0, 2), data[1][:2])  # the intact frames of that video
    unchecked = HDF5Videos(tmp_path / "train", verify_checksums=False).read(1)  # the skip option
    assert (unchecked != data[1]).sum() == 1 and unchecked[2].reshape(-1)[byte] == data[1][2].reshape(-1)[
        byte
    ] ^ 255


def test_corrupt_compressed_chunk_is_named_not_raw_h5py(tmp_path):
    flat = [np.full((4, 16, 16, 3), 10 * i, np.uint8) for i in range(3)]  # compressible: LZF is applied
    write_shards(flat, tmp_path / "train")
    shard = tmp_path / "train" / "shard_0001.hdf5"
    with h5py.File(shard, "r") as h5:
        info = h5["2/1"].id.get_chunk_info(0)
    assert info.filter_mask == 0 and info.size < 16 * 16 * 3  # a compressed chunk
    _patch(shard, info.byte_offset, b"\xff" * info.size)
    for verify in (True, False):
        store = HDF5Videos(shard, verify_checksums=verify)
        with pytest.raises(CorruptDataError, match=r"shard_0001\.hdf5: video 2 .*frame 1") as err:
            store.read(2)
        assert not str(err.value).startswith("Can't") and "re-create it" in str(err.value)


def test_prepared_source_names_the_video_id(tmp_path):
    write_shards(videos(), tmp_path / "test", compress=False)
    _flip_pixel_byte(tmp_path / "test" / "shard_0001.hdf5", video=0, frame=0)
    source = PreparedSource(tmp_path, "test", name="hdf5")
    with pytest.raises(CorruptDataError, match=r"video 0 .*video_id 'test/000000'"):
        source.read(0, np.arange(2))


def test_shards_without_checksums_still_read_with_one_warning(tmp_path, caplog):
    data = videos()
    write_shards(data, tmp_path / "old")
    shard = tmp_path / "old" / "shard_0001.hdf5"
    with h5py.File(shard, "r+") as h5:  # what a shard written before checksums looks like
        del h5.attrs[CHECKSUMS]
        for i in range(len(data)):
            del h5[str(i)].attrs["frame_sha256"]
    hdf5._warned_unverified.discard(str(shard))
    with caplog.at_level(logging.WARNING, logger="videxp.data.hdf5"):
        for _ in range(2):
            store = HDF5Videos(tmp_path / "old")
            for i in range(len(data)):
                np.testing.assert_array_equal(store[i], data[i])
    warnings = [r for r in caplog.records if "without checksums" in r.getMessage()]
    assert len(warnings) == 1 and str(shard) in warnings[0].getMessage()


def test_materialised_moving_shapes_carry_checksums_and_the_config_switch(tmp_path):
    source = MovingShapes(
        split="test", num_videos={"test": 2}, video_length=4, image_size=16, sprite_size=(3, 5)
    )
    materialize(source, tmp_path, splits=("test",))
    shard = tmp_path / "test" / "shard_0001.hdf5"
    with h5py.File(shard, "r") as h5:
        assert h5.attrs[CHECKSUMS] and h5["1"].attrs["frame_sha256"].shape == (4, 32)
    cfg = compose_cfg(
        "train",
        ["dataset=moving_shapes", f"dataset.source.root={tmp_path}", "dataset.source.verify_checksums=false"],
        tmp_path / "out",
    )
    made = instantiate(cfg.dataset.source)(
        split="test", num_videos={"test": 2}, video_length=4, image_size=16, sprite_size=(3, 5)
    )
    assert made.verify_checksums is False and len(made) == 2
