"""LARP token cache: cached ids are the tokenizer's of the same windows (both views), the same loss as pixels,
reruns, resumes, unreadable videos, refused random transforms, the module's options and data module."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from conftest import compose_cfg, fail_reading
from hydra.utils import instantiate
from torch.utils.data import default_collate

from videxp.data.clips import ClipSampler
from videxp.data.datamodule import VideoDataModule
from videxp.data.transforms import ClipTransform
from videxp.errors import ConfigError
from videxp.models.larp.module import LARPModule
from videxp.models.larp.token_cache import (
    TokenClipDataset,
    TokenDataModule,
    id_dtype,
    plan_windows,
    read_manifest,
    write_token_cache,
)
from videxp.video import to_float

# 8-frame moving-shapes videos, 4-frame clips (the tiny tokenizer's frame_num): 5 starts per video
DATA = [
    "dataset.image_size=16",
    "dataset.video_length=4",
    "dataset.source.video_length=8",
    "dataset.batch_size=2",
    "dataset.source.num_videos={train: 4, val: 3, test: 2}",
    "dataset.source.sprite_size=[3,6]",
    "dataset.clips.eval_mode=fixed",  # seeded starts: the evaluation windows are not all at frame 0
]
FP = {"frame_prediction": True, "cond_frames": 2}


def shapes(tmp_path, *extra: str) -> VideoDataModule:
    return instantiate(compose_cfg("train", [*DATA, *extra], tmp_path).dataset)


@pytest.fixture(scope="module")
def fp_module() -> LARPModule:
    """A tiny frame-prediction LARP in eval mode (no dropout: losses are comparable)."""
    return LARPModule(size="tiny", ar=FP).eval()


def pixel_windows(dm: VideoDataModule, split: str, video: int, frames: np.ndarray) -> torch.Tensor:
    """The pixel path's clips of `video` at source frames `frames` [W, F]: [W, F, C, H, W] in [-1, 1]."""
    source, transform = dm.source(split=split), dm.clip_transform(split)
    return to_float(np.stack([transform(source.read(video, f)) for f in frames]))


def test_cached_windows_hold_the_tokenizer_ids_of_both_views(tmp_path, fp_module):
    m, dm = fp_module, shapes(tmp_path)
    out = write_token_cache(dm, "train", m, tmp_path / "train.h5", flip=True, progress=False)
    assert (out["status"], out["written"], out["num_videos"], out["num_windows"], out["views"]) == (
        "written", 4, 4, 20, 2,
    )  # fmt: skip
    assert out["num_items"] == 4 and out["failed"] == [] and out["too_short"] == []
    differ = False
    with h5py.File(tmp_path / "train.h5", "r") as f:
        for v in range(4):
            g = f["videos"][f"{v:06d}"]
            frames = g["frames"][()]  # [W, 4]: every start the random sampler may draw
            assert np.array_equal(frames, np.arange(5)[:, None] + np.arange(4))
            assert (
                g["ids"].dtype == np.uint8
                and g["ids"].shape == (5, 2, 16)
                and g["cond_ids"].shape == (5, 2, 16)
            )
            assert g.attrs["video_id"] == f"train_{v:06d}" and g.attrs["complete"]
            video = pixel_windows(dm, "train", v, frames)  # [5, 4, 3, 16, 16]
            for view, x in enumerate((video, video.flip(-1))):  # unflipped, mirrored left-right
                clip = m.clip(x)  # [5, 3, 4, 16, 16]
                assert torch.equal(torch.from_numpy(g["ids"][:, view]).long(), m.tokens(clip))
                cond = m.condition(clip)  # [5, 17]: observed ids + separator
                assert torch.equal(torch.from_numpy(g["cond_ids"][:, view]).long(), cond[:, :-1])
            differ |= not np.array_equal(g["ids"][:, 0], g["ids"][:, 1])
    assert differ  # the flipped view is another clip
    settings = read_manifest(tmp_path / "train.h5")["settings"]
    assert settings["windows"]["flip"] and settings["windows"]["rule"] == "train"
    assert (
        settings["cond_frames"] == 2
        and settings["dtype"] == "uint8"
        and settings["tokenizer"]["deterministic"]
    )
    # K windows per video: starts spread evenly (ClipSampler's uniform rule), at most every start
    for k, starts in ((1, [2]), (2, [0, 4]), (9, [0, 1, 2, 3, 4])):
        write_token_cache(dm, "train", m, tmp_path / f"k{k}.h5", windows_per_video=k, progress=False)
        with h5py.File(tmp_path / f"k{k}.h5", "r") as f:
            assert f["videos/000003/frames"][:, 0].tolist() == starts
    with pytest.raises(ValueError, match="clip mode 'first' plans its own windows"):
        plan_windows(ClipSampler(4, mode="first"), [8, 8], windows_per_video=2)
    plan = plan_windows(ClipSampler(4, mode="all"), [8, 9, 3])  # 3 frames: too short, skipped
    assert plan.items == [(0, 0), (0, 1), (1, 0), (1, 1)] and plan.starts == {0: [0, 4], 1: [0, 4]}
    assert plan.skipped[0][0] == 2
    assert (id_dtype(64), id_dtype(256), id_dtype(257), id_dtype(8192), id_dtype(70_000)) == (
        "uint8", "uint8", "uint16", "uint16", "int32",
    )  # fmt: skip


