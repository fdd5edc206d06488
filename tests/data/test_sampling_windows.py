"""Sampling-time clip selection: the evaluation rule on every split, LARP's exact windows, shard-stable."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from videxp.data import standins
from videxp.inference.shards import plan_shard
from videxp.video import read_video

NUM_CLIPS = 10
WINDOW = 16


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory) -> Path:
    """Fold-1 training videos of 40 frames (2 windows each) and one of 29 (1 window); groups 8-10 train."""
    return standins.write_ucf101(
        tmp_path_factory.mktemp("ucf"),
        classes=("ApplyEyeMakeup", "HammerThrow", "Hammering", "YoYo"),
        groups=(8, 9, 10),
        frames=40,
    )


def larp_windows(root: Path, num_samples: int, seed: int = 42) -> list[tuple[str, list[int]]]:
    """LARP `sample.py` re-stated from its logic: trainlist rows sorted by path, `use_all_frames` windows
    (frames [16 i, 16 (i + 1)) for i < len // 16 per video, in row order), then
    `random.Random(seed).sample(range(len(windows)), num_samples)` in sample order."""
    rows = (root / "ucfTrainTestlist" / "trainlist01.txt").read_text().splitlines()
    paths = sorted(str(root / "UCF-101" / line.split()[0]) for line in rows if line.strip())
    windows = []
    for path in paths:
        for i in range(len(read_video(path)) // WINDOW):
            windows.append((path, list(range(i * WINDOW, (i + 1) * WINDOW))))
    return [windows[k] for k in random.Random(seed).sample(range(len(windows)), num_samples)]


def selected(dataset, indices) -> list[tuple[str, list[int]]]:
    """(source file, frame indices) of dataset items, read through __getitem__."""
    out = []
    for i in indices:
        item = dataset[i]
        out.append((str(item["path"]), item["frames"].tolist()))
    return out


def larp_cfg(root: Path, tmp_path: Path):
    return compose_cfg(
        "sample",
        [
            "experiment=ucf101_larp",
            f"dataset.source.root={root}",
            f"dataset.clips.num_clips={NUM_CLIPS}",
            "dataset.image_size=32",
            "dataset.num_workers=0",
        ],
        tmp_path,
    )


def test_larp_preset_samples_exactly_larps_windows(ucf_root, tmp_path):
    cfg = larp_cfg(ucf_root, tmp_path)
    assert cfg.sample.split == "train"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = instantiate(cfg.dataset).dataset(cfg.sample.split, evaluation=True)
    expected = larp_windows(ucf_root, NUM_CLIPS)
    assert len(dataset) == NUM_CLIPS
    assert selected(dataset, range(NUM_CLIPS)) == expected
    # reading again gives the same windows: nothing is drawn from a global generator
    assert selected(dataset, reversed(range(NUM_CLIPS))) == expected[::-1]
    # the training loaders still draw random windows (one per video) from the same split
    training = instantiate(cfg.dataset).dataset("train")
    assert training.sampler.mode == "random" and len(training) == 12


def test_shards_and_processes_select_the_same_windows(ucf_root, tmp_path):
    cfg = larp_cfg(ucf_root, tmp_path)
    dataset = instantiate(cfg.dataset).dataset("train", evaluation=True)
    whole = selected(dataset, range(NUM_CLIPS))
    for num_shards in (2, 3):
        parts = []
        for shard in range(num_shards):
            plan = plan_shard(0, NUM_CLIPS, 1, 2, num_shards=num_shards, shard=shard)
            parts += selected(dataset, [v for v, _ in plan.items()])
        assert parts == whole, f"{num_shards} shards"
    # another process (fresh interpreter, other hash seed) plans the same list
    config = tmp_path / "dataset.yaml"
    config.write_text(OmegaConf.to_yaml(cfg.dataset, resolve=True))
    script = (
        "import json, sys; from hydra.utils import instantiate; from omegaconf import OmegaConf\n"
        "d = instantiate(OmegaConf.load(sys.argv[1])).dataset('train', evaluation=True)\n"
        "print(json.dumps([[str(d[i]['path']), d[i]['frames'].tolist()] for i in range(len(d))]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert [tuple(w) for w in json.loads(out.stdout.strip().splitlines()[-1])] == whole


def test_every_split_samples_by_the_evaluation_rule(ucf_root, tmp_path):
    """`evaluation=True` on the training split takes eval_mode / num_clips / seed and no augmentation."""
    cfg = compose_cfg(
        "sample",
        [
            "dataset=ucf101",
            f"dataset.source.root={ucf_root}",
            "dataset.clips.eval_mode=fixed",
            "dataset.image_size=32",
            "dataset.transform.augment=[{_target_: albumentations.HorizontalFlip, p: 1.0}]",
        ],
        tmp_path,
    )
    dm = instantiate(cfg.dataset)
    evaluation = dm.dataset("train", evaluation=True)
    assert evaluation.sampler.mode == "fixed" and not evaluation.transform.augment
    assert selected(evaluation, range(3)) == selected(evaluation, range(3))
    assert dm.dataset("train").transform.augment  # the training loaders keep their augmentation
