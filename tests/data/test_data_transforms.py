"""Clip transforms: resize modes and shapes, PIL equivalence, luma, one augmentation draw per clip."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from videxp.data.transforms import ClipTransform, cover_size

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

T, H, W = 3, 240, 320  # UCF101/HMDB51 geometry


def _random_clip(t: int = T, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)  # [T, H, W, 3]


def _gradient_clip(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Horizontal ramp 0..255 in R, vertical ramp in G: positions are readable from values."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)  # [H, W]
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)  # [H, W]
    frame = np.stack([x, y, np.full_like(x, 128)], -1).round().astype(np.uint8)  # [H, W, 3]
    return np.repeat(frame[None], t, 0)  # [T, H, W, 3]


@pytest.mark.parametrize("size", [128, 64])
@pytest.mark.parametrize("mode", ["squash", "center_crop", "random_crop"])
def test_output_shapes(mode, size):
    tf = ClipTransform(size, resize_mode=mode)
    out = tf(_random_clip(), rng=np.random.default_rng(0))
    assert out.shape == (T, size, size, 3) and out.dtype == np.uint8


def test_rectangular_size_and_none_mode():
    out = ClipTransform((96, 128), resize_mode="center_crop")(_random_clip())
    assert out.shape == (T, 96, 128, 3)
    clip = _random_clip()
    assert np.array_equal(ClipTransform(None, resize_mode="none")(clip), clip)
    assert np.array_equal(ClipTransform((H, W), resize_mode="none")(clip), clip)
    with pytest.raises(ValueError, match="resize_mode 'none'"):
        ClipTransform(128, resize_mode="none")(clip)


def test_cover_size_matches_torchvision_short_side():
    assert cover_size(240, 320, 128, 128) == (128, 170)  # int(128 * 320 / 240)
    assert cover_size(120, 160, 64, 64) == (64, 85)  # MCVD's 64 x 85
    assert cover_size(320, 480, 128, 128) == (128, 192)
    assert cover_size(480, 640, 480, 640) == (480, 640)


def test_center_crop_takes_the_centre():
    clip = _gradient_clip()
    # short side already 240: no resampling, the crop is the middle 240 columns
    out = ClipTransform(240, resize_mode="center_crop")(clip)
    assert np.array_equal(out, clip[:, :, 40:280])
    # resized to 128 x 170 then the middle 128 of 170 columns (offset 21), as PIL + torchvision CenterCrop
    out = ClipTransform(128, resize_mode="center_crop", interpolation="bilinear")(clip)
    ref = np.asarray(Image.fromarray(clip[0]).resize((170, 128), Image.Resampling.BILINEAR))[:, 21:149]
    assert np.array_equal(out[0], ref)
    # the crop is symmetric about the image centre: the ramp's left and right ends mirror each other
    r = out[0, :, :, 0].astype(float)
    assert abs(r[:, 0].mean() + r[:, -1].mean() - 255) <= 2
    assert r[:, 0].mean() > 30  # the left quarter-ish was cut away (full ramp would start at 0)


def test_squash_keeps_whole_frame():
    clip = _gradient_clip()
    out = ClipTransform(64, resize_mode="squash", interpolation="bicubic")(clip)
    ref = np.asarray(Image.fromarray(clip[0]).resize((64, 64), Image.Resampling.BICUBIC))
    assert np.array_equal(out[0], ref)
    r, g = out[0, :, :, 0].astype(int), out[0, :, :, 1].astype(int)
    assert r[:, 0].max() <= 3 and r[:, -1].min() >= 252  # whole width kept: ramp ends at both edges
    assert g[0].max() <= 3 and g[-1].min() >= 252  # whole height kept


@pytest.mark.parametrize("interp", ["nearest", "bilinear", "bicubic", "area", "lanczos"])
def test_interpolations_equal_pil_per_frame(interp):
    filters = {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "area": Image.Resampling.BOX,
        "lanczos": Image.Resampling.LANCZOS,
    }
    clip = _random_clip()
    out = ClipTransform((64, 80), resize_mode="squash", interpolation=interp)(clip)
    for t in range(T):
        ref = np.asarray(Image.fromarray(clip[t]).resize((80, 64), filters[interp]))
        assert np.array_equal(out[t], ref)


def test_random_crop_once_per_clip_and_seeded():
    frame = _random_clip(t=1)
    clip = np.repeat(frame, 4, 0)  # identical frames
    tf = ClipTransform(128, resize_mode="random_crop", interpolation="bilinear")
    outs = [tf(clip, rng=np.random.default_rng(s)) for s in range(8)]
    for out in outs:
        assert all(np.array_equal(out[t], out[0]) for t in range(4))
    assert np.array_equal(tf(clip, rng=np.random.default_rng(3)), outs[3])
    assert len({o.tobytes() for o in outs}) > 1
    with pytest.raises(ValueError, match="rng"):
        tf(clip)


def test_channels_1_equals_pil_luma():
    clip = _random_clip(h=48, w=64)
    out = ClipTransform(None, resize_mode="none", channels=1)(clip)
    assert out.shape == (T, 48, 64, 1)
    for t in range(T):
        assert np.array_equal(out[t, :, :, 0], np.asarray(Image.fromarray(clip[t]).convert("L")))
    gray = np.repeat(clip[..., :1], 3, -1)  # grayscale content stored as 3 equal channels
    assert np.array_equal(ClipTransform(None, resize_mode="none", channels=1)(gray), gray[..., :1])
    assert np.array_equal(ClipTransform(None, resize_mode="none")(gray), gray)


def test_augmentation_identical_across_frames_and_both_flips_occur():
    import albumentations as A

    tf = ClipTransform(
        64,
        resize_mode="squash",
        augment=[A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(p=1.0)],
    )
    clip = np.repeat(_gradient_clip(t=1), 6, 0)  # [6, H, W, 3], identical frames
    flipped = []
    for seed in range(24):
        out = tf(clip, rng=np.random.default_rng(seed))
        assert out.shape == (6, 64, 64, 3) and out.dtype == np.uint8
        assert all(np.array_equal(out[t], out[0]) for t in range(6)), f"frames differ for seed {seed}"
        r = out[0, :, :, 0].astype(float)
        flipped.append(r[:, :8].mean() > r[:, -8:].mean())  # the R ramp runs right-to-left when flipped
        assert np.array_equal(tf(clip, rng=np.random.default_rng(seed)), out)  # (seed) reproduces
    assert any(flipped) and not all(flipped)


def test_errors_name_what_was_received():
    tf = ClipTransform(64)
    with pytest.raises(TypeError, match="float32"):
        tf(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(8, 8, 3\)"):
        tf(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 1\)"):
        tf(np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="interpolation"):
        ClipTransform(64, interpolation="cubic")
    with pytest.raises(ValueError, match="resize_mode"):
        ClipTransform(64, resize_mode="pad")
    with pytest.raises(ValueError, match="needs a size"):
        ClipTransform(None, resize_mode="squash")
    with pytest.raises(TypeError, match="albumentations"):
        ClipTransform(64, augment=[{"_target_": "albumentations.HorizontalFlip"}])


def test_settings_json_ready():
    import albumentations as A

    s = ClipTransform(128, "center_crop", "lanczos", channels=1, augment=[A.HorizontalFlip(p=0.5)]).settings()
    s = json.loads(json.dumps(s))
    assert s["size"] == [128, 128] and s["resize_mode"] == "center_crop" and s["interpolation"] == "lanczos"
    assert s["channels"] == 1 and s["augment"][0]["__class_fullname__"] == "HorizontalFlip"


def test_center_crop_matches_torchvision_antialiased_resize():
    """LARP/TATS geometry: torchvision Resize(128, antialias=True) + CenterCrop(128), equal up to +-1."""
    import torch
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    small = _random_clip(t=1, h=24, w=32)[0]
    frame = np.asarray(Image.fromarray(small).resize((W, H), Image.Resampling.BICUBIC))  # smooth 240 x 320
    ours = ClipTransform(128, "center_crop", "bilinear")(frame[None])[0].astype(int)
    t = torch.from_numpy(frame.copy()).permute(2, 0, 1)  # [3, H, W] uint8
    ref = CenterCrop(128)(Resize(128, InterpolationMode.BILINEAR, antialias=True)(t)).permute(1, 2, 0).numpy()
    assert np.abs(ours - ref.astype(int)).max() <= 1
