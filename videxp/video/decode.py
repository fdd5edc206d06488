"""PyAV decoding of frame ranges in decode order (never pts), with exact counts and errors naming the file."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from videxp.errors import VideoError

__all__ = ["count_frames", "decode_frames", "probe", "stack_frames"]

log = logging.getLogger(__name__)


def stack_frames(frames: list[np.ndarray], path: Path, what: str = "frame") -> np.ndarray:
    """Stack equal-shape frames [H, W, 3] into [T, H, W, 3]; a frame of another shape is a VideoError."""
    shape = frames[0].shape
    for j, frame in enumerate(frames):
        if frame.shape != shape:
            raise VideoError(f"{path}: {what} {j} has shape {frame.shape}, {what} 0 has {shape}")
    return np.stack(frames)  # [T, H, W, 3]


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: cannot open: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def _decoded(container: av.container.InputContainer, path: Path) -> Iterator[av.VideoFrame]:
    """Frames of the first video stream in decode (output) order; FFmpeg errors become VideoError."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decode failed after {count} frames: {e}") from e


def probe(path: str | os.PathLike) -> dict:
    """Container metadata without decoding: {fps, width, height, num_frames_header, codec}.

    `fps` is the stream's average rate (guessed rate when absent), `num_frames_header` the frame count the
    container declares (None when it declares none, e.g. mkv/webm) — decode with `count_frames` for the truth.
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise VideoError(f"{path}: container declares no frame rate")
        return {
            "fps": float(rate),
            "width": int(stream.codec_context.width),
            "height": int(stream.codec_context.height),
            "num_frames_header": int(stream.frames) if stream.frames > 0 else None,
            "codec": str(stream.codec_context.name),
        }


def decode_frames(
    path: str | os.PathLike, start: int = 0, stop: int | None = None, step: int = 1
) -> np.ndarray:
    """Decode frames `start, start + step, ... < stop` (decode order, 0-based) as uint8 `[T, H, W, 3]` RGB.

    Decodes sequentially from the first frame and stops at `stop` (no seeking, so AVI files whose pts start
    at 1 or are missing index correctly). `stop=None` decodes to the end; then a file that yields fewer frames
    than its header declares (truncated) is a VideoError. A file with fewer than `stop` frames is a VideoError
    naming the file and both numbers; so are unreadable and corrupt files.
    """
    path = Path(path)
    if start < 0 or step < 1 or (stop is not None and stop <= start):
        raise ValueError(
            f"{path}: need 0 <= start < stop and step >= 1, got start={start} stop={stop} step={step}"
        )
    frames: list[np.ndarray] = []
    decoded = 0
    with _open(path) as container:
        header = container.streams.video[0].frames
        for index, frame in enumerate(_decoded(container, path)):
            decoded = index + 1
            if index >= start and (index - start) % step == 0:
                frames.append(frame.to_ndarray(format="rgb24"))  # [H, W, 3]
            if stop is not None and decoded >= stop:
                break
    if stop is not None and decoded < stop:
        raise VideoError(
            f"{path}: requested frames [{start}, {stop}) but the file decodes to only {decoded} frames"
        )
    if stop is None and header > 0 and decoded < header:
        raise VideoError(
            f"{path}: decoded {decoded} frames but the header declares {header} (truncated or corrupt?)"
        )
    if not frames:
        raise VideoError(f"{path}: no frames in [{start}, {stop}) (the file decodes to {decoded} frames)")
    return stack_frames(frames, path)  # [T, H, W, 3]


def count_frames(path: str | os.PathLike) -> int:
    """Exact number of decodable frames (decode order, pixels not converted); VideoError when none decode."""
    path = Path(path)
    with _open(path) as container:
        count = sum(1 for _ in _decoded(container, path))
    if count == 0:
        raise VideoError(f"{path}: no decodable video frames")
    return count
