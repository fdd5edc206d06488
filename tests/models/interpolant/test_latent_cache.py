"""Latent cache: latents equal direct encoding, clip windows equal the pixel path's, reruns, resumes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_cfg, fail_reading
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader

from videxp.data.clips import ClipSampler
from videxp.data.datamodule import ClipDataset, VideoDataModule
from videxp.data.standins import write_kth
from videxp.models.interpolant.autoencoder import LatentAutoencoder, Quantized
from videxp.models.interpolant.latent_cache import (
    LatentClipDataset,
    LatentDataModule,
    read_manifest,
    state_fingerprint,
    write_latent_cache,
)


class PoolEncoder(LatentAutoencoder):
    """Stand-in autoencoder: average-pool x4 then a seeded 1x1 conv to 4 channels; `fail_at` raises there."""

    latent_channels = 4
    downsample = 4
    num_codes = 8

    def __init__(self, seed: int = 0):
        super().__init__()
        self.proj = nn.Conv2d(3, self.latent_channels, 1)
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed)
            self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=g))
            self.proj.bias.copy_(torch.randn(self.proj.bias.shape, generator=g))
        self.calls = 0
        self.fail_at: int | None = None  # encode call (0-based) that raises: a simulated interruption

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return self.proj(F.avg_pool2d(x, self.downsample))  # [B, 4, H/4, W/4]

    def quantize(self, z: torch.Tensor) -> Quantized:
        indices = torch.zeros(z.shape[0], *z.shape[2:], dtype=torch.long)  # [B, h, w]
        return Quantized(z_q=z, indices=indices, loss=z.sum() * 0)

    def decode_quantized(self, z_q: torch.Tensor) -> torch.Tensor:
        return F.interpolate(z_q[:, :3], scale_factor=self.downsample)


def shapes_module(tmp_path, *extra: str) -> VideoDataModule:
    """The TINY moving_shapes data module (16x16, 8-frame videos, 4 val videos, 64 train)."""
    return instantiate(compose_cfg("train", [*TINY, *extra], tmp_path).dataset)


def encode_direct(encoder: PoolEncoder, video: torch.Tensor) -> torch.Tensor:
    """[T, 3, H, W] in [-1, 1] -> [T, 4, H/4, W/4] in one batch."""
    with torch.no_grad():
        return encoder.encode(video)


def test_cached_latents_equal_direct_encoding(tmp_path):
    dm = shapes_module(tmp_path)
    enc = PoolEncoder()
    out = write_latent_cache(dm, "val", enc, tmp_path / "val.h5", batch_frames=3, progress=False)
    assert out["status"] == "written" and (out["written"], out["resumed"]) == (4, 0)
    assert out["latent_shape"] == [4, 4, 4] and out["num_frames"] == 32 and out["failed"] == []
    assert enc.training  # mode restored
    pixels = dm.dataset("val")  # eval_mode first: whole videos
    with h5py.File(tmp_path / "val.h5", "r") as f:
        for i in range(4):
            ds = f["videos"][f"{i:06d}"]
            assert ds.dtype == np.float32 and ds.attrs["video_id"] == pixels[i]["video_id"]
            assert (ds.attrs["label"], ds.attrs["num_frames"], ds.attrs["source_index"]) == (-1, 8, i)
            torch.testing.assert_close(
                torch.from_numpy(ds[()]), encode_direct(enc, pixels[i]["video"]), atol=1e-6, rtol=0
            )
    settings = read_manifest(tmp_path / "val.h5")["settings"]
    assert settings["encoder"]["fingerprint"] == state_fingerprint(enc)
    assert settings["encoder"]["class"].endswith("PoolEncoder")
    assert settings["dataset"]["split"] == "val" and settings["transform"]["size"] == [16, 16]


def test_fixed_windows_equal_pixel_path(tmp_path, caplog):
    dm = shapes_module(tmp_path)
    enc = PoolEncoder()
    write_latent_cache(dm, "val", enc, tmp_path / "val.h5", progress=False)
    latent = LatentClipDataset(tmp_path / "val.h5", 3, stride=2, mode="fixed", seed=7)
    pixels = ClipDataset(
        dm.source(split="val"), ClipSampler(3, stride=2, mode="fixed", seed=7), dm.clip_transform("val")
    )
    assert len(latent) == len(pixels) == 4
    starts = set()
    for i in range(4):
        a, b = latent[i], pixels[i]
        assert a["video_id"] == b["video_id"] and a["index"] == b["index"] == i and a["label"] == -1
        assert torch.equal(a["frames"], b["frames"])
        assert a["latents"].shape == (3, 4, 4, 4) and a["latents"].dtype == torch.float32
        torch.testing.assert_close(a["latents"], encode_direct(enc, b["video"]), atol=1e-6, rtol=0)
        starts.add(int(a["frames"][0]))
    assert len(starts) > 1  # seeded starts differ between videos
    # random windows stay inside the video; too-long clips skip every video with an error
    rand = LatentClipDataset(tmp_path / "val.h5", 4, mode="random")
    frames = rand[0]["frames"]
    assert frames[-1] < 8 and torch.equal(frames - frames[0], torch.arange(4))
    with pytest.raises(ValueError, match="no clip of 9 latent frames"):
        LatentClipDataset(tmp_path / "val.h5", 9, mode="first")
    assert "skipped val_000000: 8 frames < 9 needed" in caplog.text
    # forked workers open their own handle (the parent's, opened above, is never used there)
    loader = DataLoader(latent, batch_size=2, num_workers=2)
    got = torch.cat([b["latents"] for b in loader])  # [4, 3, 4, 4, 4]
    torch.testing.assert_close(got, torch.stack([latent[i]["latents"] for i in range(4)]), atol=0, rtol=0)


def test_rerun_is_a_noop_and_other_encoder_raises(tmp_path):
    dm = shapes_module(tmp_path)
    path = tmp_path / "val.h5"
    write_latent_cache(dm, "val", PoolEncoder(), path, progress=False)
    before = path.stat().st_mtime_ns
    again = write_latent_cache(dm, "val", PoolEncoder(), path, progress=False)
    assert again["status"] == "cached" and again["written"] == 0 and path.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match=r"encoder\.fingerprint="):
        write_latent_cache(dm, "val", PoolEncoder(seed=1), path, progress=False)
    with pytest.raises(ValueError, match=r"dtype='float32', this run has dtype='float16'"):
        write_latent_cache(dm, "val", PoolEncoder(), path, dtype="float16", progress=False)
    other = shapes_module(tmp_path, "dataset.source.seed=3")
    with pytest.raises(ValueError, match=r"dataset\.source\.seed="):
        write_latent_cache(other, "val", PoolEncoder(), path, progress=False)
    assert path.stat().st_mtime_ns == before


def test_interrupted_write_resumes(tmp_path):
    dm = shapes_module(tmp_path)
    path = tmp_path / "val.h5"
    enc = PoolEncoder()
    enc.fail_at = 5  # 2 batches per video: videos 0 and 1 complete, video 2 half written
    with pytest.raises(KeyboardInterrupt):
        write_latent_cache(dm, "val", enc, path, batch_frames=4, progress=False)
    partial = tmp_path / "val.h5.partial"
    assert not path.exists() and partial.is_file()
    with h5py.File(partial, "r") as f:
        assert sorted(f["videos"]) == ["000000", "000001", "000002"]
        assert not f["videos/000002"].attrs.get("complete", False)
    enc.fail_at, enc.calls = None, 0
    out = write_latent_cache(dm, "val", enc, path, batch_frames=4, progress=False)
    assert (out["status"], out["written"], out["resumed"]) == ("written", 2, 2)
    assert enc.calls == 4 and not partial.exists()
    pixels = dm.dataset("val")
    with h5py.File(path, "r") as f:
        for i in range(4):
            expected = encode_direct(enc, pixels[i]["video"])
            cached = torch.from_numpy(f["videos"][f"{i:06d}"][()])
            torch.testing.assert_close(cached, expected, atol=1e-6, rtol=0)
    # a partial made by another encoder is discarded, not resumed
    other = tmp_path / "o.h5"
    enc.fail_at, enc.calls = 2, 0
    with pytest.raises(KeyboardInterrupt):
        write_latent_cache(dm, "val", enc, other, batch_frames=8, progress=False)
    out = write_latent_cache(dm, "val", PoolEncoder(seed=2), other, batch_frames=8, progress=False)
    assert (out["written"], out["resumed"]) == (4, 0)


def test_random_transforms_and_gray_channels_raise(tmp_path):
    enc = PoolEncoder()
    crop = shapes_module(tmp_path, "dataset.transform.resize_mode=random_crop")
    with pytest.raises(ValueError, match="random_crop"):
        write_latent_cache(crop, "val", enc, tmp_path / "a.h5", progress=False)
    flip = "[{_target_: albumentations.HorizontalFlip, p: 0.5}]"
    aug = shapes_module(tmp_path, f"+dataset.transform.augment={flip}")
    with pytest.raises(ValueError, match="transform is random.*augment"):
        write_latent_cache(aug, "train", enc, tmp_path / "b.h5", progress=False)
    gray = shapes_module(tmp_path, "dataset.channels=1")
    with pytest.raises(ValueError, match="channels=1"):
        write_latent_cache(gray, "val", enc, tmp_path / "c.h5", progress=False)
    assert not list(tmp_path.glob("*.h5*"))


def test_unreadable_video_is_reported_and_skipped(tmp_path, caplog):
    dm = shapes_module(tmp_path)
    fail_reading(dm, 1)
    out = write_latent_cache(dm, "val", PoolEncoder(), tmp_path / "val.h5", progress=False)
    assert out["num_videos"] == 3 and len(out["failed"]) == 1
    assert out["failed"][0]["video_id"] == "val_000001" and "corrupt stand-in" in out["failed"][0]["reason"]
    assert "cannot read video 1" in caplog.text
    ids = [LatentClipDataset(tmp_path / "val.h5", 8, mode="first")[i]["video_id"] for i in range(3)]
    assert ids == ["val_000000", "val_000002", "val_000003"]


def test_kth_stand_in_labels_and_windows(tmp_path):
    raw = write_kth(
        tmp_path / "kth", persons=(21,), actions=("boxing", "walking"), scenarios=(1,), frames=12,
        sequences_file=False,
    )  # fmt: skip
    cfg = compose_cfg(
        "train",
        [
            "dataset=kth",
            f"dataset.source.root={raw}",
            "dataset.image_size=16",
            "dataset.video_length=4",
            "dataset.num_workers=0",
        ],
        tmp_path,
    )
    dm = instantiate(cfg.dataset)
    enc = PoolEncoder()
    out = write_latent_cache(dm, "test", enc, tmp_path / "test.h5", progress=False)
    assert out["num_videos"] == 2 and out["num_frames"] == 24
    latent = LatentClipDataset(tmp_path / "test.h5", 4, stride=3, mode="fixed", seed=42)
    sampler = ClipSampler(4, stride=3, mode="fixed", seed=42)
    pixels = ClipDataset(dm.source(split="test"), sampler, dm.clip_transform("test"))
    for i in range(2):
        a, b = latent[i], pixels[i]
        assert (a["video_id"], a["label"]) == (b["video_id"], b["label"]) and b["label"] in (0, 5)
        assert torch.equal(a["frames"], b["frames"])
        torch.testing.assert_close(a["latents"], encode_direct(enc, b["video"]), atol=1e-6, rtol=0)


def test_latent_datamodule_loaders(tmp_path):
    dm = shapes_module(tmp_path)
    enc = PoolEncoder()
    latent = LatentDataModule(dm, tmp_path / "cache", enc, progress=False)
    latent.setup("fit")
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"train.h5", "val.h5"}
    assert latent.summaries["train"]["num_videos"] == 64
    batch = next(iter(latent.train_dataloader()))
    assert batch["latents"].shape == (2, 8, 4, 4, 4) and batch["frames"].shape == (2, 8)
    val = next(iter(latent.val_dataloader()))
    assert val["video_id"] == ["val_000000", "val_000001"]  # eval_mode first, in order
    expected = encode_direct(enc, dm.dataset("val")[0]["video"])
    torch.testing.assert_close(val["latents"][0], expected, atol=1e-6, rtol=0)
    again = LatentDataModule(dm, tmp_path / "cache", enc, progress=False)
    again.setup("fit")
    assert {s["status"] for s in again.summaries.values()} == {"cached"}
    assert len(again.dataset("train")) == 64 and len(again.dataset("val")) == 4