@pytest.mark.parametrize("frame_prediction", [True, False])
def test_cached_loss_equals_pixel_loss(tmp_path, fp_module, frame_prediction):
    m = fp_module if frame_prediction else LARPModule(size="tiny").eval()
    dm = shapes(tmp_path)
    write_token_cache(dm, "val", m, tmp_path / "val.h5", flip=True, progress=False)  # no flip for val
    cached, pixels = TokenClipDataset(tmp_path / "val.h5"), dm.dataset("val")
    assert len(cached) == len(pixels) == 3 and cached.views == 1 and cached.conditioned == frame_prediction
    starts = set()
    with torch.no_grad():
        for i in range(3):
            a, b = cached[i], pixels[i]
            assert (a["video_id"], a["label"], a["index"], a["flipped"]) == (b["video_id"], -1, i, False)
            assert torch.equal(a["frames"], b["frames"][:4]) and a["ids"].dtype == torch.int64
            starts.add(int(a["frames"][0]))
            loss_cached = m.ar_loss(default_collate([a]))
            loss_pixels = m.ar_loss(default_collate([{"video": b["video"], "label": b["label"]}]))
            assert torch.isfinite(loss_cached) and torch.equal(loss_cached, loss_pixels)
        batch = default_collate([cached[i] for i in range(3)])  # [3, N]: a batch of cached items
        video = default_collate([{"video": pixels[i]["video"], "label": -1} for i in range(3)])
        torch.testing.assert_close(m.ar_loss(batch), m.ar_loss(video), rtol=1e-6, atol=1e-6)
    assert len(starts) > 1  # eval_mode fixed: the pixel sampler's seeded starts, not the first window


def test_training_items_draw_windows_and_views(tmp_path, fp_module):
    dm = shapes(tmp_path)
    write_token_cache(dm, "train", fp_module, tmp_path / "train.h5", flip=True, progress=False)
    ds = TokenClipDataset(tmp_path / "train.h5", seed=3)
    assert len(ds) == 4  # one item per video, as the pixel path's random windows
    seen = {(int(ds[(1, d)]["frames"][0]), ds[(1, d)]["flipped"]) for d in range(60)}
    assert seen == {(s, f) for s in range(5) for f in (False, True)}  # every window, both views
    a, b = ds[(2, 17)], ds[(2, 17)]  # a numbered draw (ResumableShuffle) is reproducible
    assert (
        torch.equal(a["ids"], b["ids"])
        and torch.equal(a["frames"], b["frames"])
        and a["flipped"] == b["flipped"]
    )
    torch.manual_seed(0)
    first = [ds[0]["frames"][0].item() for _ in range(8)]
    torch.manual_seed(0)
    assert [ds[0]["frames"][0].item() for _ in range(8)] == first  # plain keys: torch's generator


