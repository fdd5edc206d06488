"""Clip loading from decoded-on-the-fly AVI / MP4 files vs from videxp-prepare HDF5 shards (frames/s).

Same clips both ways: 16 random-start frames at 128x128 (short side + centre crop, bilinear), batch 8,
DataLoader num_workers 0 and 2. Stand-ins: 24 UCF101-like AVIs (320x240 XVID with B-frames, 25 fps) and
24 CLEVRER-like MP4s (480x320 H.264), 120 frames each, written to a temp dir. Target: prepared >= 5x direct.
Run: .venv/bin/python bench/bench_datasets.py
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

from _common import ROOT
from hydra import compose, initialize_config_dir
from torch.utils.data import ConcatDataset, DataLoader

from videxp.data.clips import ClipSampler
from videxp.data.datamodule import ClipDataset
from videxp.data.prepare import run
from videxp.data.sources import PreparedSource, RawSource, scan_records
from videxp.data.standins import moving_shapes, write_avi, write_mp4
from videxp.data.transforms import ClipTransform

VIDEOS, FRAMES, LENGTH, SIZE, BATCH = 24, 120, 16, 128, 8


def write_trees(tmp: Path) -> dict[str, Path]:
    """A video_folder tree per container: `<root>/<class>/<name>` (the catalog puts every file in train)."""
    trees = {"avi": tmp / "avi", "mp4": tmp / "mp4"}
    for i in range(VIDEOS):
        cls = f"class{i % 4}"
        ucf = moving_shapes(FRAMES, 240, 320, seed=i)  # [T, 240, 320, 3]
        write_avi(trees["avi"] / cls / f"v_{i:03d}.avi", ucf, fps=25, codec_tag="XVID", max_b_frames=2)
        clevrer = moving_shapes(FRAMES, 320, 480, seed=100 + i)  # [T, 320, 480, 3]
        write_mp4(trees["mp4"] / cls / f"video_{i:05d}.mp4", clevrer, fps=25)
    return trees


def prepare(raw: Path, out: Path) -> None:
    overrides = [
        "dataset=video_folder", f"raw_dir={raw}", f"out_dir={out}", "preset=ucf128", f"preset.size={SIZE}",
        "splits=[train]", "workers=2", "progress=false",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=overrides)
    run(cfg)


def loader_fps(dataset: ClipDataset, workers: int, batches: int) -> float:
    loader = DataLoader(
        ConcatDataset([dataset] * 8),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    it = itertools.chain.from_iterable(itertools.repeat(loader))  # epochs back to back
    next(it)  # start-up (worker spawn, first file opens) is not throughput
    t0 = time.perf_counter()
    frames = sum(next(it)["video"].shape[:2].numel() for _ in range(batches))
    return frames / (time.perf_counter() - t0)


def main() -> None:
    sampler = ClipSampler(length=LENGTH, mode="random")
    transform = ClipTransform(SIZE, "center_crop", "bilinear")
    print(
        f"{VIDEOS} videos x {FRAMES} frames; clips of {LENGTH} frames at {SIZE}^2, centre crop, batch {BATCH}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trees = write_trees(Path(tmp))
        print(f"  stand-ins written in {time.perf_counter() - t0:.1f} s")
        for kind, raw in trees.items():
            out = Path(tmp) / f"{kind}-prepared"
            t0 = time.perf_counter()
            prepare(raw, out)
            print(f"  {kind}: prepared in {time.perf_counter() - t0:.1f} s (2 workers)")
            direct = ClipDataset(
                RawSource(scan_records("video_folder", raw, "train"), name=kind), sampler, transform
            )
            shards = ClipDataset(PreparedSource(out, "train", name="video_folder"), sampler, transform)
            for workers in (0, 2):
                slow = loader_fps(direct, workers, batches=4)
                fast = loader_fps(shards, workers, batches=20)
                print(
                    f"  {kind} workers={workers}: direct {slow:7.0f} frames/s, prepared {fast:7.0f} frames/s "
                    f"= {fast / slow:5.1f}x  (target >= 5x)"
                )


if __name__ == "__main__":
    main()
