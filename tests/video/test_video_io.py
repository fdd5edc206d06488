"""Tests for videxp.video: conversions, validation, readers/writers per format, grids."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from videxp.utils.io import write_json
from videxp.video import (
    VideoError,
    check_video,
    ensure_rgb,
    make_grid,
    read_video,
    to_float,
    to_uint8,
    video_info,
    write_filmstrip,
    write_grid,
    write_video,
)


def smooth_video(t: int = 12, h: int = 48, w: int = 64) -> np.ndarray:
    """A codec-friendly uint8 [T, H, W, 3] video: moving gradients."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [
        np.stack([(2 * x + 3 * i) % 256, (3 * y + i) % 256, (x + y + 5 * i) % 256], axis=-1) for i in range(t)
    ]
    return np.stack(frames).astype(np.uint8)  # [T, H, W, 3]


def few_colours_video(t: int = 10, h: int = 20, w: int = 24) -> np.ndarray:
    """A [T, H, W, 3] video with a handful of colours and identical consecutive frames."""
    v = np.zeros((t, h, w, 3), dtype=np.uint8)
    v[:, 2:6, 3:9] = [255, 0, 0]
    v[t // 2 :, 10:14, 4:12] = [0, 200, 100]  # frames 0..t/2-1 identical, then t/2.. identical
    v[:, -3:, -3:] = [17, 34, 51]
    return v


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- conversions


def test_to_float_to_uint8_inverse_on_all_values():
    values = np.arange(256, dtype=np.uint8)
    video = np.broadcast_to(values[None, :, None, None], (2, 256, 1, 3)).copy()  # [T, H, W, C]
    x = to_float(video)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 256, 1)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(to_uint8(x), video)


def test_to_float_layout_and_batch_dims():
    video = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 6, 3), dtype=np.uint8)  # [B, T, H, W, C]
    x = to_float(torch.from_numpy(video))
    assert x.shape == (2, 5, 3, 4, 6)  # [B, T, C, H, W]
    assert torch.allclose(x[1, 2, 0], torch.from_numpy(video[1, 2, :, :, 0]).float() / 127.5 - 1)
    np.testing.assert_array_equal(to_uint8(x), video)


def test_to_uint8_rounds_half_up_and_clamps():
    levels = torch.tensor([10.4, 10.5, 10.6, 254.7, -5.0, 300.0]) / 127.5 - 1
    x = levels.view(1, 1, 1, 6)  # [T, C, H, W]
    assert to_uint8(x).ravel().tolist() == [10, 11, 11, 255, 0, 255]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_to_uint8_rejects_non_finite(bad):
    x = torch.zeros(2, 3, 4, 4)
    x[1, 0, 2, 2] = bad
    with pytest.raises(VideoError, match="non-finite"):
        to_uint8(x)


def test_to_float_rejects_float_input():
    with pytest.raises(VideoError, match="uint8"):
        to_float(np.zeros((2, 4, 4, 3), dtype=np.float32))


def test_check_video_errors_name_the_source():
    with pytest.raises(VideoError, match="clip.npy.*uint8"):
        check_video(np.zeros((2, 4, 4, 3), dtype=np.float32), "clip.npy")
    with pytest.raises(VideoError, match="clip.npy.*4 dims"):
        check_video(np.zeros((4, 4, 3), dtype=np.uint8), "clip.npy")
    with pytest.raises(VideoError, match="clip.npy.*C = 3"):
        check_video(np.zeros((2, 4, 4, 4), dtype=np.uint8), "clip.npy")
    with pytest.raises(VideoError, match="clip.npy.*empty"):
        check_video(np.zeros((0, 4, 4, 3), dtype=np.uint8), "clip.npy")


def test_grayscale_is_replicated():
    gray = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)  # [T, H, W]
    for array in (gray, gray[..., None]):
        rgb = ensure_rgb(array)
        assert rgb.shape == (2, 3, 4, 3)
        assert (rgb == gray[..., None]).all()
    assert check_video(gray[..., None]).shape == (2, 3, 4, 3)


# ----------------------------------------------------------------------------- npy and png


def test_npy_round_trip_exact(tmp_path):
    video = smooth_video(5, 7, 9)
    write_video(tmp_path / "v.npy", video)
    np.testing.assert_array_equal(read_video(tmp_path / "v.npy"), video)
    assert video_info(tmp_path / "v.npy") == {"num_frames": 5, "height": 7, "width": 9}
    assert no_temp_files(tmp_path)


