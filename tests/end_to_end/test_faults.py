"""kill -9 mid-prepare, mid-sample, mid-finalise and mid-train, then rerun: nothing finished is redone,
nothing half-written survives, and the results equal an uninterrupted run. The killed run is the real
entry point in a subprocess, killed when the test sees a well-defined point in its output folder."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, compose_cfg

from videxp import sample, train
from videxp.data.hdf5 import HDF5Videos
from videxp.data.prepare import run as prepare_run
from videxp.data.standins import write_kth
from videxp.utils.io import atomic_path, remove_stale_temps
from videxp.utils.locks import try_lock, unlock

ROOT = Path(__file__).resolve().parents[2]
LEFTOVER = re.compile(r"\.tmp-\d+-|\.partial|\.lock$|\.stale-")  # temp files, partial splits, locks


def spawn(module: str, args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m videxp.<module> args` with this checkout first on the path."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "VIDEXP_OFFLINE": "1", "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, "-m", f"videxp.{module}", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    """SIGKILL `proc` as soon as `ready()` holds; fail if it ends (or times out) first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            tail = proc.stderr.read()[-2000:]
            pytest.fail(f"the run ended (exit {proc.returncode}) before it was killed:\n{tail}")
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if LEFTOVER.search(p.name))


def stamps(files) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each file: equal after a rerun = not rewritten."""
    return {str(f): (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}


def test_stale_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    host = socket.gethostname()
    stale = tmp_path / f".sample_0000-0.tmp-{int(dead.stdout)}-{host}~abc123.npy"
    live = tmp_path / f".sample_0001-0.tmp-{os.getpid()}-{host}~def456.npy"
    other = tmp_path / ".elsewhere.tmp-1-another-host~xyz.npy"  # another machine, recent: maybe writing
    for f in (stale, live, other):
        f.write_bytes(b"half")
    with atomic_path(tmp_path / "x.npy") as tmp:
        assert tmp.name.startswith(f".x.tmp-{os.getpid()}-{host}~")  # the name says who writes it
        assert remove_stale_temps(tmp_path) == [stale]
        assert tmp.exists() and live.exists() and other.exists()


def test_killed_prepare_resumes_keeping_finished_splits(tmp_path):
    raw = write_kth(
        tmp_path / "raw",
        persons=(1, 21, 22, 23),
        actions=("walking", "boxing"),
        scenarios=(1, 2),
        frames=30,
        sequences_file=False,
    )
    args = [f"raw_dir={raw}", "workers=0", "progress=false", "videos_per_shard=2"]
    whole = tmp_path / "whole"
    prepare_run(compose_cfg("prepare", [*args, f"out_dir={whole}"], tmp_path / "log0"))
    out = tmp_path / "killed"
    proc = spawn("prepare", [*args, f"out_dir={out}", f"hydra.run.dir={tmp_path / 'log1'}"], tmp_path)
    kill_when(proc, lambda: (out / "train" / ".split.json").is_file())  # train done; test in progress
    assert not (out / "manifest.json").exists()
    train_files = stamps((out / "train").iterdir())
    prepare_run(compose_cfg("prepare", [*args, f"out_dir={out}"], tmp_path / "log2"))
    assert stamps((out / "train").iterdir()) == train_files, "the finished split was prepared again"
    assert leftovers(out) == [] and not (out / ".videxp-prepare.json").exists()
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (whole, out))
    assert a["splits"] == b["splits"] and a["fingerprint"] == b["fingerprint"]
    for split in a["splits"]:
        x, y = HDF5Videos(whole / split), HDF5Videos(out / split)
        assert len(x) == len(y) > 0
        for i in range(len(x)):
            np.testing.assert_array_equal(x[i], y[i])


SAMPLE = [
    *TINY,
    "ckpt_path=random",
    "sample.stop_index=4",
    "sample.num_samples=3",
    "sample.batch_size=2",
    "seed=5",
]


def _metrics(folder: Path) -> dict:
    doc = json.loads((folder / "metrics.json").read_text())
    return {k: doc[k]["value"] for k in ("psnr", "ssim")} | {"baselines": doc["baselines"]}


def test_killed_sampling_and_finalising_resume_to_the_uninterrupted_result(tmp_path):
    whole = tmp_path / "whole"
    summary = sample.run(compose_cfg("sample", [*SAMPLE, f"sample.fvd_report={tmp_path}/whole.csv"], whole))
    assert summary["finalise"]["status"] == "finalised"
    out, report = tmp_path / "killed", tmp_path / "report.csv"
    args = [*SAMPLE, f"hydra.run.dir={out}", f"sample.fvd_report={report}"]
    samples = out / "samples"

    # 1. mid-sample: killed once two samples are on disk
    kill_when(spawn("sample", args, tmp_path), lambda: len(list(samples.glob("sample_*.npy"))) >= 2)
    finished = sorted(samples.glob("sample_*.npy"))
    assert 2 <= len(finished) < 12 and not (samples / "manifest.json").exists()
    for f in finished:  # whatever is under a sample's name is complete (written atomically)
        assert f.read_bytes() == (whole / "samples" / f.name).read_bytes()
    before = stamps(finished)

    # 2. mid-finalise: held at the report's lock (metrics.json written, finalised.json not yet), killed
    lock = report.with_name(report.name + ".lock")
    assert try_lock(lock, 3600)  # held by this (live) process: the finaliser waits on it
    kill_when(spawn("sample", args, tmp_path), lambda: (out / "metrics.json").is_file())
    unlock(lock)
    assert stamps(finished) == before, "finished samples were made again"
    assert not list(samples.glob("partial/*/finalised.json"))
    states = stamps(samples.glob("partial/*/*/state.json"))
    assert len(states) == 1

    # 3. the rerun finishes the job without redoing what was finished
    again = sample.run(compose_cfg("sample", [*SAMPLE, f"sample.fvd_report={report}"], out))
    assert again["written"] == 0 and again["finalise"]["status"] == "finalised"
    assert stamps(finished) == before and stamps(samples.glob("partial/*/*/state.json")) == states
    assert leftovers(out) == [], "half-written files survived"
    names = sorted(f.name for f in (whole / "samples").glob("sample_*.npy"))
    assert names == sorted(f.name for f in samples.glob("sample_*.npy")) and len(names) == 12
    for name in names:
        assert (whole / "samples" / name).read_bytes() == (samples / name).read_bytes()
    assert _metrics(out) == _metrics(whole)
    assert len(report.read_text().splitlines()) == 2  # header + one row: the killed finaliser added none


TRAIN = [
    *TINY,
    "trainer.max_steps=4",
    "trainer.val_check_interval=1000",
    "trainer.log_every_n_steps=1",
    "callbacks.last_checkpoint.every_n_train_steps=1",
    "logger=csv",
]


def _ckpt(folder: Path) -> dict:
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _steps(csv: Path) -> list[int]:
    lines = csv.read_text().splitlines()
    col = lines[0].split(",")
    return [int(r.split(",")[col.index("step")]) for r in lines[1:] if r.split(",")[col.index("train/loss")]]


def test_killed_training_resumes_at_its_last_checkpoint(tmp_path):
    out = tmp_path / "killed"
    proc = spawn("train", [*TRAIN, f"hydra.run.dir={out}"], tmp_path)
    kill_when(proc, lambda: (out / "checkpoints" / "last.prev.ckpt").is_file())  # last.ckpt: step 2
    step = int(_ckpt(out)["global_step"])
    assert 2 <= step < 4
    trainer = train.run(compose_cfg("train", TRAIN, out))
    assert trainer.global_step == 4 and int(_ckpt(out)["global_step"]) == 4
    assert leftovers(out) == [] and not (out / "checkpoints" / ".last.partial.ckpt").exists()
    runs = sorted((out / "csv").glob("version_*/metrics.csv"))
    assert _steps(runs[-1]) == list(range(step, 4)), "the rerun repeated or skipped steps"
    whole = tmp_path / "whole"
    train.run(compose_cfg("train", TRAIN, whole))
    a, b = _ckpt(whole)["state_dict"], _ckpt(out)["state_dict"]
    # the killed steps ran in a subprocess with its own thread count (float sums in another order: ~1e-8);
    # a batch seen twice or skipped moves the weights by orders of magnitude more
    close = all(torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-6) for k in a)
    assert close, "the resumed weights differ from an uninterrupted run's"


def test_training_continued_past_max_steps_equals_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    train.run(compose_cfg("train", TRAIN, whole))
    out = tmp_path / "killed"
    train.run(compose_cfg("train", [*TRAIN, "trainer.max_steps=2"], out))
    train.run(compose_cfg("train", TRAIN, out))
    a, b = _ckpt(whole)["state_dict"], _ckpt(out)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