def test_rerun_is_cached_and_other_settings_raise(tmp_path, fp_module, monkeypatch):
    dm, path = shapes(tmp_path), tmp_path / "val.h5"
    write_token_cache(dm, "val", fp_module, path, progress=False)
    before = path.stat().st_mtime_ns
    calls = []
    tokens = LARPModule.tokens
    monkeypatch.setattr(LARPModule, "tokens", lambda self, clip: calls.append(1) or tokens(self, clip))
    again = write_token_cache(dm, "val", fp_module, path, progress=False)
    assert (again["status"], again["written"], calls) == (
        "cached",
        0,
        [],
    ) and path.stat().st_mtime_ns == before
    weight = fp_module.tokenizer.final_layer.linear.bias
    with torch.no_grad():
        weight.add_(1.0)
    try:
        with pytest.raises(ValueError, match=r"token cache made with tokenizer\.fingerprint="):
            write_token_cache(dm, "val", fp_module, path, progress=False)
    finally:
        with torch.no_grad():
            weight.sub_(1.0)
    with pytest.raises(ValueError, match=r"cond_frames=2, this run has cond_frames=None"):
        write_token_cache(dm, "val", LARPModule(size="tiny"), path, progress=False)
    with pytest.raises(ValueError, match=r"windows\.mode='fixed', this run has windows\.mode='first'"):
        write_token_cache(
            shapes(tmp_path, "dataset.clips.eval_mode=first"), "val", fp_module, path, progress=False
        )
    write_token_cache(dm, "train", fp_module, tmp_path / "train.h5", progress=False)
    calls.clear()
    with pytest.raises(ValueError, match=r"windows\.flip=False, this run has windows\.flip=True"):
        write_token_cache(dm, "train", fp_module, tmp_path / "train.h5", flip=True, progress=False)
    assert path.stat().st_mtime_ns == before and calls == []  # settings are checked before any encoding


