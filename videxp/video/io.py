"""Video conventions (uint8 [T, H, W, 3] on disk, float [.., T, C, H, W] in [-1, 1]), files and grids."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import GifImagePlugin, Image, ImageDraw, ImageFont, ImageSequence

from videxp.errors import VideoError
from videxp.utils.io import atomic_path, write_npy
from videxp.video.decode import decode_frames, stack_frames
from videxp.video.walk import entries

CONTAINER_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
# Default encoder per container; `crf` applies to libx264 and libvpx-vp9, mpeg4 uses a fixed qscale.
_ENCODERS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}
_MPEG4_QSCALE = 2


# ----------------------------------------------------------------------------- conversions


def to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 `[..., T, H, W, C]` (numpy or tensor) -> float32 tensor `[..., T, C, H, W]` in [-1, 1].

    Uses x / 127.5 - 1 (the FDM / RIVER convention); `to_uint8` inverts it exactly on uint8 input.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        raise VideoError(f"to_float expects uint8 frames, got {getattr(frames, 'dtype', type(frames))}")
    if x.ndim < 4:
        raise VideoError(f"to_float expects [..., T, H, W, C], got shape {tuple(x.shape)}")
    x = x.movedim(-1, -3)  # [..., T, C, H, W] (a strided view)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)  # contiguous
    out.copy_(x)  # one pass: layout change and uint8 -> float32 together
    return out.div_(127.5).sub_(1.0)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Float video in [-1, 1] -> [0, 1], the range the metrics take."""
    return (x + 1.0) / 2.0


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """float `[..., T, C, H, W]` in [-1, 1] -> uint8 numpy `[..., T, H, W, C]`.

    Clamps, then ROUNDS (half up): uint8(clamp(x * 127.5 + 128, 0, 255)), exactly the StyleGAN-V
    conversion. FDM truncates instead (`((x + 1) / 2 * 255).astype(uint8)`), which biases values
    down by half a level; we round. Raises VideoError on NaN or inf.
    """
    t = torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise VideoError(f"to_uint8 expects a float tensor, got {getattr(x, 'dtype', type(x))}")
    if t.ndim < 4:
        raise VideoError(f"to_uint8 expects [..., T, C, H, W], got shape {tuple(t.shape)}")
    t = t.detach()
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise VideoError(f"to_uint8: {bad} non-finite values (NaN/inf) in video of shape {tuple(t.shape)}")
    # Truncation of a non-negative value is floor, so +128 (= +127.5 + 0.5) rounds half up.
    u = (t.to(torch.float32) * 127.5 + 128.0).clamp_(0.0, 255.0).to(torch.uint8)
    return u.movedim(-3, -1).contiguous().cpu().numpy()  # [..., T, H, W, C]


