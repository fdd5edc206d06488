"""moving_shapes and HDF5-shard loader throughput vs what one FDM training step consumes (demo size).

Target: the loader delivers at least 10x the frames a training step consumes.
Run: .venv/bin/python bench/bench_loader.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _common import demo_module_and_data
from torch.utils.data import DataLoader

from videxp.data.moving_shapes import MovingShapes, materialize
from videxp.utils.seeding import derive_seed, torch_generator


def loader_fps(dataset, batch_size: int, workers: int, batches: int = 40) -> float:
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    it = iter(loader)
    next(it)  # start-up (worker spawn) is not throughput
    t0 = time.perf_counter()
    frames = 0
    for _ in range(batches):
        frames += next(it)["video"].shape[:2].numel()
    return frames / (time.perf_counter() - t0)


def training_fps(module, videos: torch.Tensor, steps: int = 15) -> float:
    opt = module.configure_optimizers()
    for step in range(steps + 3):
        if step == 3:
            t0 = time.perf_counter()
        loss = module._loss(videos, torch_generator(derive_seed(0, step)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * videos.shape[0] * videos.shape[1] / (time.perf_counter() - t0)


def main() -> None:
    module, dm, cfg = demo_module_and_data()
    B = cfg.dataset.batch_size
    train = dm.dataset("train")
    need = training_fps(module, torch.stack([train[i]["video"] for i in range(B)]))
    print(f"demo size: {cfg.dataset.video_length} frames x {cfg.dataset.image_size}^2, batch {B}")
    print(f"  one training step consumes {need:9.0f} frames/s (tiny FDM, CPU)")
    with tempfile.TemporaryDirectory() as tmp:
        src = cfg.dataset.source
        kw = dict(
            num_videos={"train": 512, "val": 4, "test": 4},
            video_length=src.video_length,
            image_size=src.image_size,
            num_sprites=src.num_sprites,
            sprite_size=list(src.sprite_size),
            seed=src.seed,
        )
        materialize(MovingShapes(split="train", **kw), Path(tmp))
        sharded = type(train)(
            MovingShapes(split="train", root=tmp, **kw), cfg.dataset.video_length, random_window=True
        )
        for name, ds in (("moving_shapes (generated)", train), ("moving_shapes (HDF5 shards)", sharded)):
            for workers in (0, 2):
                fps = loader_fps(ds, B, workers)
                print(
                    f"  {name:28s} workers={workers}: {fps:9.0f} frames/s = {fps / need:6.1f}x a train step"
                    "  (target >= 10x)"
                )


if __name__ == "__main__":
    main()
