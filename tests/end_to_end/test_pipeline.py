"""train -> sample -> evaluate through the real entry points on moving_shapes with a tiny FDM."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY, compose_cfg
from PIL import Image

from videxp import evaluate, sample, train
from videxp.video import to_uint8

TRAIN = [
    *TINY,
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "callbacks.last_checkpoint.every_n_train_steps=2",
]


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run shared by the tests of this module."""
    run_dir = tmp_path_factory.mktemp("train")
    cfg = compose_cfg("train", TRAIN, run_dir)
    trainer = train.run(cfg)
    return run_dir, trainer


def _sample(tmp_path, ckpt, name, *extra):
    out = tmp_path / name
    cfg = compose_cfg("sample", [*TINY, f"ckpt_path={ckpt}", "sample.batch_size=2", *extra], out)
    return out, sample.run(cfg)


def test_train_writes_checkpoints_and_validation_metrics(trained):
    run_dir, trainer = trained
    assert trainer.global_step == 6
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    rows = read_csv(run_dir / "csv" / "version_0" / "metrics.csv")
    psnr = [float(r["val/psnr"]) for r in rows if r.get("val/psnr")]
    assert len(psnr) == 2 and all(0 < p < 100 for p in psnr)
    # the baselines are logged beside the model, and the learning curves drawn from the same numbers
    for key in ("val/psnr_repeat_last", "val/psnr_blank", "val/ssim_repeat_last", "val/ssim_blank"):
        assert len([r for r in rows if r.get(key)]) == 2, key
    assert (run_dir / "curves.png").stat().st_size > 0
    curves = next(c for c in trainer.callbacks if type(c).__name__ == "LearningCurves")
    assert [v["step"] for v in curves.val] == [3, 6] and curves.val[-1]["val/psnr"] == pytest.approx(psnr[-1])
    assert len(curves.train) == 6  # log_every_n_steps=1: one loss point per step


def test_sample_then_evaluate(trained, tmp_path):
    run_dir, _ = trained
    out, summary = _sample(tmp_path, run_dir, "s", "sample.num_samples=2", "sample.stop_index=4")
    files = sorted((out / "samples").glob("*.npy"))
    assert [f.name for f in files] == [f"sample_{v:04d}-{k}.npy" for v in range(4) for k in range(2)]
    manifest = json.loads((out / "samples" / "manifest.json").read_text())
    assert manifest["inference"] == {
        "name": "autoreg",
        "video_length": 8,
        "obs_length": 2,
        "step_size": 3,
        "max_frames": 6,
    }
    assert manifest["checkpoint"].endswith("last.ckpt") and len(manifest["samples"]) == 8
    assert {"git", "packages", "device"} <= set(manifest["provenance"])
    assert (out / "schedule.png").stat().st_size > 0 and list((out / "videos").glob("grid_*.gif"))
    still = np.asarray(
        Image.open(next((out / "videos").glob("grid_*.png")))
    )  # 4 videos x (truth + 2 samples)
    assert still.shape[0] > still.shape[1] / 8 and still.shape[2] == 3

    # observed frames come out of sampling unchanged; generated ones are new
    cfg = compose_cfg("sample", TINY, tmp_path)
    from hydra.utils import instantiate

    dataset = instantiate(cfg.dataset).dataset("test")
    for v in range(4):
        real = to_uint8(dataset[v]["video"])  # [T, H, W, C]
        fake = np.load(out / "samples" / f"sample_{v:04d}-0.npy")
        assert fake.shape == real.shape and fake.dtype == np.uint8
        assert np.array_equal(fake[:2], real[:2])
        assert not np.array_equal(fake[2:], real[2:])

    ecfg = compose_cfg("evaluate", [*TINY, f"eval_dir={out / 'samples'}"], tmp_path / "e")
    results = evaluate.run(ecfg)
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert 0 < report["psnr"]["value"] < 60 and -1 < report["ssim"]["value"] < 1
    assert report["psnr"]["value"] == pytest.approx(results["psnr"]["value"])
    assert report["scored_frames"] == [2, 8]
    rows = read_csv(tmp_path / "e" / "per_frame.csv")
    assert len(rows) == 4 * 2 * 6 and {"psnr", "ssim"} <= set(rows[0])
    # per-frame PSNR agrees with a direct computation from the files and the regenerated reference
    fake = np.load(out / "samples" / "sample_0003-1.npy").astype(np.float64) / 255
    real = to_uint8(dataset[3]["video"]).astype(np.float64) / 255
    direct = [10 * np.log10(1 / np.mean((fake[t] - real[t]) ** 2)) for t in range(2, 8)]
    logged = [float(r["psnr"]) for r in rows if r["video"] == "3" and r["sample"] == "1"]
    assert np.allclose(logged, direct, atol=1e-9)

    # rerun: everything is already there, nothing is rewritten
    mtime = files[0].stat().st_mtime_ns
    _, again = _sample(tmp_path, run_dir, "s", "sample.num_samples=2", "sample.stop_index=4")
    assert again["written"] == 0 and again["skipped"] == 8 and files[0].stat().st_mtime_ns == mtime


