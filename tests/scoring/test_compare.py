"""videxp-compare: table with the best marked, json, bar chart, and the best-vs-runner-up gap line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from videxp.scoring import comparison


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
    comp = comparison.compare_runs([a, b / "metrics.json"], out=tmp_path / "cmp")
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
        comparison.compare_runs([a], names=["p", "q"])
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        comparison.compare_runs([tmp_path / "missing"])


def write_job(sweep, num: int, overrides: list[str], psnr: float, curve: list[float]):
    """A multirun job folder as Hydra writes it: <sweep>/<num>/.hydra/overrides.yaml + metrics.json."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    doc = {"psnr": {"value": psnr, "frames": [4, 5, 6], "per_frame_mean": curve, "settings": {}}}
    (job / "metrics.json").write_text(json.dumps(doc))


def test_sweep_folder_rows_by_overrides_and_mean_over_seeds(tmp_path):
    sweep = tmp_path / "multirun" / "evaluate" / "s"
    values = {
        ("fdm", 0): 20.0,
        ("fdm", 1): 22.0,
        ("fdm", 2): 24.0,
        ("interpolant", 0): 25.0,
        ("interpolant", 1): 27.0,
    }
    for num, ((model, seed), v) in enumerate(values.items()):
        write_job(sweep, num, [f"model={model}", f"seed={seed}", "dataset=kth"], v, [v, v - 1, v - 2])
    comp = comparison.compare_runs([tmp_path / "multirun"], out=tmp_path / "cmp")
    assert comp["runs"] == ["model=fdm", "model=interpolant"]  # dataset=kth is common: not in the name
    psnr = comp["metrics"]["psnr"]
    assert psnr["values"]["model=fdm"] == pytest.approx(22.0)
    assert psnr["sem"]["model=fdm"] == pytest.approx(2.0 / 3**0.5)  # std (ddof 1) = 2 over 3 seeds
    assert psnr["values"]["model=interpolant"] == pytest.approx(26.0) and psnr["best"] == "model=interpolant"
    assert comp["n_seeds"] == {"model=fdm": 3, "model=interpolant": 2}
    rows = (tmp_path / "cmp" / "comparison.csv").read_text().splitlines()
    assert rows[0] == "run,n_seeds,psnr,psnr_sem,overrides"
    assert rows[1].startswith("model=fdm,3,22.0,") and rows[1].endswith("model=fdm seed=0 dataset=kth")
    assert (tmp_path / "cmp" / "comparison_curves.png").stat().st_size > 0
    assert "(3 seeds, mean ± s.e.)" in (tmp_path / "cmp" / "comparison.md").read_text()
    separate = comparison.compare_runs([sweep], out=tmp_path / "cmp2", group_seeds=False)
    assert separate["runs"][:2] == ["model=fdm,seed=0", "model=fdm,seed=1"]  # one row per job
    with pytest.raises(FileNotFoundError, match="folder of runs"):
        comparison.compare_runs([tmp_path / "cmp" / "nothing_here"])