def ensure_rgb(array: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Grayscale `[T, H, W]` or `[T, H, W, 1]` -> `[T, H, W, 3]` by replicating the channel.

    `[T, H, W, 3]` is returned unchanged (no copy); any other channel count is a VideoError.
    """
    if array.ndim == 3:
        array = array[..., None]  # [T, H, W, 1]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise VideoError(f"{source}: expected [T, H, W], [T, H, W, 1] or [T, H, W, 3], got {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)  # [T, H, W, 3]
    return array


def check_video(array: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Validate a uint8 `[T, H, W, C]` video (C = 3, or 1 replicated by `ensure_rgb`); return `[T, H, W, 3]`.

    Errors name `source` (a file path or a description) and what is wrong.
    """
    if not isinstance(array, np.ndarray):
        raise VideoError(
            f"{source}: expected a numpy uint8 array, got {type(array).__name__}"
            " (use videxp.video.to_uint8 for float tensors)"
        )
    if array.dtype == np.uint16:
        raise VideoError(
            f"{source}: expected dtype uint8, got uint16; scale 16-bit values with "
            "videxp.video.scale_16_to_8 (round(v * 255 / 65535)) rather than casting, which wraps"
        )
    if array.dtype != np.uint8:
        raise VideoError(
            f"{source}: expected dtype uint8, got {array.dtype} (convert floats in [0, 1] with "
            "np.round(x * 255).astype(np.uint8), after checking for NaN)"
        )
    if array.ndim != 4:
        raise VideoError(f"{source}: expected 4 dims [T, H, W, C], got shape {array.shape}")
    if array.shape[-1] not in (1, 3):
        raise VideoError(f"{source}: expected C = 3 (or 1) channels last [T, H, W, C], got {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1 or array.shape[2] < 1:
        raise VideoError(f"{source}: empty video, shape {array.shape}")
    return ensure_rgb(array, source)


# ----------------------------------------------------------------------------- reading


def _natural_key(name: str) -> list[str | int]:
    # "frame_2.png" sorts before "frame_10.png"; str and int parts alternate, so comparisons are safe.
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in entries(folder)[1] if p.suffix.lower() in FRAME_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _read_container(path: Path) -> np.ndarray:
    # Sequential PyAV decode in decode order; a file that decodes to fewer frames than its header declares
    # (truncated) is a VideoError.
    return decode_frames(path)  # [T, H, W, 3]


def _read_gif(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]  # [H, W, 3] each
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        raise VideoError(f"{path}: cannot read GIF: {e}") from e
    if not frames:
        raise VideoError(f"{path}: GIF has no frames")
    return stack_frames(frames, path)


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except EOFError as e:  # an empty file
        raise VideoError(f"{path}: cannot read .npy: the file is empty ({e})") from e
    except (OSError, ValueError) as e:
        raise VideoError(f"{path}: cannot read .npy: {e}") from e
    if not isinstance(array, np.ndarray):  # np.load opens a zip (.npz) whatever the suffix
        array.close()
        raise VideoError(
            f"{path}: cannot read .npy: it is an .npz archive, not one array (save it with np.save)"
        )
    if isinstance(array, np.ndarray) and array.ndim == 3:
        array = array[..., None]  # grayscale [T, H, W] -> [T, H, W, 1]
    return check_video(array, str(path))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")  # PIL modes with more than 8 bits per value


def _png_bit_depth(path: Path) -> int | None:
    """The bit depth in a PNG's IHDR chunk, None for other files."""
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) == 26 else None


def scale_16_to_8(frames: np.ndarray) -> np.ndarray:
    """uint16 values -> uint8 by round(v * 255 / 65535) (half up), so 0 -> 0, 65535 -> 255, 257 * k -> k."""
    return ((frames.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _read_png16(path: Path) -> np.ndarray:
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            wide = frame.to_ndarray(format="rgb48le")  # [H, W, 3] uint16 (gray is replicated, alpha dropped)
    except (av.error.FFmpegError, StopIteration) as e:
        raise VideoError(f"{path}: cannot read the 16-bit PNG: {e}") from e
    return scale_16_to_8(wide)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image file (.png / .jpg) as uint8 `[H, W, 3]` RGB.

    8-bit images are read as they are (grayscale replicated, alpha dropped). 16-bit PNGs are scaled to
    8 bits with round(v * 255 / 65535), never clipped; other images with more than 8 bits per value
    (PIL modes I, F, I;16 from other formats) are a VideoError.
    """
    path = Path(path)
    try:
        if _png_bit_depth(path) == 16:
            return _read_png16(path)
        with Image.open(path) as im:
            if im.mode in _WIDE_MODES:
                raise VideoError(
                    f"{path}: a {im.mode} image (more than 8 bits per value, not a 16-bit PNG); save the "
                    "frames as 8-bit or 16-bit PNG"
                )
            return np.asarray(im.convert("RGB"))  # [H, W, 3]
    except (OSError, ValueError, SyntaxError) as e:
        if isinstance(e, VideoError):
            raise
        raise VideoError(f"{path}: cannot read frame image: {e}") from e


def _read_frame_folder(path: Path) -> np.ndarray:
    files = _frame_files(path)
    if not files:
        raise VideoError(f"{path}: folder has no {'/'.join(FRAME_SUFFIXES)} frames")
    frames = [read_image(f) for f in files]  # [H, W, 3] each
    for f, frame in zip(files, frames):
        if frame.shape != frames[0].shape:
            raise VideoError(f"{f}: frame has shape {frame.shape}, {files[0].name} has {frames[0].shape}")
    return np.stack(frames)  # [T, H, W, 3]


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file or frame folder")
    return path


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Read a whole video as uint8 `[T, H, W, 3]` RGB.

    Dispatch: .mp4 .avi .mkv .webm .mov (PyAV, first video stream, every decoded frame, converted to
    8-bit RGB by FFmpeg whatever the source bit depth), .gif (PIL, all frames), .npy (uint8
    [T, H, W, 3|1] or grayscale [T, H, W]; other dtypes, 16-bit included, are refused with the
    conversion to use), or a folder of .png/.jpg frames sorted naturally by the numbers in their names
    (`read_image`: 16-bit PNGs scaled to 8 bits with round(v * 255 / 65535)). Missing path:
    FileNotFoundError; corrupt, empty or malformed input: VideoError naming the file.
    """
    path = _existing(path)
    if path.is_dir():
        return _read_frame_folder(path)
    suffix = path.suffix.lower()
    if suffix in CONTAINER_SUFFIXES:
        return _read_container(path)
    if suffix == ".gif":
        return _read_gif(path)
    if suffix == ".npy":
        return _read_npy(path)
    raise VideoError(
        f"{path}: unsupported video suffix {suffix!r} "
        f"(supported: {', '.join((*CONTAINER_SUFFIXES, '.gif', '.npy'))} or a frame folder)"
    )


def video_info(path: str | os.PathLike) -> dict:
    """Cheap metadata without decoding pixels: {num_frames, height, width[, fps]}.

    Containers: frame count from the header, or counted by demuxing packets when the header has
    none (mkv, webm); fps from the stream rate. GIF: fps from the first frame's duration.
    """
    path = _existing(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise VideoError(f"{path}: folder has no {'/'.join(FRAME_SUFFIXES)} frames")
        with Image.open(files[0]) as im:
            width, height = im.size
        return {"num_frames": len(files), "height": height, "width": width}
    if suffix in CONTAINER_SUFFIXES:
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoError(f"{path}: no video stream")
                stream = container.streams.video[0]
                info: dict = {
                    "num_frames": int(stream.frames),
                    "height": int(stream.codec_context.height),
                    "width": int(stream.codec_context.width),
                }
                rate = stream.average_rate or stream.guessed_rate
                if rate:
                    info["fps"] = float(rate)
                if info["num_frames"] <= 0:
                    info["num_frames"] = sum(1 for p in container.demux(stream) if p.size > 0)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: cannot open: {e}") from e
        if info["num_frames"] <= 0:
            raise VideoError(f"{path}: no video frames")
        return info
    if suffix == ".gif":
        try:
            with Image.open(path) as im:
                info = {"num_frames": int(getattr(im, "n_frames", 1)), "height": im.height, "width": im.width}
                if im.info.get("duration"):
                    info["fps"] = 1000.0 / float(im.info["duration"])
        except (OSError, ValueError, EOFError, SyntaxError) as e:
            raise VideoError(f"{path}: cannot read GIF: {e}") from e
        return info
    if suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise VideoError(f"{path}: cannot read .npy: {e}") from e
        if array.dtype != np.uint8 or array.ndim not in (3, 4):
            raise VideoError(f"{path}: expected uint8 [T, H, W(, C)], got {array.dtype} {array.shape}")
        t, h, w = (int(n) for n in array.shape[:3])
        return {"num_frames": t, "height": h, "width": w}
    raise VideoError(f"{path}: unsupported video suffix {suffix!r}")


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; swap it in for `path` (replacing an old folder) on success.

    A folder cannot be renamed onto a non-empty folder, so an existing one is first moved aside
    and deleted only after the new one is in place. (utils.io.atomic_path handles files only.)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise VideoError(f"{path}: exists and is not a folder; cannot write frames into it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "frames")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1:3]
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # [T, H', W', 3]


def _write_container(tmp: Path, frames: np.ndarray, fps: float, crf: int, codec: str) -> None:
    height, width = frames.shape[1:3]
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf)}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": str(crf), "b": "0"}
        elif codec == "mpeg4":
            stream.codec_context.qscale = _MPEG4_QSCALE
        for frame in frames:  # [H, W, 3]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _to_palette_image(frame: np.ndarray) -> Image.Image:
    """[H, W, 3] -> P-mode image; exact when the frame has <= 256 colours, median-cut otherwise."""
    code = (frame[..., 0].astype(np.uint32) << 16) | (frame[..., 1].astype(np.uint32) << 8) | frame[..., 2]
    colours, index = np.unique(code.ravel(), return_inverse=True)
    if len(colours) > 256:
        return Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image = Image.fromarray(index.reshape(frame.shape[:2]).astype(np.uint8), mode="P")  # [H, W]
    palette = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=-1).astype(np.uint8)
    image.putpalette(palette.ravel().tolist())
    return image


def _write_gif(tmp: Path, frames: np.ndarray, fps: float) -> None:
    # Every frame is written in full with its own colour table. Image.save(save_all=True) would merge
    # identical consecutive frames into one longer frame, so a reader would get fewer frames back.
    images = [_to_palette_image(frame) for frame in frames]
    duration_ms = max(1, round(100.0 / fps)) * 10  # GIF delays are whole centiseconds
    header, _ = GifImagePlugin.getheader(images[0].copy(), info={"loop": 0})
    with open(tmp, "wb") as fp:
        for chunk in header:
            fp.write(chunk)
        for image in images:
            for chunk in GifImagePlugin.getdata(image, include_color_table=True, duration=duration_ms):
                fp.write(chunk)
        fp.write(b";")  # GIF trailer


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: float = 8, crf: int = 18, pad_odd: bool = False
) -> None:
    """Write uint8 `[T, H, W, 3]` (or `[T, H, W, 1]`) to `path`, atomically; the format follows the suffix.

    .mp4/.mkv/.mov: libx264 yuv420p (`crf`); .webm: libvpx-vp9 (`crf`); .avi: mpeg4 (qscale 2);
    .gif: PIL, delay round(100 / fps) centiseconds, loop forever, exact for frames of <= 256 colours;
    .npy: raw array; no suffix: a folder of 000000.png, 000001.png, ... yuv420p needs an even height
    and width: odd sizes are a VideoError unless `pad_odd` (edge-replicates one row/column).
    """
    path = Path(path)
    frames = check_video(frames, f"frames for {path}")
    if fps <= 0:
        raise VideoError(f"{path}: fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    if suffix in CONTAINER_SUFFIXES:
        if frames.shape[1] % 2 or frames.shape[2] % 2:
            if not pad_odd:
                raise VideoError(
                    f"{path}: yuv420p needs even height and width, got {frames.shape[1:3]}"
                    " (pass pad_odd=True to pad, or crop)"
                )
            frames = _pad_to_even(frames)
        with atomic_path(path) as tmp:
            _write_container(tmp, frames, fps, crf, _ENCODERS[suffix])
    elif suffix == ".gif":
        with atomic_path(path) as tmp:
            _write_gif(tmp, frames, fps)
    elif suffix == ".npy":
        write_npy(path, frames)
    elif suffix == "":
        with _atomic_dir(path) as tmp:
            for j, frame in enumerate(frames):
                Image.fromarray(frame).save(tmp / f"{j:06d}.png")
    else:
        raise VideoError(
            f"{path}: unsupported suffix {suffix!r} for writing "
            f"(supported: {', '.join((*CONTAINER_SUFFIXES, '.gif', '.npy'))}, or none for PNGs)"
        )


# ----------------------------------------------------------------------------- grids


def make_grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile videos into one uint8 `[T, R*H + (R+1)*pad, C*W + (C+1)*pad, 3]` video.

    `rows[r][c]` is a uint8 `[T, H, W, 3]` video; all must share T, H and W (a shorter video is an
    error). Rows may have different lengths; missing cells and the border are `pad_value`.
    """
    if not rows or not any(len(row) for row in rows):
        raise VideoError("make_grid: no videos given")
    if pad < 0 or not 0 <= pad_value <= 255:
        raise VideoError(f"make_grid: need pad >= 0 and 0 <= pad_value <= 255, got {pad}, {pad_value}")
    cells = [
        [check_video(v, f"make_grid row {r} column {c}") for c, v in enumerate(row)]
        for r, row in enumerate(rows)
    ]
    ref = next(v for row in cells for v in row).shape[:3]
    for r, row in enumerate(cells):
        for c, v in enumerate(row):
            if v.shape[:3] != ref:
                raise VideoError(
                    f"make_grid: row {r} column {c} has [T, H, W] = {v.shape[:3]}, expected {ref}"
                )
    t, h, w = ref
    n_rows, n_cols = len(cells), max(len(row) for row in cells)
    grid = np.full(
        (t, n_rows * h + (n_rows + 1) * pad, n_cols * w + (n_cols + 1) * pad, 3), pad_value, dtype=np.uint8
    )  # [T, H_grid, W_grid, 3]
    for r, row in enumerate(cells):
        for c, v in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, y : y + h, x : x + w] = v
    return grid


def _label_strip(
    labels: Sequence[str], height: int, cell_height: int, pad: int, pad_value: int
) -> np.ndarray:
    """A [height, W_label, 3] strip with labels[r] centred vertically on grid row r."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), str(label), font=font) for label in labels]
    width = max(box[2] - box[0] for box in boxes) + 2 * max(pad, 2)
    width += width % 2  # keep the grid width even for yuv420p
    ink = 0 if pad_value >= 128 else 255
    strip = Image.new("RGB", (width, height), (pad_value,) * 3)
    draw = ImageDraw.Draw(strip)
    for r, (label, box) in enumerate(zip(labels, boxes)):
        centre = pad + r * (cell_height + pad) + cell_height // 2
        xy = (max(pad, 2) - box[0], centre - (box[1] + box[3]) // 2)
        draw.text(xy, str(label), fill=(ink,) * 3, font=font)
    return np.asarray(strip)  # [H_grid, W_label, 3]


def write_grid(
    path: str | os.PathLike,
    rows: Sequence[Sequence[np.ndarray]],
    fps: float = 8,
    labels: Sequence[str] | None = None,
    pad: int = 2,
    pad_value: int = 255,
) -> np.ndarray:
    """Write `make_grid(rows)` to `path` (any `write_video` format); optional `labels` left of each row.

    Odd sizes are padded for yuv420p containers. Returns the written uint8 `[T, H, W, 3]` grid.
    """
    grid = make_grid(rows, pad=pad, pad_value=pad_value)  # [T, H_grid, W_grid, 3]
    if labels is not None:
        if len(labels) != len(rows):
            raise VideoError(f"{path}: {len(labels)} labels for {len(rows)} rows")
        cell_height = next(v for row in rows for v in row).shape[1]
        strip = _label_strip(labels, grid.shape[1], cell_height, pad, pad_value)  # [H_grid, W_label, 3]
        grid = np.concatenate([np.broadcast_to(strip, (grid.shape[0], *strip.shape)), grid], axis=2)
    if Path(path).suffix.lower() in CONTAINER_SUFFIXES:
        grid = _pad_to_even(grid)
    write_video(path, grid, fps=fps)
    return grid


def write_filmstrip(
    path: str | os.PathLike,
    rows: Sequence[np.ndarray],
    scale: int = 1,
    pad: int = 2,
    pad_value: int = 255,
    frames: Sequence[int] | None = None,
) -> np.ndarray:
    """Write a still image (PNG) of videos: one row per uint8 `[T, H, W, 3]` video, its frames left to right.

    `frames` picks which frames (default: all), `scale` enlarges pixels (nearest neighbour). Written
    atomically; returns the image uint8 `[H_img, W_img, 3]`.
    """
    if not rows:
        raise VideoError(f"{path}: no videos for the filmstrip")
    picked = [check_video(v, f"{path} row {r}") for r, v in enumerate(rows)]
    picked = [v if frames is None else v[list(frames)] for v in picked]
    grid = make_grid([list(v[:, None]) for v in picked], pad=pad, pad_value=pad_value)  # [1, H_img, W_img, 3]
    strip = grid[0]  # [H_img, W_img, 3]
    if scale > 1:
        strip = strip.repeat(scale, axis=0).repeat(scale, axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")
    return strip
