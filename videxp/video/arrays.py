"""Videos stored as arrays: `.npy` and `.pt` (a torch uint8 tensor, as FDM's CARLA files), by frame range."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from videxp.errors import VideoError

ARRAY_SUFFIXES = (".npy", ".pt")


def _load(path: Path, mmap: bool) -> np.ndarray:
    """The uint8 [T, H, W, C] array of `path` (C = 1 or 3; a [T, H, W] array gets C = 1)."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        else:  # weights_only: a tensor and nothing else is unpickled; mmap reads only the frames asked for
            try:
                tensor = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
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
    if array.ndim == 3:
        array = array[..., None]
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3) or array.shape[0] < 1:
        raise VideoError(f"{path}: expected uint8 [T, H, W, 1|3], got {array.dtype} {tuple(array.shape)}")
    return array


def array_info(path: str | os.PathLike) -> dict:
    """{num_frames, height, width} of an array video (memory-mapped: no frames are read)."""
    t, h, w, _ = _load(Path(path), mmap=True).shape
    return {"num_frames": int(t), "height": int(h), "width": int(w)}


def read_array_frames(path: str | os.PathLike, start: int, stop: int) -> np.ndarray:
    """uint8 RGB frames [stop - start, H, W, 3] of an array video (grayscale repeated to 3 channels)."""
    array = _load(Path(path), mmap=True)
    if not 0 <= start < stop <= array.shape[0]:
        raise VideoError(f"{path}: requested frames [{start}, {stop}) of a video of {array.shape[0]} frames")
    frames = np.ascontiguousarray(array[start:stop])  # [T, H, W, C]
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames
