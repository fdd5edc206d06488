"""The Lightning DataModule shared by every dataset: a source per split, clip sampling, frame transforms."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from videxp.data.clips import ClipSampler
from videxp.data.order import ResumableShuffle, item_rng, training_order
from videxp.data.records import DEFAULT_PROMPT, SPLITS, class_prompt
from videxp.data.sources import VideoSource
from videxp.data.transforms import ClipTransform
from videxp.video import to_float

log = logging.getLogger(__name__)


class ClipDataset(Dataset):
    """Clips of a source as items for models and the sampling loop.

    Item: ``video`` float [T, C, H, W] in [-1, 1]; ``index`` (clip index); ``video_id``; ``label`` (class
    index, -1 where the dataset has no classes); ``prompt`` (from the class and `prompt_template`);
    ``path`` (source file) and ``frames`` (int64 [T] source frame indices within the record).

    The clips are planned once by `sampler` over the source's videos. ``random`` windows draw their start
    (and random crops / augmentations) per access from torch's generator, so DataLoader worker seeding
    applies; every other mode is a pure function of (sampler seed, clip index).
    """

    def __init__(
        self,
        source: VideoSource,
        sampler: ClipSampler,
        transform: ClipTransform,
        prompt_template: str = DEFAULT_PROMPT,
    ):
        self.source = source
        self.sampler = sampler
        self.transform = transform
        self.prompt_template = prompt_template
        n = len(source)
        self._frames = [source.num_frames(i) for i in range(n)]
        fps = [source.fps(i) for i in range(n)] if sampler.target_fps is not None else None
        self.windows = sampler.plan(self._frames, fps)
        for video, reason in sampler.skipped:
            log.warning("skipped %s: %s", source.record(video).video_id, reason)
        if not self.windows:
            raise ValueError(
                f"no clip of {sampler.length} frames fits any of the {n} videos "
                f"({len(sampler.skipped)} skipped as too short)"
            )

    def __len__(self) -> int:
        return len(self.windows)

    def video_id(self, i: int) -> str:
        return self.source.record(self.windows[i].video).video_id

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Clip `key`, or `(clip, draw)` from ResumableShuffle (random windows seeded by the draw)."""
        i, draw = key if isinstance(key, tuple) else (key, None)
        window = self.windows[i]
        rng = item_rng(self.sampler.seed, i, draw, self.sampler.mode == "random")
        n = self._frames[window.video]
        start = self.sampler.draw_start(window, n, rng)
        indices = self.sampler.frame_indices(window, start, n)  # [T]
        record = self.source.record(window.video)
        frames = self.source.read(window.video, indices)  # [T, H, W, 3] uint8
        clip = self.transform(frames, rng)  # [T, h, w, C] uint8
        return {
            "video": to_float(clip),  # [T, C, h, w]
            "index": i,
            "video_id": record.video_id,
            "label": -1 if record.label is None else int(record.label),
            "prompt": class_prompt(record.class_name, self.prompt_template),
            "path": record.path,
            "frames": torch.from_numpy(indices),
        }


def _training_rule(split: str, evaluation: bool | None) -> bool:
    """Whether clips follow the training rule: `evaluation` decides; None = only the "train" split does."""
    return split == "train" if evaluation is None else not evaluation


class VideoDataModule(L.LightningDataModule):
    """Train/val/test loaders: `source(split=...)` per split, clips per `clips`, frames per `transform`.

    `clips`: ``stride`` / ``target_fps`` (frame step), ``train_mode`` (default ``random``), ``eval_mode``
    (val/test, default ``fixed``), ``num_clips`` (val/test clips; null = one per video), ``seed``, ``pad``.
    `transform`: ``resize_mode``, ``interpolation`` and ``augment`` (albumentations transforms, training
    split only); the output size is `image_size`.
    """

    def __init__(
        self,
        source: Callable[..., VideoSource],
        name: str,
        video_length: int,
        image_size: int | Sequence[int],
        channels: int = 3,
        fps: float = 8.0,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        clips: Mapping[str, Any] | None = None,
        transform: Mapping[str, Any] | None = None,
        prompt_template: str = DEFAULT_PROMPT,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.source = source
        self.name = name
        self.video_length = int(video_length)
        self.image_size = image_size
        self.channels = channels
        self.fps = fps
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.clips = dict(clips or {})
        self.transform = dict(transform or {})
        self.prompt_template = prompt_template
        self._datasets: dict[tuple[str, bool], ClipDataset] = {}  # (split, training rule) -> dataset

    def sampler(self, split: str, evaluation: bool | None = None) -> ClipSampler:
        """The clip sampler of one split: the evaluation rule (`clips.eval_mode`, `num_clips`) or the
        training rule (`clips.train_mode`); `evaluation=None` takes the training rule for "train" only."""
        c = self.clips
        train = _training_rule(split, evaluation)
        return ClipSampler(
            length=self.video_length,
            stride=int(c.get("stride", 1)),
            target_fps=c.get("target_fps"),
            mode=c.get("train_mode", "random") if train else c.get("eval_mode", "fixed"),
            num_clips=None if train else c.get("num_clips"),
            seed=int(c.get("seed", 0)),
            pad=c.get("pad", "error"),
        )

    def clip_transform(self, split: str, evaluation: bool | None = None) -> ClipTransform:
        """The frame transform of one split (augmentations only under the training rule, as `sampler`)."""
        train = _training_rule(split, evaluation)
        t = self.transform
        size = self.image_size if isinstance(self.image_size, int) else tuple(self.image_size)
        return ClipTransform(
            size=size,
            resize_mode=t.get("resize_mode", "squash"),
            interpolation=t.get("interpolation", "bilinear"),
            channels=self.channels,
            augment=list(t.get("augment") or []) if train else None,
        )

    def dataset(self, split: str, evaluation: bool | None = None) -> ClipDataset:
        """The clip dataset of one split (built once per rule).

        `evaluation=True` selects clips by the evaluation rule whatever the split: sampling and scoring
        pass it, so `sample.split=train` reads the fixed, reproducible windows of `clips.eval_mode` /
        `num_clips` / `seed` (LARP's protocol samples its training split so), never training's random
        windows. `None` (the loaders) takes the training rule for "train" and the evaluation rule otherwise.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        train = _training_rule(split, evaluation)
        key = (split, train)
        if key not in self._datasets:
            self._datasets[key] = ClipDataset(
                self.source(split=split),
                self.sampler(split, evaluation=not train),
                self.clip_transform(split, evaluation=not train),
                self.prompt_template,
            )
        return self._datasets[key]

    def _loader(self, split: str, shuffle: bool, sampler: ResumableShuffle | None = None) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=shuffle,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training clips. On one process the order is a stream fixed by the run seed and read
        from the batches already done (ResumableShuffle): a resumed run continues it exactly. Several
        processes (DDP) keep Lightning's distributed sampler, which restarts the epoch on resume."""
        order = training_order(self.trainer, len(self.dataset("train")), self.batch_size)
        return self._loader("train", shuffle=True, sampler=order)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
