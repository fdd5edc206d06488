"""videxp-sample refuses what would be silently wrong: random weights nobody asked for, and a checkpoint
replaced at the same path mixing its samples with the old one's in one folder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import TINY, compose_cfg, save_lightning_checkpoint
from hydra.utils import instantiate

from videxp import sample
from videxp.errors import CheckpointError, RunFolderError
from videxp.weights.registry import sha256_file

FAST = [*TINY, "sample.batch_size=2", "sample.video_format=none", "sample.finalise=false", "device=cpu"]
FAST += ["sample.schedule_png=false", "sample.grid_videos=0"]


def _checkpoint(path, seed: int) -> str:
    """A tiny FDM Lightning checkpoint with weights drawn from `seed`; returns its sha256."""
    torch.manual_seed(seed)
    save_lightning_checkpoint(path, instantiate(compose_cfg("sample", TINY, path.parent).model))
    return sha256_file(path)


def test_sampling_without_a_checkpoint_is_refused_before_anything_is_written(tmp_path):
    cfg = compose_cfg("sample", [*FAST, "sample.stop_index=2"], tmp_path / "out")
    with pytest.raises(CheckpointError, match="ckpt_path=random"):
        sample.run(cfg)
    assert not (tmp_path / "out" / "samples").exists()


def test_random_weights_on_purpose_are_recorded_in_the_manifest(tmp_path):
    cfg = compose_cfg("sample", [*FAST, "sample.stop_index=2", "ckpt_path=random"], tmp_path / "out")
    manifest = sample.run(cfg)["manifest"]
    assert manifest["checkpoint"] == "random" and manifest["weights"] == "random"


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_checkpoint_replaced_at_the_same_path_is_refused(tmp_path, interrupted):
    ckpt, out = tmp_path / "model.ckpt", tmp_path / "out"
    first = _checkpoint(ckpt, seed=0)
    over = [*FAST, f"ckpt_path={ckpt}"]
    summary = sample.run(compose_cfg("sample", [*over, "sample.stop_index=2"], out))
    assert summary["manifest"]["checkpoint_sha256"] == first
    if interrupted:  # killed before the manifest was written: only the samples (and identity.json) remain
        (out / "samples" / "manifest.json").unlink()
        shutil.rmtree(out / "samples" / "manifest.parts")
    second = _checkpoint(ckpt, seed=1)  # "train more", same path
    assert second != first
    with pytest.raises(RunFolderError) as err:
        sample.run(compose_cfg("sample", [*over, "sample.stop_index=4"], out))
    message = str(err.value)
    assert f'checkpoint_sha256: "{first}" there, "{second}" now' in message and "new run_name" in message
    assert sorted(p.name for p in (out / "samples").glob("*.npy")) == [
        "sample_0000-0.npy",
        "sample_0001-0.npy",
    ]
    _checkpoint(ckpt, seed=0)  # the same weights again: the run continues
    again = sample.run(compose_cfg("sample", [*over, "sample.stop_index=4"], out))
    assert again["written"] == 2 and again["skipped"] == 2
    assert json.loads((out / "samples" / "manifest.json").read_text())["checkpoint_sha256"] == first