def test_npy_grayscale_thw_is_replicated(tmp_path):
    gray = smooth_video(3, 5, 6)[..., 0]  # [T, H, W]
    np.save(tmp_path / "g.npy", gray)
    out = read_video(tmp_path / "g.npy")
    assert out.shape == (3, 5, 6, 3) and (out == gray[..., None]).all()


def test_npy_wrong_dtype_or_shape_names_the_file(tmp_path):
    np.save(tmp_path / "float.npy", np.zeros((2, 4, 4, 3), dtype=np.float32))
    with pytest.raises(VideoError, match=r"float\.npy.*uint8"):
        read_video(tmp_path / "float.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(VideoError, match=r"flat\.npy.*4 dims"):
        read_video(tmp_path / "flat.npy")
    np.save(tmp_path / "chan.npy", np.zeros((2, 4, 4, 2), dtype=np.uint8))
    with pytest.raises(VideoError, match=r"chan\.npy"):
        read_video(tmp_path / "chan.npy")


def test_png_folder_round_trip_exact_and_replaced(tmp_path):
    video = smooth_video(4, 6, 8)
    folder = tmp_path / "frames"
    write_video(folder, video)
    assert sorted(p.name for p in folder.iterdir()) == [f"{j:06d}.png" for j in range(4)]
    np.testing.assert_array_equal(read_video(folder), video)
    assert video_info(folder) == {"num_frames": 4, "height": 6, "width": 8}
    write_video(folder, video[:2])  # an existing folder is replaced as a whole
    np.testing.assert_array_equal(read_video(folder), video[:2])
    assert no_temp_files(tmp_path)


def test_frame_folder_sorted_naturally(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for j in (1, 2, 10, 11, 3):
        Image.fromarray(np.full((4, 4, 3), j, dtype=np.uint8)).save(folder / f"img_{j}.png")
    (folder / "notes.txt").write_text("ignored")
    video = read_video(folder)
    assert video[:, 0, 0, 0].tolist() == [1, 2, 3, 10, 11]


def test_jpg_folder_reads_close(tmp_path):
    video = smooth_video(3, 16, 16)
    folder = tmp_path / "jpgs"
    folder.mkdir()
    for j, frame in enumerate(video):
        Image.fromarray(frame).save(folder / f"{j}.jpg", quality=95)
    out = read_video(folder)
    assert out.shape == video.shape and psnr(out, video) > 25


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="empty.*no .png"):
        read_video(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        read_video(tmp_path / "nothere.mp4")


def test_unsupported_suffix(tmp_path):
    (tmp_path / "v.xyz").write_bytes(b"123")
    with pytest.raises(VideoError, match=r"v\.xyz.*unsupported"):
        read_video(tmp_path / "v.xyz")
    with pytest.raises(VideoError, match=r"v\.bmp.*unsupported"):
        write_video(tmp_path / "v.bmp", smooth_video(2, 4, 4))


# ----------------------------------------------------------------------------- gif


def test_gif_exact_with_few_colours_and_repeated_frames(tmp_path):
    video = few_colours_video()
    write_video(tmp_path / "v.gif", video, fps=10)
    out = read_video(tmp_path / "v.gif")
    assert out.shape == video.shape  # identical consecutive frames are kept
    np.testing.assert_array_equal(out, video)
    info = video_info(tmp_path / "v.gif")
    assert (info["num_frames"], info["height"], info["width"]) == (10, 20, 24)
    assert info["fps"] == pytest.approx(10.0)
    with Image.open(tmp_path / "v.gif") as im:
        assert im.info["loop"] == 0


def test_gif_many_colours_is_close(tmp_path):
    video = smooth_video(6, 32, 32)
    write_video(tmp_path / "v.gif", video, fps=8)
    out = read_video(tmp_path / "v.gif")
    assert out.shape == video.shape and psnr(out, video) > 25


# ----------------------------------------------------------------------------- containers


def test_mp4_round_trip_close(tmp_path):
    video = smooth_video(12, 48, 64)
    write_video(tmp_path / "v.mp4", video, fps=8)
    out = read_video(tmp_path / "v.mp4")
    assert out.shape == video.shape
    assert psnr(out, video) > 30
    assert video_info(tmp_path / "v.mp4") == {"num_frames": 12, "height": 48, "width": 64, "fps": 8.0}
    assert no_temp_files(tmp_path)


def test_mp4_crf_changes_quality(tmp_path):
    video = smooth_video(6, 32, 32)
    write_video(tmp_path / "hi.mp4", video, crf=10)
    write_video(tmp_path / "lo.mp4", video, crf=40)
    assert psnr(read_video(tmp_path / "hi.mp4"), video) > psnr(read_video(tmp_path / "lo.mp4"), video)


def test_mp4_odd_size_is_an_error_unless_padded(tmp_path):
    video = smooth_video(3, 15, 20)
    with pytest.raises(VideoError, match=r"v\.mp4.*even"):
        write_video(tmp_path / "v.mp4", video)
    assert not (tmp_path / "v.mp4").exists() and no_temp_files(tmp_path)
    write_video(tmp_path / "v.mp4", video, pad_odd=True)
    assert read_video(tmp_path / "v.mp4").shape == (3, 16, 20, 3)


@pytest.mark.parametrize("suffix", [".avi", ".mkv", ".mov", ".webm"])
def test_other_containers_round_trip(tmp_path, suffix):
    video = smooth_video(9, 32, 48)
    path = tmp_path / f"v{suffix}"
    write_video(path, video, fps=25)
    out = read_video(path)
    assert out.shape == video.shape and psnr(out, video) > 28
    info = video_info(path)
    assert (info["num_frames"], info["height"], info["width"]) == (9, 32, 48)
    assert info["fps"] == pytest.approx(25.0)


def test_pyav_written_avi_with_b_frames_reads_all_frames(tmp_path):
    video = smooth_video(20, 32, 48)
    path = tmp_path / "xvid.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.codec_context.max_b_frames = 2
        stream.codec_tag = "XVID"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    out = read_video(path)
    assert out.shape == video.shape and psnr(out, video) > 25
    assert video_info(path)["num_frames"] == 20


@pytest.mark.parametrize("payload", [b"", b"\x00\x01garbage" * 100])
def test_corrupt_mp4_names_the_file(tmp_path, payload):
    path = tmp_path / "broken.mp4"
    path.write_bytes(payload)
    with pytest.raises(VideoError, match=r"broken\.mp4"):
        read_video(path)
    with pytest.raises(VideoError, match=r"broken\.mp4"):
        video_info(path)


def test_truncated_mp4_is_an_error_or_shorter(tmp_path):
    video = smooth_video(12, 32, 32)
    write_video(tmp_path / "v.mp4", video)
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match=r"cut\.mp4"):
        read_video(tmp_path / "cut.mp4")


# ----------------------------------------------------------------------------- grids


def test_make_grid_shape_and_placement():
    a, b = np.full((4, 8, 10, 3), 10, np.uint8), np.full((4, 8, 10, 3), 20, np.uint8)
    grid = make_grid([[a, b, a], [b]], pad=2, pad_value=255)
    assert grid.shape == (4, 2 * 8 + 3 * 2, 3 * 10 + 4 * 2, 3)
    assert (grid[:, 2:10, 2:12] == 10).all() and (grid[:, 2:10, 14:24] == 20).all()
    assert (grid[:, 12:20, 2:12] == 20).all()
    assert (grid[:, 12:20, 14:24] == 255).all()  # missing cell of the short row
    assert (grid[:, 0:2] == 255).all()


def test_make_grid_rejects_mismatched_videos():
    a = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(VideoError, match="row 1 column 0"):
        make_grid([[a], [a[:3]]])
    with pytest.raises(VideoError, match="no videos"):
        make_grid([])


@pytest.mark.parametrize("name", ["grid.mp4", "grid.gif"])
def test_write_grid_with_labels(tmp_path, name):
    videos = [[smooth_video(5, 16, 16) for _ in range(3)] for _ in range(2)]
    grid = write_grid(tmp_path / name, videos, fps=5, labels=["real", "generated"])
    out = read_video(tmp_path / name)
    assert out.shape == grid.shape and out.shape[0] == 5
    assert out.shape[1] % 2 == 0 and out.shape[2] % 2 == 0
    assert out.shape[2] > 3 * 16 + 4 * 2  # label strip added on the left


def test_write_filmstrip_lays_frames_out_left_to_right(tmp_path):
    a = np.stack([np.full((4, 6, 3), 10 * t, np.uint8) for t in range(5)])  # [T=5, H=4, W=6, 3]
    b = np.full((5, 4, 6, 3), 200, np.uint8)
    still = write_filmstrip(tmp_path / "s.png", [a, b], scale=2, pad=1, frames=[0, 3, 4])
    assert still.shape == (2 * (2 * 4 + 3), 2 * (3 * 6 + 4), 3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png")), still)
    y, x = 2 * 1, 2 * (1 + 6 + 1)  # row 0, second column = frame 3 of a
    assert (still[y : y + 8, x : x + 12] == 30).all()
    assert (still[2 * (4 + 2) : 2 * (4 + 2) + 8, 2:14] == 200).all()  # row 1 = b


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "b.json").write_text("{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "b.json").stat().st_mode & 0o777
