"""fvd_report.csv: one row per finalised run, even when a killed finaliser is rerun."""

from __future__ import annotations

import csv

from videxp.scoring.finalise import CSV_COLUMNS, append_fvd_report

ROW = {"run_name": "r", "model": "FDMModule", "checkpoint": "/c.ckpt", "num_real": 16, "fvd": repr(123.5)}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_rerun_adds_no_second_row_for_the_same_result(tmp_path):
    report = tmp_path / "fvd_report.csv"
    append_fvd_report(report, {**ROW, "time": "2026-01-01T00:00:00"})
    append_fvd_report(report, {**ROW, "time": "2026-01-01T00:05:00"})  # the killed finaliser's rerun
    rows = _rows(report)
    assert len(rows) == 1 and list(rows[0]) == list(CSV_COLUMNS)
    assert rows[0]["fvd"] == "123.5" and rows[0]["num_real"] == "16"


def test_another_result_gets_its_own_row(tmp_path):
    report = tmp_path / "fvd_report.csv"
    append_fvd_report(report, ROW)
    append_fvd_report(report, {**ROW, "fvd": repr(99.0)})
    append_fvd_report(report, {**ROW, "run_name": "other"})
    assert [r["fvd"] for r in _rows(report)] == ["123.5", "99.0", "123.5"]
    assert report.read_text().count("run_name") == 1  # one header
