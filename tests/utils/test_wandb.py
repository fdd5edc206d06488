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


def _folders(root):
    """Two folders of 3 paired uint8 npy videos [6, 32, 32, 3]."""
    import numpy as np

    g = np.random.default_rng(0)
    for side in ("real", "fake"):
        (root / side).mkdir(parents=True)
    for i in range(3):
        clip = g.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
        np.save(root / "real" / f"v{i}.npy", clip)
        np.save(root / "fake" / f"v{i}.npy", np.clip(clip.astype(int) + 20, 0, 255).astype(np.uint8))
    return root / "real", root / "fake"


def logged_json(raw: bytes, key: str):
    """The value logged for a summary / history `key` in an offline run's .wandb records: the protobuf item
    (field 1 = key, field 16 = value_json; short values only)."""
    import json
    import re

    k = key.encode()
    match = re.search(re.escape(b"\n" + bytes([len(k)]) + k + b"\x82\x01"), raw)
    assert match, f"{key} was not logged"
    n = raw[match.end()]
    return json.loads(raw[match.end() + 1 : match.end() + 1 + n])


def test_evaluate_logs_values_tables_and_curves_to_an_offline_run(tmp_path, monkeypatch):
    import json

    from videxp import evaluate

    monkeypatch.setenv("WANDB_MODE", "offline")
    real, fake = _folders(tmp_path)
    out = tmp_path / "out"
    cfg = compose_cfg(
        "evaluate", [f"real_dir={real}", f"fake_dir={fake}", "logger=wandb", "run_name=ev"], out
    )
    results = evaluate.run(cfg)
    (run,) = sorted((out / "wandb").glob("offline-run-*"))
    assert run.name.endswith(wandb_run.run_id(out))
    raw = next(run.glob("run-*.wandb")).read_bytes()  # the offline run's record log (protobuf)
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("psnr", "ssim"):
        assert logged_json(raw, name) == metrics[name]["value"] == results[name]["value"]
    table = next((run / "files").rglob("per_video*.table.json"))
    doc = json.loads(table.read_text())
    assert doc["columns"] == ["video", "sample", "psnr", "ssim"] and len(doc["data"]) == 3
    frames = json.loads(next((run / "files").rglob("per_frame_*.table.json")).read_text())
    assert [row[0] for row in frames["data"]] == list(range(6))  # one point per frame of the curves


def test_only_the_job_that_finalises_a_sharded_run_logs_it(tmp_path, monkeypatch):
    from videxp import sample

    calls = []
    monkeypatch.setattr(sample, "log_results", lambda cfg, folder: calls.append(str(folder)))
    cfg = compose_cfg("sample", ["logger=wandb"], tmp_path)
    for status, logged in (("waiting", 0), ("busy", 0), ("done", 0), ("finalised", 1)):

        class Shard:
            def sample(self, cfg, status=status):
                return {"finalise": {"status": status}}

        monkeypatch.setattr(sample, "load_workflow", lambda cfg: Shard())
        calls.clear()
        sample.run(cfg)
        assert len(calls) == logged, status


def test_comparison_and_benchmark_tables_flatten_one_row_per_run():
    from videxp.utils.wandb_results import flat_rows

    comp = {"runs": ["a", "b"], "metrics": {"psnr": {"values": {"a": 20.0, "b": 21.0}}}}
    assert flat_rows(comp) == (["run", "psnr"], [["a", 20.0], ["b", 21.0]])
    bench = {"methods": {"wan2.1_i2v": {"fvd": 40.7, "num_videos": 70, "metrics": {"fvd": 40.7}}}}
    assert flat_rows(bench) == (["run", "fvd", "num_videos"], [["wan2.1_i2v", 40.7, 70]])
    assert flat_rows({"value": 1}) is None


def test_a_sweep_job_is_named_by_its_overrides(tmp_path, monkeypatch):
    """logger=wandb in a Hydra multirun: group = the sweep (run_name), name = the job's overrides."""
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    job = OmegaConf.create({"num": 3, "override_dirname": "model.sampling.steps=10"})
    fake = SimpleNamespace(mode=RunMode.MULTIRUN, job=job)
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: fake))
    cfg = compose_cfg("sample", ["logger=wandb", "run_name=sweep1"], tmp_path)
    node = wandb_run.prepare(cfg.logger.wandb, cfg)
    assert node.name == "model.sampling.steps=10" and node.group == "sweep1"
