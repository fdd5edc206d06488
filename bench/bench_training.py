"""FDM training steps/s in Lightning vs a bare PyTorch loop: same tiny net, same batch, same EMA update.

Target: Lightning's step rate within 5% of the bare loop (ratio >= 0.95).
Run: .venv/bin/python bench/bench_training.py [--steps N]
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from _common import demo_module_and_data
from torch.utils.data import DataLoader, Dataset

from videxp.utils.seeding import derive_seed, torch_generator


class RepeatBatch(Dataset):
    """The same pre-built batch, over and over (no data cost in either loop)."""

    def __init__(self, batch: dict, n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.batch


def bare_loop(module, batch, steps: int, warmup: int) -> float:
    opt = module.configure_optimizers()
    module.train()
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        g = torch_generator(derive_seed(module.seed, step))
        loss = module._loss(batch["video"], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        module.on_train_batch_end(None, batch, step)
    return steps / (time.perf_counter() - t0)


class StepTimer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1 = warmup, None, None

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, *args):
        self.t1 = time.perf_counter()


def lightning_loop(module, batch, steps: int, warmup: int) -> float:
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=warmup + steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    loader = DataLoader(RepeatBatch(batch, warmup + steps), batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return steps / (timer.t1 - timer.t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    module, dm, cfg = demo_module_and_data()
    videos = torch.stack([dm.dataset("train")[i]["video"] for i in range(cfg.dataset.batch_size)])
    batch = {"video": videos}  # [B, T, C, H, W]
    bare, light = [], []
    for _ in range(args.repeats):  # interleave so drift in machine load hits both
        m, _, _ = demo_module_and_data()
        bare.append(bare_loop(m, batch, args.steps, args.warmup))
        m, _, _ = demo_module_and_data()
        light.append(lightning_loop(m, batch, args.steps, args.warmup))
    b, lt = max(bare), max(light)
    frames = videos.shape[0] * videos.shape[1]
    print(
        f"tiny FDM, batch {tuple(videos.shape)}, K={cfg.model.max_frames}, {torch.get_num_threads()} threads"
    )
    print(f"  bare PyTorch loop : {b:7.2f} steps/s  ({b * frames:8.0f} video frames/s consumed)")
    print(f"  Lightning Trainer : {lt:7.2f} steps/s")
    print(f"  ratio Lightning/bare = {lt / b:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
