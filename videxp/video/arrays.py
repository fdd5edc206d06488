"""Videos stored as arrays: `.npy` and `.pt` (a torch uint8 tensor, as FDM's CARLA files), by frame range."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from videxp.errors import VideoError
from videxp.video.io import check_video

ARRAY_SUFFIXES = (".npy", ".pt")


def _open(path: Path) -> np.ndarray:
    """The array of `path`, memory-mapped (nothing read yet); a [T, H, W] array gets a channel axis."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:  # weights_only: a tensor and nothing else is unpickled
            try:
                tensor = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # a legacy (pre-zip) torch file cannot be memory-mapped
                tensor = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(tensor, torch.Tensor):
                raise VideoError(
                    f"{path}: holds a {type(tensor).__name__}, expected one uint8 tensor [T, H, W, C]"
                )
            array = tensor.numpy()
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy and torch raise several types for a bad file; all mean one thing
        raise VideoError(f"{path}: cannot read the array: {e}") from e
    if not isinstance(array, np.ndarray):
        raise VideoError(f"{path}: an .npz archive, not one array (save it with np.save)")
    return array[..., None] if array.ndim == 3 else array


def array_info(path: str | os.PathLike) -> dict:
    """{num_frames, height, width} of an array video (checked on its first frame; no other frame is read)."""
    array = _open(Path(path))
    check_video(np.asarray(array[:1]), str(path))
    t, h, w = (int(n) for n in array.shape[:3])
    return {"num_frames": t, "height": h, "width": w}


def read_array_frames(path: str | os.PathLike, start: int, stop: int) -> np.ndarray:
    """uint8 RGB frames [stop - start, H, W, 3] of an array video (`check_video`'s rules and errors)."""
    array = _open(Path(path))
    if not 0 <= start < stop <= array.shape[0]:
        raise VideoError(f"{path}: requested frames [{start}, {stop}) of a video of {array.shape[0]} frames")
    return check_video(np.ascontiguousarray(array[start:stop]), str(path))
