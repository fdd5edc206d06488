"""videxp-compare: table with the best marked, json, bar chart, and the best-vs-runner-up gap line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from videxp import compare


def write_run(root, name: str, fvd: float, psnr: float):
    run = root / name
    run.mkdir(parents=True)
    doc = {
        "fvd": {"value": fvd, "higher_is_better": False, "settings": {}},
        "psnr": {"value": psnr, "sem": 0.1, "settings": {}},
        "provenance": {"git": "x"},
    }
    (run / "metrics.json").write_text(json.dumps(doc))
    return run


def test_compare_two_runs_marks_best_and_gap(tmp_path):
    a = write_run(tmp_path, "framepack", 32.49, 20.0)
    b = write_run(tmp_path, "wan", 40.73, 21.0)
    comp = compare.run([a, b / "metrics.json"], out=tmp_path / "cmp")
    assert comp["metrics"]["fvd"]["best"] == "framepack"  # lower is better (from the result)
    assert comp["metrics"]["psnr"]["best"] == "wan"  # higher is better (default table)
    assert comp["summary"].startswith("fvd: framepack 32.49 vs wan 40.73 — 20.2% better")
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| framepack | **32.49** ★ |" in md and "**21 ± 0.1** ★" in md and "20.2% better" in md
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["runs"] == ["framepack", "wan"]
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0


def test_cli_names_and_errors(tmp_path):
    a = write_run(tmp_path, "r1", 10.0, 30.0)
    b = write_run(tmp_path, "r2", 12.0, 31.0)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "videxp.compare",
            str(a),
            str(b),
            "--out",
            str(tmp_path / "o"),
            "--names",
            "x,y",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "x 10 vs y 12 — 16.7% better" in out.stdout
    with pytest.raises(ValueError, match="2 names for 1 runs"):
        compare.run([a], names=["p", "q"])
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        compare.run([tmp_path / "missing"])
