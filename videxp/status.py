"""videxp-status: the state of a submitted sweep from its folder (sweep.json + the scheduler's accounting)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from videxp.launcher import SweepError, error_line, read_sweep_record
from videxp.utils.cli import fail

FINISHED_BAD = ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")


def _query(command: list[str]) -> dict[str, str]:
    """{job id: state} from `sacct`/`squeue` output lines `<id>|<state>`; {} when the command fails."""
    if shutil.which(command[0]) is None:
        return {}
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        if job_id and "." not in job_id:  # skip job steps (5_0.batch, 5_0.0)
            for one in expand_array_id(job_id.strip()):
                states[one] = state.split()[0] if state.strip() else "UNKNOWN"
    return states


_PENDING_ARRAY = re.compile(r"(\d+)_\[([\d,-]+)(?:%\d+)?\]")


def expand_array_id(job_id: str) -> list[str]:
    """'7_[0-2,5%4]' (pending array tasks, one row) -> ['7_0', '7_1', '7_2', '7_5']; others as given."""
    match = _PENDING_ARRAY.fullmatch(job_id)
    if not match:
        return [job_id]
    ids = []
    for part in match.group(2).split(","):
        first, _, last = part.partition("-")
        ids += [f"{match.group(1)}_{i}" for i in range(int(first), int(last or first) + 1)]
    return ids


def scheduler_states(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM's state of each job: accounting (`sacct`) first, the live queue (`squeue`) where it lacks one."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    states = _query(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)])
    missing = [j for j in job_ids if j not in states]
    if missing:
        live = _query(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(arrays)])
        states.update({j: live[j] for j in missing if j in live})
    return states


def sweep_table(sweep_dir: str | Path) -> tuple[str, list[str], dict[str, int]]:
    """(task, lines describing each job: state, overrides, error and log of failed ones, counts by state)."""
    record = read_sweep_record(sweep_dir)
    jobs = record["jobs"]
    states = scheduler_states([j["job_id"] for j in jobs])
    lines, counts = [], {}
    for job in jobs:
        state = states.get(job["job_id"], "UNKNOWN")
        counts[state] = counts.get(state, 0) + 1
        lines.append(f"#{job['num']:<3} {job['job_id']:<10} {state:<11} {' '.join(job['overrides'])}")
        if state in FINISHED_BAD:
            lines.append(f"     {error_line(job['stderr'])}")
            lines.append(f"     log: {job['stderr']}")
    return record["task"], lines, counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="videxp-status", description=__doc__)
    parser.add_argument("sweep_dir", help="a sweep folder, e.g. multirun/train/<run_name>")
    args = parser.parse_args(argv)
    try:
        task, lines, counts = sweep_table(args.sweep_dir)
    except (SweepError, OSError, ValueError) as err:  # a missing, foreign or broken record: one line, exit 1
        fail("videxp-status", err)
    summary = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    print(f"{Path(args.sweep_dir)}: videxp-{task} sweep, {sum(counts.values())} job(s): {summary}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
