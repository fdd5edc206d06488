"""logger=wandb: offline runs hold the validation video, one stable id per run folder, lr monitor."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import TINY, compose_cfg
from lightning.pytorch.callbacks import LearningRateMonitor

from videxp import train
from videxp.utils import wandb_run


def test_offline_run_logs_the_video_and_a_rerun_keeps_the_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    over = [*TINY, "logger=wandb", "run_name=fixed", "trainer.val_check_interval=2"]
    over += ["callbacks.last_checkpoint.every_n_train_steps=2"]
    cfg = compose_cfg("train", [*over, "trainer.max_steps=2"], tmp_path)
    assert cfg.logger.wandb.mode == "offline" and cfg.logger.wandb.group == "fixed"
    train.run(cfg)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert runs[0].name.endswith(wandb_run.run_id(tmp_path)), "the id derives from the run folder"
    videos = list((runs[0] / "files" / "media" / "videos").rglob("*.gif"))
    assert videos and videos[0].stat().st_size > 0
    # a rerun (or a requeued job) of the same run folder resumes last.ckpt and writes under the same id
    train.run(compose_cfg("train", [*over, "trainer.max_steps=3"], tmp_path))
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))  # one folder per second of start time
    assert runs and {r.name.rsplit("-", 1)[1] for r in runs} == {wandb_run.run_id(tmp_path)}


def test_run_id_is_deterministic_per_run_folder(tmp_path):
    a = compose_cfg("train", ["logger=wandb", "run_name=fixed"], tmp_path / "fixed")
    b = compose_cfg("train", ["logger=wandb", "run_name=fixed"], tmp_path / "fixed")
    c = compose_cfg("train", ["logger=wandb", "run_name=other"], tmp_path / "other")
    ids = [wandb_run.prepare(x.logger.wandb, x).id for x in (a, b, c)]
    assert ids[0] == ids[1] != ids[2] and len(ids[0]) == 16
    node = wandb_run.prepare(a.logger.wandb, a)
    assert node.name == "fixed" and node.group == "fixed" and node.job_type == "train"
    pinned = compose_cfg("train", ["logger=wandb", "logger.wandb.id=abc"], tmp_path)
    assert wandb_run.prepare(pinned.logger.wandb, pinned).id == "abc"


def test_bad_settings_and_missing_wandb_are_clear_errors(tmp_path, monkeypatch):
    cfg = compose_cfg("train", ["logger=wandb", "logger.wandb.mode=dryrun"], tmp_path)
    with pytest.raises(ValueError, match=r"logger.wandb .*mode='dryrun'.*online, offline, disabled"):
        wandb_run.prepare(cfg.logger.wandb, cfg)
    cfg = compose_cfg("train", ["logger=wandb", "logger.wandb.log_model=true"], tmp_path)
    with pytest.raises(ValueError, match="log_model needs mode=online"):
        wandb_run.prepare(cfg.logger.wandb, cfg)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    cfg = compose_cfg("train", ["logger=wandb"], tmp_path)
    with pytest.raises(ModuleNotFoundError, match=r"conf/logger/wandb.yaml.*pip install.*logger=csv"):
        train._loggers(cfg)


def test_lr_monitor_only_with_a_logger(tmp_path):
    cfg = compose_cfg("train", TINY, tmp_path)
    assert any(isinstance(c, LearningRateMonitor) for c in train._callbacks(cfg, has_logger=True))
    assert not any(isinstance(c, LearningRateMonitor) for c in train._callbacks(cfg, has_logger=False))