def test_interrupted_build_resumes(tmp_path, fp_module, monkeypatch):
    dm, path = shapes(tmp_path), tmp_path / "train.h5"
    calls = []
    tokens = LARPModule.tokens

    def interrupted(self, clip):  # 4 calls per video (2 views x ids, condition): dies in video 1
        if len(calls) == 5:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(1)
        return tokens(self, clip)

    monkeypatch.setattr(LARPModule, "tokens", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_token_cache(dm, "train", fp_module, path, flip=True, progress=False)
    partial = tmp_path / "train.h5.partial"
    assert not path.exists() and partial.is_file()
    with h5py.File(partial, "a") as f:
        assert sorted(f["videos"]) == ["000000"] and f["videos/000000"].attrs["complete"]
        f["videos"].create_group("000001")  # as if killed before the video was marked complete
    calls.clear()
    monkeypatch.setattr(LARPModule, "tokens", lambda self, clip: calls.append(1) or tokens(self, clip))
    out = write_token_cache(dm, "train", fp_module, path, flip=True, progress=False)
    assert (out["status"], out["written"], out["resumed"], len(calls)) == ("written", 3, 1, 12)
    assert not partial.exists()
    write_token_cache(dm, "train", fp_module, tmp_path / "fresh.h5", flip=True, progress=False)
    with h5py.File(path, "r") as a, h5py.File(tmp_path / "fresh.h5", "r") as b:
        for v in range(4):
            for key in ("frames", "ids", "cond_ids"):
                assert np.array_equal(a[f"videos/{v:06d}/{key}"][()], b[f"videos/{v:06d}/{key}"][()])
        assert np.array_equal(a["items"][()], b["items"][()])


def test_unreadable_video_is_listed_and_skipped(tmp_path, fp_module, caplog):
    dm = shapes(tmp_path)
    fail_reading(dm, 1)
    out = write_token_cache(dm, "val", fp_module, tmp_path / "val.h5", progress=False)
    assert out["num_videos"] == 2 and out["num_items"] == 2 and len(out["failed"]) == 1
    assert out["failed"][0]["video_id"] == "val_000001" and "corrupt stand-in" in out["failed"][0]["reason"]
    assert "cannot read video 1" in caplog.text
    ds = TokenClipDataset(tmp_path / "val.h5")
    assert [ds[i]["video_id"] for i in range(len(ds))] == ["val_000000", "val_000002"]
    assert read_manifest(tmp_path / "val.h5")["summary"]["failed"] == out["failed"]


def test_random_transforms_are_refused_and_grey_is_taken(tmp_path, fp_module):
    crop = shapes(tmp_path, "dataset.transform.resize_mode=random_crop")
    with pytest.raises(ValueError, match="random_crop"):
        write_token_cache(crop, "val", fp_module, tmp_path / "a.h5", progress=False)
    flip = "[{_target_: albumentations.HorizontalFlip, p: 0.5}]"
    aug = shapes(tmp_path, f"+dataset.transform.augment={flip}")
    with pytest.raises(ValueError, match=r"transform is random.*token_cache_options\.flip=true"):
        write_token_cache(aug, "train", fp_module, tmp_path / "b.h5", progress=False)
    assert not list(tmp_path.glob("*.h5*"))
    # the cache's flip is the augmentation videxp offers: HorizontalFlip on the transformed frames
    frames = aug.source(split="train").read(0, np.arange(4))  # [4, H, W, 3] uint8
    always = ClipTransform(16, augment=[aug.clip_transform("train").augment[0].__class__(p=1.0)])
    assert np.array_equal(always(frames, np.random.default_rng(0)), frames[:, :, ::-1])
    # grey frames: LARPModule.clip repeats the channel, so the cache takes them
    grey = shapes(tmp_path, "dataset.channels=1")
    write_token_cache(grey, "val", fp_module, tmp_path / "grey.h5", progress=False)
    item = TokenClipDataset(tmp_path / "grey.h5")[0]
    video = pixel_windows(grey, "val", 0, item["frames"][None].numpy())  # [1, 4, 1, 16, 16]
    assert torch.equal(item["ids"], fp_module.tokens(fp_module.clip(video))[0])


def test_module_options_and_data_module(tmp_path, fp_module):
    with pytest.raises(ConfigError, match="stage=tokenizer trains on pixels"):
        LARPModule(size="tiny", stage="tokenizer", token_cache=str(tmp_path))
    with pytest.raises(ConfigError, match="windows_per_video must be null or >= 1"):
        LARPModule(size="tiny", token_cache=str(tmp_path), token_cache_options={"windows_per_video": 0})
    with pytest.raises(ValueError, match="model.token_cache_options: unknown keys"):
        LARPModule(size="tiny", token_cache_options={"windows": 2})
    dm = shapes(tmp_path)
    assert fp_module.prepare_datamodule(dm) is dm  # token_cache null: pixels
    fp_module.token_cache = str(tmp_path / "cache")
    fp_module.token_cache_options = {**fp_module.token_cache_options, "flip": True}
    try:
        tokens = fp_module.prepare_datamodule(dm)
    finally:
        fp_module.token_cache = None
    assert isinstance(tokens, TokenDataModule) and tokens.options["flip"]
    tokens.options["progress"] = False
    tokens.setup("fit")
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"train.h5", "val.h5"}
    batch = next(iter(tokens.train_dataloader()))
    assert batch["ids"].shape == batch["cond_ids"].shape == (2, 16) and batch["ids"].dtype == torch.int64
    val = next(iter(tokens.val_dataloader()))
    assert val["video_id"] == ["val_000000", "val_000001"] and not val["flipped"].any()
    assert tokens.video_dataset("val") is dm.dataset("val")
    again = TokenDataModule(dm, tmp_path / "cache", fp_module, flip=True, progress=False)
    again.setup("fit")
    assert {s["status"] for s in again.summaries.values()} == {"cached"}
