"""The Lightning DataModule shared by every dataset: a clip source per split, wrapped as float clips."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from videxp.video import to_float

SPLITS = ("train", "val", "test")


class VideoSource(Protocol):
    """What a dataset split provides: uint8 [T, H, W, 3] videos by index."""

    def __len__(self) -> int: ...

    def clip(self, i: int) -> np.ndarray: ...

    def video_id(self, i: int) -> str: ...


class ClipDataset(Dataset):
    """Items {"video": float [T, C, H, W] in [-1, 1], "index", "video_id"} of `clip_length` frames.

    Videos longer than `clip_length` give a window: random when `random_window` (training), else
    the first `clip_length` frames (evaluation). Shorter videos are an error naming the video.
    """

    def __init__(self, source: VideoSource, clip_length: int, random_window: bool = False, seed: int = 0):
        self.source = source
        self.clip_length = clip_length
        self.random_window = random_window
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        video = self.source.clip(i)  # [T, H, W, 3] uint8
        T = video.shape[0]
        if self.clip_length > T:
            raise ValueError(
                f"video {self.source.video_id(i)!r} has {T} frames, fewer than the clip length "
                f"{self.clip_length}"
            )
        start = 0
        if self.random_window and self.clip_length < T:
            start = int(torch.randint(0, T - self.clip_length + 1, ()))
        clip = video[start : start + self.clip_length]
        return {"video": to_float(clip), "index": i, "video_id": self.source.video_id(i)}


class VideoDataModule(L.LightningDataModule):
    """Train/val/test loaders over a clip source built per split by `source(split=...)`."""

    def __init__(
        self,
        source: Callable[..., VideoSource],
        name: str,
        video_length: int,
        image_size: int,
        channels: int = 3,
        fps: float = 8.0,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.source = source
        self.name = name
        self.video_length = video_length
        self.image_size = image_size
        self.channels = channels
        self.fps = fps
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self._datasets: dict[str, ClipDataset] = {}

    def dataset(self, split: str) -> ClipDataset:
        """The clip dataset of one split (built once)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if split not in self._datasets:
            self._datasets[split] = ClipDataset(
                self.source(split=split), self.video_length, random_window=(split == "train")
            )
        return self._datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=shuffle,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
