"""The submitit launchers' logic (hydra_plugins/videxp_launcher): run_name pinning (requeues reuse a folder),
one array per sweep recorded in <sweep>/sweep.json, failed jobs reported by their error and log, detach."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf
from submitit.core.utils import FailedJobError, UncompletedJobError

from videxp.errors import VidexpError
from videxp.utils.cli import fail
from videxp.utils.io import write_json

log = logging.getLogger(__name__)

# Config keys whose value may change when a job is composed again later (run_name defaults to ${now:...}).
PINNED_KEYS = ("run_name",)
_PLAIN = re.compile(r"[\w./-]+")  # values that need no quoting in a Hydra override


def override_key(override: str) -> str:
    """'++a.b=1' -> 'a.b' (the config key an override sets)."""
    return override.split("=", 1)[0].lstrip("+~")


def quote(value: Any) -> str:
    """A resolved value as a Hydra override value that parses back to the same string."""
    text = str(value)
    if _PLAIN.fullmatch(text) and OverridesParser.create().parse_override(f"k={text}").value() == text:
        return text  # e.g. 2024-01-02_03-04-05 (not 1e3 or true, which would parse as a number or a bool)
    return "'" + text.replace("'", "\\'") + "'"


class PinningMixin:
    """Before submission, compose each job's config once, resolve the PINNED_KEYS there and append them to
    the job's overrides as literal values. submitit pickles those overrides with the job and resubmits them
    unchanged on preemption or timeout (`checkpoint()`): the job composed again at (re)start gets the same
    run folder."""

    pinned_keys: Sequence[str] = PINNED_KEYS

    def pin(self, overrides: Sequence[str]) -> list[str]:
        """Return `overrides` with `key=<value resolved now>` for every pinned key present in the config."""
        job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        pinned = [o for o in overrides if override_key(o) not in self.pinned_keys]
        for key in self.pinned_keys:
            try:
                value = OmegaConf.select(job_cfg, key)
            except Exception as err:  # e.g. a value that needs the job's own Hydra runtime
                log.warning("not pinning %s (%s): a requeued job resolves it again", key, err)
                value = None
            if value is None:
                pinned += [o for o in overrides if override_key(o) == key]
            else:
                pinned.append(f"{key}={quote(value)}")
        return pinned


class SweepMixin(PinningMixin):
    """launch(): pin run_name, submit the sweep through submitit (one array on SLURM), record its jobs in
    <sweep>/sweep.json, then wait for them; failed jobs end the command with one message naming each job,
    its error and its log. `detach=true` (SLURM only) returns once the jobs are queued; `videxp-status
    <sweep folder>` follows them."""

    def __init__(self, detach: bool = False, **params: Any) -> None:
        super().__init__(**params)
        if detach and self._EXECUTOR != "slurm":
            raise SweepError(
                "hydra.launcher.detach=true needs hydra/launcher=slurm (local jobs die with the command)"
            )
        self.detach = bool(detach)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        for key in self.pinned_keys:  # resolved once here, all jobs share one ${now:} (resolver cache)
            with contextlib.suppress(Exception):
                OmegaConf.select(self.config, key)
        overrides = [self.pin(o) for o in job_overrides]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs = self.submit(overrides, initial_job_idx)
        record = record_sweep(sweep_dir, str(self.config.task), overrides, initial_job_idx, jobs)
        if self.detach:
            log.info("detached: %d job(s) submitted; `videxp-status %s` shows them", len(jobs), sweep_dir)
            return [JobReturn(status=JobStatus.COMPLETED, _return_value=None) for _ in jobs]
        try:
            return collect(jobs, record)
        except SweepError as err:
            fail(f"videxp-{record['task']}", err)  # one message, no traceback; exit 1

    def submit(self, overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
        """Submit one job per override list through submitit (one array on SLURM), as the plugin does."""
        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in generic else f"{self._EXECUTOR}_{k}": v for k, v in params.items()}
        )
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, self.config.hydra.sweep.dir)
        args = []
        for num, job in enumerate(overrides, start=initial_job_idx):
            log.info("\t#%d : %s", num, " ".join(filter_overrides(job)))
            args.append((list(job), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()))
        return list(executor.map_array(self, *zip(*args)))


SWEEP_RECORD = "sweep.json"  # in the sweep folder: the jobs of each submission, read by videxp-status


def record_sweep(
    sweep_dir: Path, task: str, overrides: Sequence[Sequence[str]], first: int, jobs: Sequence[Any]
) -> dict[str, Any]:
    """Add this submission's jobs (number, scheduler id, overrides, log files) to <sweep_dir>/sweep.json."""
    path = sweep_dir / SWEEP_RECORD
    record = read_sweep_record(sweep_dir) if path.is_file() else {"format": "videxp.sweep/1", "jobs": []}
    record["task"] = task
    submitted = dt.datetime.now().isoformat(timespec="seconds")
    for num, (job_overrides, job) in enumerate(zip(overrides, jobs), start=first):
        record["jobs"].append(
            {
                "num": num,
                "job_id": str(job.job_id),
                "overrides": list(filter_overrides(job_overrides)),
                "folder": str(sweep_dir / str(num)),
                "stdout": str(job.paths.stdout),
                "stderr": str(job.paths.stderr),
                "submitted": submitted,
            }
        )
    write_json(path, record)
    return record


def read_sweep_record(sweep_dir: str | Path) -> dict[str, Any]:
    """The jobs recorded in <sweep_dir>/sweep.json (plain JSON; nothing is unpickled)."""
    path = Path(sweep_dir) / SWEEP_RECORD
    if not path.is_file():
        raise SweepError(f"{sweep_dir}: no {SWEEP_RECORD} here; pass the folder of a sweep submitted with -m")
    record = json.loads(path.read_text())
    if record.get("format") != "videxp.sweep/1" or not isinstance(record.get("jobs"), list):
        raise SweepError(f"{path}: not a videxp sweep record (format {record.get('format')!r})")
    return record


class SweepError(VidexpError, RuntimeError):
    """Jobs of a sweep failed, or a sweep folder cannot be read."""


_ERROR_LINE = re.compile(r"^videxp-\w+: error: ")


def error_line(stderr: str | Path) -> str:
    """What a job's log says went wrong: videxp's one-line error, else the last line of a traceback."""
    try:
        lines = [line.rstrip() for line in Path(stderr).read_text(errors="replace").splitlines()]
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line
    useful = [
        line for line in lines if line.strip() and not line.startswith(("srun:", "slurmstepd:", "submitit "))
    ]
    return useful[-1].strip() if useful else "(the log is empty)"


def collect(jobs: Sequence[Any], record: dict[str, Any]) -> list[JobReturn]:
    """Wait for every job; SweepError naming each failed job (number, overrides, error, log) if any failed."""
    returns, failed = [], []
    entries = record["jobs"][-len(jobs) :]
    for job, entry in zip(jobs, entries):
        try:
            returns.append(job.results()[0])
        except (FailedJobError, UncompletedJobError):
            failed.append(
                f"job #{entry['num']} ({' '.join(entry['overrides'])}): {error_line(entry['stderr'])}\n"
                f"  log: {entry['stderr']}"
            )
    if failed:
        raise SweepError(f"{len(failed)} of {len(jobs)} job(s) failed:\n" + "\n".join(failed))
    return returns
