"""The benchmark's evaluation step: each method's generated videos vs the reference clips, and the summary."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from videxp.metrics.base import Metric
from videxp.models.loading import device_from
from videxp.scoring.comparison import compare_runs
from videxp.scoring.folders import score_folders
from videxp.scoring.selection import evaluate_settings
from videxp.utils.io import write_json
from videxp.workflows.i2v_benchmark.inputs import BENCHMARK_JSON, GENERATED_DIR, METHODS_DIR, REFERENCE_DIR

TIME_FORMAT = "%Y%m%d_%H%M%S"  # W1's timestamp in fvd_<method>_<time>.json and benchmark_summary_<time>.json
# W1's reading of FVD values (its benchmark README): upper bound -> band
FVD_BANDS = ((50.0, "exceptional"), (100.0, "excellent"), (300.0, "good"), (500.0, "moderate"))


def fvd_band(value: float | None) -> str | None:
    """W1's FVD band: <50 exceptional, 50-100 excellent, 100-300 good, 300-500 moderate, else poor."""
    if value is None or not math.isfinite(value):
        return None
    return next((name for bound, name in FVD_BANDS if value < bound), "poor")


def evaluate_method(
    cfg: DictConfig, metrics: dict[str, Metric], method: str, out_dir: Path
) -> dict[str, Any]:
    """Score generated_videos/<method> against reference_videos with `metrics`; report into `out_dir`."""
    root = Path(cfg.benchmark.root)
    fake_dir = root / GENERATED_DIR / method
    if not fake_dir.is_dir():
        raise FileNotFoundError(
            f"{fake_dir}: no generated videos for method {method!r}; run "
            f"videxp-sample experiment=i2v_benchmark model={method} first"
        )
    extra = {"label": method, "benchmark": str(root.resolve())}
    stamp = datetime.now().strftime(TIME_FORMAT)
    method_json = root / METHODS_DIR / method / "method.json"
    if method_json.is_file():
        extra["timing"] = json.loads(method_json.read_text())["timing"]
    results = score_folders(
        root / REFERENCE_DIR,
        fake_dir,
        metrics,
        evaluate_settings(cfg),
        out_dir,
        device_from(cfg.device),
        extra,
    )
    fvd_json = out_dir / "fvd.json"
    if fvd_json.is_file():  # W1's name beside the stable one: fvd_<method>_<time>.json
        write_json(out_dir / f"fvd_{method}_{stamp}.json", json.loads(fvd_json.read_text()))
    return {"results": results, "out_dir": out_dir}


def methods_on_disk(root: Path) -> list[str]:
    """Methods with a generated_videos/<method> folder, sorted."""
    folder = root / GENERATED_DIR
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def evaluate_benchmark(cfg: DictConfig, make_metrics: Callable[[], dict[str, Metric]]) -> dict[str, dict]:
    """videxp-evaluate experiment=i2v_benchmark: score every method (or `benchmark.evaluate_methods`), then
    write benchmark_summary.json and comparison.{md,json,png} into the run folder."""
    root = Path(cfg.benchmark.root)
    if not (root / BENCHMARK_JSON).is_file():
        raise FileNotFoundError(f"{root / BENCHMARK_JSON}: no benchmark inputs; run videxp-sample first")
    methods = list(cfg.benchmark.get("evaluate_methods") or methods_on_disk(root))
    if not methods:
        raise FileNotFoundError(f"{root / GENERATED_DIR}: no generated videos of any method yet")
    out_dir = Path(cfg.evaluate.out_dir)
    per_method = {m: evaluate_method(cfg, make_metrics(), m, out_dir / m) for m in methods}
    summary = write_summary(out_dir, root, {m: r["out_dir"] for m, r in per_method.items()})
    if summary["summary"]:
        print(summary["summary"])
    print(f"benchmark summary: {out_dir / 'benchmark_summary.json'}")
    return {m: r["results"] for m, r in per_method.items()}


def write_summary(out_dir: Path, root: Path, runs: dict[str, Path]) -> dict[str, Any]:
    """benchmark_summary.json (W1 fields: timestamp, reference dir, per method fvd / num_videos / output
    file, plus every metric and W1's FVD band) and the comparison table, markdown and plot."""
    comp = compare_runs([runs[m] for m in runs], out=out_dir, names=list(runs))
    inputs = json.loads((root / BENCHMARK_JSON).read_text())
    methods: dict[str, Any] = {}
    for method, folder in runs.items():
        doc = json.loads((Path(folder) / "metrics.json").read_text())
        fvd = doc.get("fvd", {}).get("value") if isinstance(doc.get("fvd"), dict) else None
        results = {k: v for k, v in doc.items() if isinstance(v, dict) and "value" in v}
        methods[method] = {
            "fvd": fvd,
            "num_videos": doc.get("num_fake_files"),
            "output_file": str(Path(folder) / ("fvd.json" if fvd is not None else "metrics.json")),
            "fvd_band": fvd_band(fvd),
            "metrics": {k: v["value"] for k, v in results.items()},
            "timing": doc.get("timing"),
        }
    summary = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmark": str(root.resolve()),
        "reference_dir": str((root / REFERENCE_DIR).resolve()),
        "num_reference_videos": inputs["num_videos"],
        "reference_resampling": inputs.get("reference_resampling"),
        "methods": methods,
        "best": {m: row["best"] for m, row in comp["metrics"].items()},
        "summary": comp["summary"],
        "comparison": str(out_dir / "comparison.md"),
    }
    write_json(out_dir / "benchmark_summary.json", summary)
    stamp = datetime.now().strftime(TIME_FORMAT)
    write_json(out_dir / f"benchmark_summary_{stamp}.json", summary)  # W1's timestamped name, kept per run
    return summary
