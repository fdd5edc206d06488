"""Spatial transform of a whole clip: resize/crop with PIL filters, luma, one augmentation draw per clip."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL
from PIL import Image

RESIZE_MODES = ("squash", "center_crop", "random_crop", "none")
# Pillow filters. Pillow's convolution resampling widens the kernel by the downscale factor, i.e. it is
# antialiased like torchvision `Resize(antialias=True)` (equal up to +-1 from uint8 rounding) and is the
# LANCZOS resize of StyleGAN-V; "area" is Pillow's BOX filter (pixel-area averaging, like cv2 INTER_AREA).
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


def _pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """`size` as (height, width)."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        if len(size) != 2:
            raise ValueError(f"size must be an int or (height, width), got {size!r}")
        h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def cover_size(height: int, width: int, out_h: int, out_w: int) -> tuple[int, int]:
    """Aspect-preserving (h, w) that covers (out_h, out_w): the limiting side is exact, the other is
    floored, as torchvision `Resize(short_side)` (e.g. 240x320 -> 128 gives 128x170)."""
    if out_h * width >= out_w * height:  # height limits: out_h / height >= out_w / width
        return out_h, max(out_w, out_h * width // height)
    return max(out_h, out_w * height // width), out_w


def center_offset(size: int, crop: int) -> int:
    """Offset of a centred crop, torchvision `CenterCrop` rounding: ``int(round((size - crop) / 2))``."""
    return int(round((size - crop) / 2.0))


def luma(clip: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of uint8 RGB frames, bit-exact with PIL ``convert("L")``: [..., 3] -> [..., 1]."""
    rgb = clip.astype(np.uint32)  # [..., 3]
    y = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16  # [...]
    return y.astype(np.uint8)[..., None]  # [..., 1]


class ClipTransform:
    """Resize/crop, augment and convert the channels of a uint8 clip [T, H, W, 3], the same for every frame.

    `size`: int (square) or (height, width); None keeps the input size (`resize_mode="none"` only).
    `resize_mode`:

    - ``squash``: resize straight to `size` (aspect not preserved; KTH/CLEVRER conventions);
    - ``center_crop``: resize preserving aspect so the frame covers `size` (short side to `size` for a
      square), then the centre crop (LARP/TATS/StyleGAN-V; offsets rounded as torchvision `CenterCrop`);
    - ``random_crop``: same resize, crop offset drawn once per clip from the `rng` passed to `__call__`;
    - ``none``: no resize; `size` must be None or the input size.

    `interpolation`: ``nearest|bilinear|bicubic|area|lanczos`` with Pillow (``Image.Resampling.*``, ``area`` =
    BOX), frame by frame, antialiased when downscaling. Frames already at the target size are not resampled.
    `channels`: 3 (RGB kept; grayscale content stays 3 equal channels) or 1 (ITU-R 601 luma, bit-exact with
    PIL ``convert("L")``, output [T, h, w, 1]; converted last).
    `augment`: instantiated albumentations transforms, composed with ``albumentations.Compose`` and applied
    after the resize/crop with one parameter draw for the whole clip (albumentations' ``images`` target);
    the Compose is reseeded per call from `rng`, so the same (seed, index) gives the same clip.
    """

    def __init__(
        self,
        size: int | tuple[int, int] | None,
        resize_mode: str = "squash",
        interpolation: str = "bilinear",
        channels: int = 3,
        augment: Sequence[Any] | None = None,
    ):
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize_mode {resize_mode!r}; expected one of {RESIZE_MODES}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {interpolation!r}; expected one of {tuple(INTERPOLATIONS)}"
            )
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.size = _pair(size)
        if self.size is None and resize_mode != "none":
            raise ValueError(f"resize_mode {resize_mode!r} needs a size")
        self.resize_mode = resize_mode
        self.interpolation = interpolation
        self.channels = channels
        self.augment = list(augment) if augment else []
        self._compose = self._build_compose(self.augment) if self.augment else None

    @staticmethod
    def _build_compose(transforms: list[Any]) -> Any:
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network
        import albumentations as A  # deferred: albumentations is a heavy import

        for t in transforms:
            if not isinstance(t, (A.BasicTransform, A.BaseCompose)):
                raise TypeError(
                    "augment entries must be instantiated albumentations transforms, got "
                    f"{type(t).__name__}: {t!r}"
                )
        return A.Compose(transforms, seed=0)

    @property
    def random(self) -> bool:
        """Whether the output depends on the rng (random crop or augmentation)."""
        return self.resize_mode == "random_crop" or self._compose is not None

    def _check(self, clip: Any) -> None:
        if not isinstance(clip, np.ndarray):
            raise TypeError(f"clip must be a numpy uint8 array [T, H, W, 3], got {type(clip).__name__}")
        if clip.dtype != np.uint8:
            raise TypeError(
                f"clip must be uint8 [T, H, W, 3], got dtype {clip.dtype} with shape {clip.shape}"
            )
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise ValueError(f"clip must be [T, H, W, 3] (RGB), got shape {clip.shape}")
        if min(clip.shape[:3]) < 1:
            raise ValueError(f"clip is empty: shape {clip.shape}")

    def _resize(self, clip: np.ndarray, h: int, w: int) -> np.ndarray:
        if clip.shape[1:3] == (h, w):
            return clip
        resample = INTERPOLATIONS[self.interpolation]
        out = np.empty((clip.shape[0], h, w, 3), dtype=np.uint8)  # [T, h, w, 3]
        for t, frame in enumerate(clip):
            out[t] = np.asarray(Image.fromarray(frame).resize((w, h), resample=resample))
        return out

    def __call__(self, clip: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """[T, H, W, 3] uint8 -> [T, h, w, channels] uint8. `rng` is required for random crops and
        augmentation (an error without it)."""
        self._check(clip)
        if self.random and rng is None:
            raise ValueError(
                "this transform is random (random_crop or augment): pass rng=np.random.Generator"
            )
        H, W = clip.shape[1:3]
        if self.resize_mode == "none":
            if self.size is not None and self.size != (H, W):
                raise ValueError(f"resize_mode 'none' with size {self.size} but the clip is {H}x{W} (HxW)")
            out = clip  # [T, H, W, 3]
        elif self.resize_mode == "squash":
            out = self._resize(clip, *self.size)  # [T, h, w, 3]
        else:
            h, w = self.size
            rh, rw = cover_size(H, W, h, w)
            out = self._resize(clip, rh, rw)  # [T, rh, rw, 3]
            if self.resize_mode == "center_crop":
                top, left = center_offset(rh, h), center_offset(rw, w)
            else:
                top, left = int(rng.integers(0, rh - h + 1)), int(rng.integers(0, rw - w + 1))
            out = out[:, top : top + h, left : left + w]  # [T, h, w, 3]
        if self._compose is not None:
            self._compose.set_random_seed(int(rng.integers(0, 2**32)))
            out = self._compose(images=np.ascontiguousarray(out))["images"]  # [T, h', w', 3]
            if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 4:
                raise TypeError(
                    f"augmentation must return uint8 [T, H, W, 3]; got {type(out).__name__} "
                    f"{getattr(out, 'dtype', None)} {getattr(out, 'shape', None)}"
                )
        if self.channels == 1:
            out = luma(out)  # [T, h, w, 1]
        return np.ascontiguousarray(out)

    def settings(self) -> dict[str, Any]:
        """JSON-ready record of everything that changes pixels (for manifests)."""
        aug = []
        if self.augment:
            import albumentations as A  # deferred: albumentations is a heavy import

            aug = [A.to_dict(t)["transform"] for t in self.augment]
        return {
            "size": None if self.size is None else list(self.size),  # [height, width]
            "resize_mode": self.resize_mode,
            "interpolation": self.interpolation,
            "resize_backend": f"PIL {PIL.__version__} Image.resize (antialiased)",
            "crop_rounding": "torchvision (short side floored, centre offset round((size-crop)/2))",
            "channels": self.channels,
            "luma": "ITU-R 601-2 (PIL convert('L'))" if self.channels == 1 else None,
            "augment": aug,
            "augment_version": _albumentations_version() if self.augment else None,
        }

    def __repr__(self) -> str:
        return (
            f"ClipTransform(size={self.size}, resize_mode={self.resize_mode!r}, "
            f"interpolation={self.interpolation!r}, channels={self.channels}, augment={self.augment!r})"
        )


def _albumentations_version() -> str:
    import albumentations as A  # deferred: albumentations is a heavy import

    return A.__version__
