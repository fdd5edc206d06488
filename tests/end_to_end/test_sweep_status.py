"""Sweep records and videxp-status without a scheduler: sweep.json, job errors, pending array ids."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from videxp.launcher import SweepError, collect, error_line, read_sweep_record, record_sweep
from videxp.status import expand_array_id, main, sweep_table


def _job(tmp_path, job_id: str, err: str = "") -> SimpleNamespace:
    stderr = tmp_path / f"{job_id}_log.err"
    stderr.write_text(err)
    return SimpleNamespace(job_id=job_id, paths=SimpleNamespace(stdout=tmp_path / "out", stderr=stderr))


def test_pending_array_rows_expand_to_their_tasks():
    assert expand_array_id("7_[0-2,5%4]") == ["7_0", "7_1", "7_2", "7_5"]
    assert expand_array_id("7_3") == ["7_3"] and expand_array_id("12") == ["12"]


def test_error_line_prefers_videxps_one_line_error(tmp_path):
    log = tmp_path / "log.err"
    log.write_text(
        "Traceback ...\nvidexp-train: error: dataset.image_size must be even\nsrun: error: task 0\n"
    )
    assert error_line(log) == "videxp-train: error: dataset.image_size must be even"
    log.write_text(
        "Traceback (most recent call last):\n  ...\nKeyError: 'x'\nsrun: error: vm: task 0: Exited\n"
    )
    assert error_line(log) == "KeyError: 'x'"
    assert error_line(tmp_path / "missing") == "(no log)"


def test_sweep_record_accumulates_submissions_and_status_reads_it(tmp_path, monkeypatch):
    jobs = [_job(tmp_path, "5_0"), _job(tmp_path, "5_1", "videxp-train: error: bad lr\n")]
    record_sweep(tmp_path, "train", [["lr=1", "hydra.x=1"], ["lr=2"]], 0, jobs)
    record_sweep(tmp_path, "train", [["lr=3"]], 2, [_job(tmp_path, "9")])  # a second submission
    record = read_sweep_record(tmp_path)
    assert [(j["num"], j["job_id"], j["overrides"]) for j in record["jobs"]] == [
        (0, "5_0", ["lr=1"]),  # hydra.* overrides are left out, as Hydra's own job lines do
        (1, "5_1", ["lr=2"]),
        (2, "9", ["lr=3"]),
    ]
    states = {"5_0": "COMPLETED", "5_1": "FAILED"}
    monkeypatch.setattr(
        "videxp.status.scheduler_states", lambda ids: {i: states[i] for i in ids if i in states}
    )
    task, lines, counts = sweep_table(tmp_path)
    assert task == "train" and counts == {"COMPLETED": 1, "FAILED": 1, "UNKNOWN": 1}
    assert "videxp-train: error: bad lr" in lines[2] and lines[3].endswith("5_1_log.err")


def test_collect_names_each_failed_job_with_its_error_and_log(tmp_path):
    from submitit.core.utils import UncompletedJobError

    class Failed:
        def results(self):
            raise UncompletedJobError("no output")

    class Done:
        def results(self):
            return ["ok"]

    jobs = [_job(tmp_path, "3_0"), _job(tmp_path, "3_1", "videxp-evaluate: error: no such folder x\n")]
    record = record_sweep(tmp_path, "evaluate", [["a=1"], ["a=2"]], 0, jobs)
    with pytest.raises(
        SweepError, match=r"1 of 2 job\(s\) failed:\njob #1 \(a=2\): videxp-evaluate: error: no "
    ):
        collect([Done(), Failed()], record)
    assert collect([Done(), Done()], record) == ["ok", "ok"]


def test_status_of_a_folder_without_a_sweep_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "videxp.status", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    why = "no sweep.json here; pass the folder of a sweep submitted with -m"
    assert proc.stderr.strip() == f"videxp-status: error: {tmp_path}: {why}"
    (tmp_path / "sweep.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
