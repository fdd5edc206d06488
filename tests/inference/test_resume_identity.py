"""An interrupted sampling run resumes only with the settings that made its first samples: the identity
is on disk (samples/identity.json) before the first sample is written and checked on every rerun."""

from __future__ import annotations

import json

import pytest
import torch

from videxp.errors import RunFolderError
from videxp.inference.generator import Capabilities, Generator
from videxp.inference.loop import IDENTITY, MANIFEST, run_sampling

INFERENCE = {"name": "autoreg", "video_length": 6, "obs_length": 2, "step_size": 4, "max_frames": None}
VIDEOS = [{"video": torch.rand(6, 1, 4, 4) * 2 - 1, "video_id": f"v{i}"} for i in range(4)]


class Interrupted(Exception):
    """Stands for the process being killed."""


class Copies(Generator):
    """Repeats the last observed frame; `fail_after` calls raise, as a kill in the middle of a run."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.capabilities = Capabilities(max_frames=6)
        self.fail_after, self.calls = fail_after, 0

    def generate(self, frames, observed, target, cond, seeds):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise Interrupted
        self.calls += 1
        return frames[:, -1:].expand(-1, len(target), -1, -1, -1).clone()  # [B, n, C, H, W]


def _sample(tmp_path, generator: Generator, seed: int = 0, **header):
    return run_sampling(
        generator, VIDEOS, inference=INFERENCE, out_dir=tmp_path, batch_size=1, seed=seed,
        video_format="none", grid_videos=0, manifest={"checkpoint": "a.ckpt", **header},
    )  # fmt: skip


def _interrupted_run(tmp_path) -> None:
    """Two of four videos written, then killed: no manifest yet, only samples (and the identity)."""
    with pytest.raises(Interrupted):
        _sample(tmp_path, Copies(fail_after=2))
    samples = tmp_path / "samples"
    assert sorted(p.name for p in samples.glob("*.npy")) == ["sample_0000-0.npy", "sample_0001-0.npy"]
    assert not (samples / MANIFEST).exists() and (samples / IDENTITY).is_file()


def test_an_interrupted_run_resumed_with_another_seed_is_refused(tmp_path):
    _interrupted_run(tmp_path)
    with pytest.raises(RunFolderError) as err:
        _sample(tmp_path, Copies(), seed=1)
    message = str(err.value)
    assert str(tmp_path / "samples" / IDENTITY) in message
    assert "seed: 0 there, 1 now" in message and "new run_name" in message
    assert not (tmp_path / "samples" / MANIFEST).exists()  # nothing was added


def test_an_interrupted_run_resumed_with_other_sampler_settings_is_refused(tmp_path):
    _interrupted_run(tmp_path)
    with pytest.raises(RunFolderError, match=r"model\.steps: null there, 8 now"):
        _sample(tmp_path, Copies(), model={"steps": 8})


def test_an_interrupted_run_resumed_with_the_same_settings_continues(tmp_path):
    _interrupted_run(tmp_path)
    summary = _sample(tmp_path, Copies())
    assert summary["written"] == 2 and summary["skipped"] == 2
    manifest = json.loads((tmp_path / "samples" / MANIFEST).read_text())
    assert [e["video"] for e in manifest["samples"]] == [0, 1, 2, 3] and manifest["seed"] == 0


def test_samples_without_any_record_of_their_settings_are_refused(tmp_path):
    _interrupted_run(tmp_path)
    (tmp_path / "samples" / IDENTITY).unlink()  # a folder of an older videxp, killed mid-run
    with pytest.raises(RunFolderError, match="settings that made them are unknown"):
        _sample(tmp_path, Copies())
