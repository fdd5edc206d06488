"""PyAV range decoding: decode order, exact counts, early stop, and errors naming the file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from videxp.data.standins import moving_shapes, write_avi, write_mp4
from videxp.video import VideoError, read_video
from videxp.video.decode import count_frames, decode_frames, probe

N = 40


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One B-frame XVID AVI (UCF/HMDB style), one DX50 gray AVI (KTH style), one H.264 MP4; N frames each."""
    d = tmp_path_factory.mktemp("decode")
    video = moving_shapes(N, 240, 320, seed=3)  # [N, 240, 320, 3]
    gray = moving_shapes(N, 120, 160, seed=4, gray=True)  # [N, 120, 160, 3]
    return {
        "source": video,
        "bframes": write_avi(d / "v_X_g01_c01.avi", video, fps=25, codec_tag="XVID", max_b_frames=2),
        "gray": write_avi(d / "person01_boxing_d1_uncomp.avi", gray, fps=25, codec_tag="DX50"),
        "mp4": write_mp4(d / "video_00001.mp4", moving_shapes(N, 320, 480, seed=5), fps=25),
    }


def test_probe(files):
    info = probe(files["bframes"])
    assert info == {"fps": 25.0, "width": 320, "height": 240, "num_frames_header": N, "codec": "mpeg4"}
    mp4 = probe(files["mp4"])
    assert (mp4["width"], mp4["height"], mp4["codec"], mp4["fps"]) == (480, 320, "h264", 25.0)


@pytest.mark.parametrize("kind", ["bframes", "gray", "mp4"])
@pytest.mark.parametrize("start, stop, step", [(0, None, 1), (0, 5, 1), (7, 23, 1), (3, 40, 4), (39, 40, 1)])
def test_range_equals_slice_of_full_decode(files, kind, start, stop, step):
    full = decode_frames(files[kind])  # [N, H, W, 3]
    assert full.shape[0] == N and full.dtype == np.uint8
    part = decode_frames(files[kind], start, stop, step)
    np.testing.assert_array_equal(part, full[start:stop:step])


def test_b_frame_avi_decodes_every_frame_in_decode_order(files):
    path = files["bframes"]
    with av.open(str(path)) as container:  # the AVI quirk the decoder must not rely on: pts start at 1
        assert next(container.decode(video=0)).pts == 1
    assert count_frames(path) == N
    out = decode_frames(path)[:, ::4, ::4].reshape(N, -1).astype(np.float64)  # [N, D]
    src = files["source"][:, ::4, ::4].reshape(N, -1).astype(np.float64)  # [N, D]
    # decoded frame t must be closest to written frame t (no reordering, no off-by-one)
    sq = (out**2).sum(1)[:, None] + (src**2).sum(1)[None, :] - 2 * out @ src.T  # [N, N]
    mse = sq / out.shape[1]
    np.testing.assert_array_equal(mse.argmin(axis=1), np.arange(N))
    assert mse.diagonal().max() < 60  # qscale 4: close to the source


def test_gray_content_stays_gray(files):
    frames = decode_frames(files["gray"], 0, 10).astype(int)  # [10, 120, 160, 3]
    assert np.abs(frames[..., 0] - frames[..., 1]).max() <= 2
    assert np.abs(frames[..., 0] - frames[..., 2]).max() <= 2


def test_read_video_uses_the_same_decoder(files):
    np.testing.assert_array_equal(read_video(files["bframes"]), decode_frames(files["bframes"]))


def test_request_beyond_the_end_names_file_and_numbers(files):
    with pytest.raises(VideoError, match=rf"v_X_g01_c01\.avi.*\[0, {N + 1}\).*only {N} frames"):
        decode_frames(files["bframes"], 0, N + 1)
    with pytest.raises(VideoError, match=r"video_00001\.mp4"):
        decode_frames(files["mp4"], 30, 50, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="start"):
        decode_frames("x.avi", 5, 5)
    with pytest.raises(ValueError, match="step"):
        decode_frames("x.avi", 0, 4, 0)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.avi"):
        probe("nope.avi")


@pytest.fixture(scope="module")
def truncated(files, tmp_path_factory) -> Path:
    data = files["bframes"].read_bytes()
    path = tmp_path_factory.mktemp("cut") / "cut_g01_c01.avi"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_avi_full_decode_is_an_error(truncated):
    assert probe(truncated)["num_frames_header"] == N  # header survives, frames do not
    with pytest.raises(VideoError, match=rf"cut_g01_c01\.avi.*header declares {N}"):
        decode_frames(truncated)
    with pytest.raises(VideoError, match=r"cut_g01_c01\.avi"):
        decode_frames(truncated, 0, N)
    with pytest.raises(VideoError, match=r"cut_g01_c01\.avi"):
        read_video(truncated)
    assert count_frames(truncated) < N  # counting reports what decodes


def test_early_stop_does_not_read_the_damaged_tail(files, truncated):
    """The intact head decodes: decoding stops at `stop` instead of running into the cut."""
    np.testing.assert_array_equal(decode_frames(truncated, 2, 8), decode_frames(files["bframes"], 2, 8))


@pytest.mark.parametrize("payload", [b"", b"RIFF\x00\x00\x00\x00AVI garbage" * 50])
def test_unreadable_file_names_it(tmp_path, payload):
    path = tmp_path / "broken_c01.avi"
    path.write_bytes(payload)
    for fn in (probe, count_frames, decode_frames):
        with pytest.raises(VideoError, match=r"broken_c01\.avi"):
            fn(path)