def test_split_equals_unsplit(trained, tmp_path):
    run_dir, _ = trained
    whole, _ = _sample(tmp_path, run_dir, "whole", "sample.stop_index=4")
    _sample(tmp_path, run_dir, "split", "sample.stop_index=2")
    _sample(tmp_path, run_dir, "split", "sample.start_index=2", "sample.stop_index=4")
    for v in range(4):
        name = f"sample_{v:04d}-0.npy"
        assert (whole / "samples" / name).read_bytes() == (tmp_path / "split" / "samples" / name).read_bytes()


def test_other_settings_do_not_mix_into_a_samples_folder(trained, tmp_path):
    run_dir, _ = trained
    _sample(tmp_path, run_dir, "s", "sample.stop_index=2")
    with pytest.raises(ValueError, match="different inference"):
        _sample(tmp_path, run_dir, "s", "sample.stop_index=2", "inference=hierarchy-2")


def test_resume_continues_the_step_count(in_tmp):
    base = [
        *TINY,
        "run_name=resume",
        "trainer.log_every_n_steps=1",
        "trainer.val_check_interval=100",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        "logger=csv",
    ]
    first = compose_cfg("train", [*base, "trainer.max_steps=4"], in_tmp / "run")
    assert train.run(first).global_step == 4
    second = compose_cfg("train", [*base, "trainer.max_steps=7"], in_tmp / "run")
    assert train.run(second).global_step == 7
    steps = [
        [
            int(r["step"])
            for r in read_csv(in_tmp / "run" / "csv" / f"version_{v}" / "metrics.csv")
            if r.get("train/loss")
        ]
        for v in (0, 1)
    ]
    assert steps == [[0, 1, 2, 3], [4, 5, 6]], (
        "the second run continued at step 4, repeating and skipping nothing"
    )


def test_cli_entry_points(in_tmp):
    """The console entry points run as a user runs them, writing under outputs/<task>/<run_name>."""
    common = [*TINY, "run_name=cli", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    subprocess.run([sys.executable, "-m", "videxp.train", *common], check=True, cwd=in_tmp)
    ckpt = in_tmp / "outputs/train/cli/checkpoints/last.ckpt"
    assert ckpt.is_file()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "videxp.sample",
            *common,
            "ckpt_path=outputs/train/cli",
            "sample.stop_index=2",
            "sample.batch_size=2",
        ],
        check=True,
        cwd=in_tmp,
    )
    assert (in_tmp / "outputs/sample/cli/samples/manifest.json").is_file()
    out = subprocess.run(
        [sys.executable, "-m", "videxp.evaluate", *common, "eval_dir=outputs/sample/cli/samples"],
        check=True,
        cwd=in_tmp,
        capture_output=True,
        text=True,
    )
    assert "psnr" in out.stdout and (in_tmp / "outputs/evaluate/cli/metrics.json").is_file()
    assert ROOT.joinpath("conf", "train.yaml").is_file()


def test_wandb_offline_run_holds_the_validation_video(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    over = [*TINY, "logger=wandb", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    train.run(compose_cfg("train", over, tmp_path))
    assert (tmp_path / "val_samples" / "step_0000002.gif").stat().st_size > 0
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one offline wandb run under the run folder"
    assert list(runs[0].glob("files/media/videos/val/samples_*.gif"))


def test_fdm_fvd_protocol_on_a_samples_folder(trained, tmp_path):
    """FDM's FVD protocol on samples: full clips incl. the observed prefix, one FVD per sample index."""
    from stand_in_detector import Counting

    from videxp.metrics import FVD

    run_dir, _ = trained
    out, _ = _sample(tmp_path, run_dir, "s", "sample.num_samples=2", "sample.stop_index=4")
    ecfg = compose_cfg("evaluate", [*TINY, f"eval_dir={out / 'samples'}"], tmp_path / "e")
    fvd = FVD(protocol="fdm", detector=Counting(), cache_dir=str(tmp_path / "stats"))
    results = evaluate.run(ecfg, metrics={"fvd": fvd})
    res = results["fvd"]
    assert len(res["per_sample"]) == 2 and res["value"] == pytest.approx(
        np.mean(list(res["per_sample"].values()))
    )
    assert res["settings"]["include_context"] is True and res["num_real"] == 4
