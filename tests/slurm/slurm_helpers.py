"""Helpers of the slurm tests: the cluster fixture (cluster.sh), a callback their jobs load (it holds the
first attempt), submitting and waiting."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch

from videxp.models.fdm.module import FDMModule

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLUSTER = HERE / "cluster.sh"
REQUIRED = os.environ.get("VIDEXP_REQUIRE_SLURM", "") == "1"  # CI: a cluster that cannot start fails


def _cannot_start(reason: str) -> None:
    (pytest.fail if REQUIRED else pytest.skip)(f"no SLURM cluster: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> dict[str, str]:
    """Start cluster.sh (unless it runs already) and return the environment for submitting to it."""
    if sys.platform != "linux" or os.geteuid() != 0:
        _cannot_start("tests/slurm/cluster.sh needs root on Linux")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        _cannot_start("SLURM is not installed and there is no apt-get to install it")
    running = subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 0
    t0 = time.monotonic()
    proc = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode:
        _cannot_start(proc.stderr.strip()[-2000:])
    print(f"\nSLURM cluster ready in {time.monotonic() - t0:.1f} s ({proc.stderr.strip().splitlines()[-1]})")
    conf = subprocess.run([CLUSTER, "env"], capture_output=True, text=True, check=True).stdout
    env = {
        **os.environ,
        "SLURM_CONF": conf.strip().split("=", 1)[1],
        "VIDEXP_OFFLINE": "1",
        "VIDEXP_CACHE": str(tmp_path_factory.mktemp("cache")),
        # hydra_plugins/ of this checkout, the tests' helpers (stand-in detector, hold callbacks)
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(HERE)]),
    }
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]  # sacct/squeue/scontrol called from the tests themselves
    yield env
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before
    if not running and os.environ.get("VIDEXP_SLURM_KEEP", "") != "1":
        subprocess.run([CLUSTER, "stop"], capture_output=True, timeout=120)


def restart_count() -> int:
    """How often SLURM requeued this job (0 on the first attempt)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


class HoldFirstAttempt(L.Callback):
    """On the job's first attempt, at `step` (last.ckpt holds it), write `marker` and wait up to `seconds` for
    SLURM to end the attempt (a timeout signal or a requeue); later attempts run through. Each attempt's
    (restart count, first step) is appended to `marker`.attempts."""

    def __init__(self, marker: str, step: int, seconds: float = 240.0) -> None:
        self.marker, self.step, self.seconds = Path(marker), step, seconds

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == 0:
            with open(f"{self.marker}.attempts", "a") as f:
                f.write(f"{restart_count()} {trainer.global_step}\n")

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if restart_count() or trainer.global_step != self.step:
            return
        self.marker.write_text(str(trainer.global_step))
        deadline = time.time() + self.seconds
        while time.time() < deadline and not trainer.received_sigterm:
            time.sleep(0.1)


class HeldFDMModule(FDMModule):
    """FDM whose generator, on the job's first attempt, stops before the next call once a sample is written
    to $VIDEXP_TEST_HOLD_SAMPLES (after writing $VIDEXP_TEST_HOLD_SAMPLES/../held) and waits to be killed."""

    def generator(self, *args, **kwargs):
        gen = super().generator(*args, **kwargs)
        generate = gen.generate

        def held(*a, **k):
            samples = Path(os.environ.get("VIDEXP_TEST_HOLD_SAMPLES", "/nonexistent"))
            if not restart_count() and any(samples.glob("sample_*.npy")):
                (samples.parent / "held").write_text("1")
                time.sleep(240)  # SLURM's requeue ends this attempt (SIGTERM is ignored by submitit: SIGKILL)
            return generate(*a, **k)

        gen.generate = held
        return gen


def submit(env: dict, cwd: Path, task: str, *overrides: str, timeout: float = 600, wait: bool = True):
    """`videxp-<task> -m hydra/launcher=slurm cluster=local_slurm <overrides>` in `cwd`; the finished
    CompletedProcess (wait) or the running Popen."""
    cmd = [sys.executable, "-m", f"videxp.{task}", "-m", "hydra/launcher=slurm", "cluster=local_slurm"]
    cmd += list(overrides)
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def squeue_state(job_id: str) -> str:
    """'<state>|<reason>' of a job in the live queue ('' once it left it)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%r"], capture_output=True, text=True)
    return out.stdout.strip()


@contextlib.contextmanager
def start_requeued_at_once(sweep: Path) -> Iterator[None]:
    """While the block runs, start each job of `sweep` as soon as it is requeued: SLURM holds a requeued batch
    job for two minutes (reason BeginTime); an admin's `scontrol update StartTime=now` skips the wait."""
    done = threading.Event()

    def watch() -> None:
        record = sweep / "sweep.json"
        while not done.is_set() and not record.exists():
            time.sleep(0.2)
        for job_id in [] if done.is_set() else job_ids(sweep):
            while not done.is_set():
                if squeue_state(job_id) == "PENDING|BeginTime":
                    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=False)
                time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=10)


def wait_for(path: Path, proc: subprocess.Popen, limit: float = 300) -> None:
    """Until `path` exists; fails when the submitting command ended first or after `limit` seconds."""
    deadline = time.time() + limit
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {path} appeared: {proc.stderr.read()[-3000:]}")
        assert time.time() < deadline, f"{path} did not appear within {limit} s"
        time.sleep(0.2)


def last_step(run: Path) -> int:
    return int(
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    )


def logged_losses(run: Path) -> dict[int, float]:
    """{step: train loss} from every csv/version_*/metrics.csv of a run folder (later versions win)."""
    losses: dict[int, float] = {}
    for path in sorted((run / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])):
        for row in csv.DictReader(path.open()):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


def job_ids(sweep: Path) -> list[str]:
    from videxp.launcher import read_sweep_record

    return [job["job_id"] for job in read_sweep_record(sweep)["jobs"]]
