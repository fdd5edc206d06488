"""videxp on a real SLURM (tests/slurm/cluster.sh): sweeps, arrays, requeue, preemption, DDP, failures."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, compose_cfg
from slurm_helpers import (
    job_ids,
    last_step,
    logged_losses,
    slurm_cluster,
    start_requeued_at_once,
    submit,
    wait_for,
)

from videxp import sample
from videxp.status import scheduler_states
from videxp.video.io import write_video

pytestmark = pytest.mark.slurm
__all__ = ["slurm_cluster"]  # the session fixture, imported for pytest

TRAIN = [
    *TINY,
    "logger=csv",
    "trainer.val_check_interval=1000",  # training steps only
    "trainer.log_every_n_steps=1",
    "callbacks.last_checkpoint.every_n_train_steps=1",  # last.ckpt after every step
]


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _hold(tmp_path, step: int) -> list[str]:
    return [
        "+callbacks.hold._target_=slurm_helpers.HoldFirstAttempt",
        f"+callbacks.hold.marker={tmp_path / 'held'}",
        f"+callbacks.hold.step={step}",
    ]


def _attempts(tmp_path) -> list[str]:
    return (tmp_path / "held.attempts").read_text().split("\n")[:-1]


def test_training_sweep_of_two_jobs(slurm_cluster, tmp_path):
    _ok(
        submit(
            slurm_cluster,
            tmp_path,
            "train",
            *TRAIN,
            "trainer.max_steps=2",
            "run_name=lr",
            "model.optim.lr=1e-3,2e-3",
        )
    )
    sweep = tmp_path / "multirun/train/lr"
    for num, lr in ((0, 1e-3), (1, 2e-3)):
        assert last_step(sweep / str(num)) == 2
        assert f"model.optim.lr={lr}" in (sweep / str(num) / ".hydra/overrides.yaml").read_text()
    ids = job_ids(sweep)
    assert len(ids) == 2 and ids[0].split("_")[0] == ids[1].split("_")[0]  # one array
    assert scheduler_states(ids) == dict.fromkeys(ids, "COMPLETED")  # sacct: accounting works
    status = subprocess.run(
        [sys.executable, "-m", "videxp.status", str(sweep)], env=slurm_cluster, capture_output=True, text=True
    )
    assert "2 job(s): 2 completed" in status.stdout, status.stdout + status.stderr


def _resumed(tmp_path, run) -> None:
    """One requeue; the second attempt started from the first one's last.ckpt; one loss history 0..3."""
    (first, second) = (line.split() for line in _attempts(tmp_path))
    assert first == ["0", "0"] and second[0] == "1"
    assert int(second[1]) in (2, 3)  # held at step 2; a SIGTERM lets Lightning finish the step in progress
    assert last_step(run) == 4
    assert sorted(logged_losses(run)) == [0, 1, 2, 3]  # no gap, no repeat


def test_timeout_requeues_and_resumes_to_max_steps(slurm_cluster, tmp_path):
    # --time=2 min, USR2 60 s before: the first attempt, held at step 2, is signalled and requeued by submitit
    sweep = tmp_path / "multirun/train/timeout"
    with start_requeued_at_once(sweep):
        proc = submit(
            slurm_cluster,
            tmp_path,
            "train",
            *TRAIN,
            *_hold(tmp_path, 2),
            "trainer.max_steps=4",
            "run_name=timeout",
            "cluster.timeout_min=2",
            "hydra.launcher.signal_delay_s=60",
        )
    _ok(proc)
    _resumed(tmp_path, sweep / "0")
    log = next((sweep / ".submitit").glob("*/*_0_log.err")).read_text()
    assert "this job is timed-out" in log


def test_preempted_training_resumes(slurm_cluster, tmp_path):
    sweep = tmp_path / "multirun/train/preempt"
    with start_requeued_at_once(sweep):
        proc = submit(
            slurm_cluster,
            tmp_path,
            "train",
            *TRAIN,
            *_hold(tmp_path, 2),
            "trainer.max_steps=4",
            "run_name=preempt",
            wait=False,
        )
        wait_for(tmp_path / "held", proc)
        (job,) = job_ids(sweep)
        subprocess.run(["scontrol", "requeue", job], env=slurm_cluster, check=True)
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    _resumed(tmp_path, sweep / "0")


SAMPLE = [
    *TINY,
    "ckpt_path=random",  # the tiny model untrained, on purpose
    "metric=[psnr,fvd]",
    "metric.fvd.detector={_target_:stand_in_detector.Counting}",
    "metric.fvd.num_frames=6",
    "sample.batch_size=1",
    "sample.video_format=none",
    "sample.schedule_png=false",
]


def test_sharded_sampling_array_equals_the_local_run(slurm_cluster, tmp_path):
    shared = [*SAMPLE, "sample.stop_index=4", "model.sampling.timestep_respacing='2'"]
    local = tmp_path / "local"
    sample.run(
        compose_cfg(
            "sample",
            [
                *shared,
                f"paths.output_root={local}",
                f"sample.out_dir={local / 'run'}",
                f"metric.fvd.cache_dir={tmp_path / 'fvd'}",
            ],
            local / "run",
        )
    )
    root = tmp_path / "slurm"
    _ok(
        submit(
            slurm_cluster,
            tmp_path,
            "sample",
            *shared,
            f"paths.output_root={root}",
            "run_name=shards",
            f"sample.out_dir={root / 'run'}",
            f"metric.fvd.cache_dir={tmp_path / 'fvd'}",
            "sample.num_shards=4",
            "sample.shard=range(0,4)",
        )
    )
    names = sorted(p.name for p in (local / "run/samples").glob("*.npy"))
    assert names == [f"sample_{v:04d}-0.npy" for v in range(4)]
    for name in names:  # byte for byte
        assert (local / "run/samples" / name).read_bytes() == (root / "run/samples" / name).read_bytes()
    a, b = (json.loads((d / "run/metrics.json").read_text()) for d in (local, root))
    assert a["psnr"]["value"] == b["psnr"]["value"]
    assert b["fvd"]["value"] == pytest.approx(a["fvd"]["value"], rel=1e-7)  # merged partial statistics
    assert len((root / "fvd_report.csv").read_text().splitlines()) == 2  # header + exactly one row
    logs = [p.read_text() for p in (tmp_path / "multirun/sample/shards/.submitit").glob("*/*_log.out")]
    assert len(logs) == 4 and sum("(finalised)" in log for log in logs) == 1  # the finaliser ran once


