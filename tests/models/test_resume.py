"""Which checkpoint training resumes from: an explicit ckpt_path that conflicts with the run's own
last.ckpt is refused naming both; a truncated last.ckpt falls back to last.prev.ckpt with a warning."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import TINY, compose_cfg

from videxp import train
from videxp.callbacks.checkpoints import MODULE_KEY, PREVIOUS
from videxp.errors import CheckpointError
from videxp.models.resume import BROKEN, STARTED_FROM, resume_checkpoint


def _ckpt(path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": {"w": torch.full((4,), float(step))}, "hyper_parameters": {}, "global_step": step},
        path,
    )


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def test_no_checkpoint_anywhere_starts_fresh(tmp_path):
    assert resume_checkpoint(tmp_path / "run", None) == (None, None)
    assert resume_checkpoint(tmp_path / "run", "random") == (None, None)


def test_an_explicit_ckpt_path_that_conflicts_with_the_runs_last_ckpt_is_refused(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other.ckpt"
    _ckpt(run / "checkpoints" / "last.ckpt", 10)
    _ckpt(other, 3)
    with pytest.raises(CheckpointError) as err:
        resume_checkpoint(run, str(other))
    message = str(err.value)
    assert str(other) in message and str(run / "checkpoints" / "last.ckpt") in message
    assert "new run_name" in message
    # the run's own folder (or its last.ckpt) is no conflict; no ckpt_path continues the run
    own = str(run / "checkpoints" / "last.ckpt")
    assert resume_checkpoint(run, str(run)) == (own, None)
    assert resume_checkpoint(run, None) == (own, None)


def test_a_rerun_with_the_ckpt_path_the_run_started_from_continues_the_run(tmp_path):
    run, start = tmp_path / "run", tmp_path / "start.ckpt"
    _ckpt(start, 3)
    assert resume_checkpoint(run, str(start)) == (str(start.resolve()), None)  # the first start
    assert (run / "checkpoints" / STARTED_FROM).is_file()
    _ckpt(run / "checkpoints" / "last.ckpt", 10)  # it trained, then was requeued with the same overrides
    assert resume_checkpoint(run, str(start)) == (str(run / "checkpoints" / "last.ckpt"), None)


def test_a_truncated_last_ckpt_falls_back_to_the_previous_one_with_a_warning(tmp_path, caplog):
    ckpts = tmp_path / "run" / "checkpoints"
    _ckpt(ckpts / "last.ckpt", 10)
    _ckpt(ckpts / PREVIOUS, 8)
    _truncate(ckpts / "last.ckpt")
    with caplog.at_level(logging.WARNING, logger="videxp.models.resume"):
        resume, _ = resume_checkpoint(tmp_path / "run", None)
    assert resume == str(ckpts / PREVIOUS)
    assert "last.ckpt (200 bytes) is not a checkpoint" in caplog.text and "previous checkpoint" in caplog.text
    assert (ckpts / BROKEN).is_file() and not (ckpts / "last.ckpt").exists()


def test_a_truncated_last_ckpt_without_a_previous_one_is_a_clear_error(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    _ckpt(ckpts / "last.ckpt", 10)
    _truncate(ckpts / "last.ckpt")
    with pytest.raises(
        CheckpointError, match=r"no usable checkpoint to resume from.*last\.ckpt \(200 bytes\)"
    ):
        resume_checkpoint(tmp_path / "run", None)


def test_training_keeps_the_previous_last_ckpt_and_resumes_from_it_when_last_is_cut_short(in_tmp, caplog):
    base = [
        *TINY,
        "trainer.val_check_interval=100",
        "trainer.limit_val_batches=0",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        *[f"~callbacks.{c}" for c in ("sample_metrics", "learning_curves", "best_checkpoint", "lr_monitor")],
        "logger=[]",
    ]
    run = in_tmp / "run"
    assert train.run(compose_cfg("train", [*base, "trainer.max_steps=4"], run)).global_step == 4
    ckpts = run / "checkpoints"
    last, previous = (torch.load(ckpts / n, weights_only=True) for n in ("last.ckpt", PREVIOUS))
    assert (last["global_step"], previous["global_step"]) == (4, 2)
    assert last[MODULE_KEY] == "videxp.models.fdm.module.FDMModule"
    assert not list(ckpts.glob(".*partial*"))
    _truncate(ckpts / "last.ckpt")  # a kill while an older videxp wrote it in place
    with caplog.at_level(logging.WARNING, logger="videxp.models.resume"):
        trainer = train.run(compose_cfg("train", [*base, "trainer.max_steps=5"], run))
    assert "resuming from the previous checkpoint" in caplog.text
    assert trainer.global_step == 5
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 5
