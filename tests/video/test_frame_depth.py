"""Frame bit depths: 16-bit PNG frames are scaled to 8 bits (never clipped), other wide data is refused."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from videxp.video import VideoError, read_image, read_video, scale_16_to_8


def write_png16(path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one): uint16 [H, W, 3], big-endian samples, filter 0 rows."""
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # bit depth 16, colour type 2 (RGB)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def wide_frames(t: int = 3, size: int = 8) -> np.ndarray:
    """uint16 [T, H, W, 3] spanning the whole 16-bit range (values far above 255)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 65536, (t, size, size, 3), dtype=np.uint16)


def test_scaling_rule_hits_the_ends_and_the_exact_levels():
    v = np.array([0, 128, 129, 257, 65535, 257 * 200, 65535 - 128], np.uint16)
    assert scale_16_to_8(v).tolist() == [0, 0, 1, 1, 255, 200, 255]
    assert np.array_equal(scale_16_to_8(v), np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8))


def test_16bit_rgb_png_folder_is_scaled_not_clipped(tmp_path):
    wide = wide_frames()
    folder = tmp_path / "clip16"
    folder.mkdir()
    for t, frame in enumerate(wide):
        write_png16(folder / f"{t}.png", frame)
    video = read_video(folder)
    assert video.dtype == np.uint8 and video.shape == wide.shape
    assert np.array_equal(video, scale_16_to_8(wide))
    assert video.max() < 255 or (wide >= 65535 - 128).any()  # not saturated by clipping
    assert np.array_equal(read_image(folder / "0.png"), scale_16_to_8(wide[0]))


def test_16bit_grayscale_png_is_scaled(tmp_path):
    gray = wide_frames(1)[0, ..., 0]  # [H, W] uint16
    Image.fromarray(gray).save(tmp_path / "g.png")  # Pillow writes I;16 as a 16-bit grayscale PNG
    frame = read_image(tmp_path / "g.png")
    assert np.array_equal(frame, np.repeat(scale_16_to_8(gray)[..., None], 3, axis=-1))


def test_16bit_npy_is_refused_with_the_conversion(tmp_path):
    np.save(tmp_path / "v.npy", wide_frames())
    with pytest.raises(VideoError, match=r"v\.npy: expected dtype uint8, got uint16; scale .*scale_16_to_8"):
        read_video(tmp_path / "v.npy")


def test_wider_than_8bit_non_png_image_is_refused(tmp_path):
    path = tmp_path / "0.png"  # a 32-bit integer TIFF behind a frame's name: no rule to scale it
    Image.fromarray(np.full((4, 4), 70000, np.int32), mode="I").save(path, format="TIFF")
    with pytest.raises(VideoError, match=r"0\.png: a I image \(more than 8 bits.*8-bit or 16-bit PNG"):
        read_image(path)
    with pytest.raises(VideoError, match=r"0\.png: a I image"):
        read_video(tmp_path)