def test_preempted_sampling_shard_keeps_its_finished_samples(slurm_cluster, tmp_path):
    sweep, samples = tmp_path / "multirun/sample/preempt", tmp_path / "run/samples"
    env = {**slurm_cluster, "VIDEXP_TEST_HOLD_SAMPLES": str(samples)}  # held once sample 0 is written
    with start_requeued_at_once(sweep):
        proc = submit(
            env,
            tmp_path,
            "sample",
            *SAMPLE,
            "model._target_=slurm_helpers.HeldFDMModule",
            "run_name=preempt",
            "model.sampling.timestep_respacing='2'",
            f"sample.out_dir={tmp_path / 'run'}",
            f"metric.fvd.cache_dir={tmp_path / 'fvd'}",
            wait=False,
        )
        wait_for(tmp_path / "run/held", proc)
        first = samples / "sample_0000-0.npy"
        written = first.stat().st_mtime_ns
        (job,) = job_ids(sweep)
        subprocess.run(["scontrol", "requeue", job], env=slurm_cluster, check=True)
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert sorted(p.name for p in samples.glob("sample_*.npy")) == [f"sample_{v:04d}-0.npy" for v in range(4)]
    assert first.stat().st_mtime_ns == written  # not sampled again
    log = next((sweep / ".submitit").glob("*/*_log.out")).read_text()
    assert "(3 new, 1 done before)" in log, log[-2000:]  # the requeued attempt kept the first one's sample


def test_ddp_job_of_two_tasks_matches_a_local_two_process_run(slurm_cluster, tmp_path):
    ddp = [
        *TRAIN,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.max_steps=3",
        "seed=3",
    ]
    _ok(submit(slurm_cluster, tmp_path, "train", *ddp, "run_name=ddp"))
    local = subprocess.run(
        [sys.executable, "-m", "videxp.train", *ddp, "run_name=ddp_local"],
        cwd=tmp_path,
        env=slurm_cluster,
        capture_output=True,
        text=True,
        timeout=600,
    )
    _ok(local)
    sweep = tmp_path / "multirun/train/ddp"
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == [
        "0",
        "multirun.yaml",
        "sweep.json",
    ]
    run = sweep / "0"
    assert last_step(run) == 3  # one checkpoint (and the copy it replaced)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "last.prev.ckpt"]
    slurm_losses, local_losses = logged_losses(run), logged_losses(tmp_path / "outputs/train/ddp_local")
    assert sorted(slurm_losses) == [0, 1, 2]
    assert slurm_losses == pytest.approx(local_losses, rel=1e-6)
    log = next((sweep / ".submitit").glob("*/*_0_log.err")).read_text()
    assert "GLOBAL_RANK: 0" in log or "MEMBER: 1/2" in log, log[-2000:]


def test_failed_job_names_its_error_and_log(slurm_cluster, tmp_path):
    proc = submit(
        slurm_cluster,
        tmp_path,
        "evaluate",
        f"real_dir={tmp_path / 'missing'}",
        f"fake_dir={tmp_path / 'missing'}",
        "metric=[psnr]",
        "run_name=bad",
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "videxp-evaluate: error: 1 of 1 job(s) failed" in proc.stderr
    job_line, log_line = proc.stderr.strip().splitlines()[-2:]
    assert "missing" in job_line and "videxp-evaluate: error:" in job_line
    log = log_line.split("log: ", 1)[1]
    assert "missing" in Path(log).read_text()


def test_detached_sweep_returns_at_once_and_status_follows_it(slurm_cluster, tmp_path):
    for name in ("real", "fake"):
        write_video(
            tmp_path / name / "clip.npy", np.full((4, 16, 16, 3), 7 if name == "real" else 9, np.uint8)
        )
    t0 = time.monotonic()
    _ok(
        submit(
            slurm_cluster,
            tmp_path,
            "evaluate",
            f"real_dir={tmp_path / 'real'}",
            f"fake_dir={tmp_path / 'fake'}",
            "metric=[psnr]",
            "run_name=detached",
            "evaluate.last_frame=2,4",
            "hydra.launcher.detach=true",
        )
    )
    assert time.monotonic() - t0 < 30  # queued, not waited for
    sweep = tmp_path / "multirun/evaluate/detached"
    ids = job_ids(sweep)
    deadline = time.time() + 300
    while set(scheduler_states(ids).values()) != {"COMPLETED"}:
        assert time.time() < deadline, scheduler_states(ids)
        time.sleep(2)
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1"]
    status = subprocess.run(
        [sys.executable, "-m", "videxp.status", str(sweep)], env=slurm_cluster, capture_output=True, text=True
    )
    assert "2 job(s): 2 completed" in status.stdout
