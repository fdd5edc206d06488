"""videxp-compare: a table (md, json, png) of several evaluation runs' metrics with the best marked."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from videxp.utils.io import atomic_path, write_json, write_text

# Direction when a result does not say (`higher_is_better` in the metric result wins).
HIGHER_IS_BETTER = {"fvd": False, "lpips": False, "fid": False, "psnr": True, "ssim": True}


def load_run(path: str | Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """(metrics.json path, {metric: result}) of a run folder or a metrics.json file."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json (give a videxp-evaluate run folder or the file)")
    try:
        doc = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON: {e}") from e
    results = {k: v for k, v in doc.items() if isinstance(v, dict) and "value" in v}
    if not results:
        raise ValueError(f"{file}: holds no metric results (objects with a 'value')")
    return file, results


def higher_is_better(name: str, results: Sequence[dict[str, Any]]) -> bool:
    """Direction of metric `name`: from the results' `higher_is_better`, else the table, else True."""
    for res in results:
        if isinstance(res.get("higher_is_better"), bool):
            return res["higher_is_better"]
    return HIGHER_IS_BETTER.get(name.lower(), True)


def compare(runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per metric: each run's value (and s.e.), the direction, the best run, and the best-vs-runner-up gap."""
    names = list(runs)
    metrics: list[str] = []
    for res in runs.values():
        metrics += [m for m in res if m not in metrics]
    table: dict[str, Any] = {}
    for metric in metrics:
        entries = {n: runs[n][metric] for n in names if metric in runs[n]}
        hib = higher_is_better(metric, list(entries.values()))
        values = {
            n: float(r["value"])
            for n, r in entries.items()
            if r.get("value") is not None and math.isfinite(float(r["value"]))
        }
        ranked = sorted(values, key=lambda n: values[n], reverse=hib)
        gap = None
        if len(ranked) >= 2:
            best, second = values[ranked[0]], values[ranked[1]]
            rel = abs(best - second) / abs(second) * 100 if second != 0 else math.inf
            gap = {"best": ranked[0], "runner_up": ranked[1], "relative_gap_percent": rel}
        table[metric] = {
            "higher_is_better": hib,
            "values": {n: values.get(n) for n in entries},
            "sem": {n: entries[n].get("sem") for n in entries},
            "best": ranked[0] if ranked else None,
            "gap": gap,
        }
    summary = None
    for metric, row in table.items():
        if row["gap"]:
            g = row["gap"]
            v = row["values"]
            summary = (
                f"{metric}: {g['best']} {v[g['best']]:.4g} vs {g['runner_up']} {v[g['runner_up']]:.4g} — "
                f"{g['relative_gap_percent']:.1f}% better "
                f"({'higher' if row['higher_is_better'] else 'lower'} is better)"
            )
            break
    return {"runs": names, "metrics": table, "summary": summary}


def _fmt(value: float | None, sem: float | None) -> str:
    if value is None:
        return "n/a"
    s = f"{value:.4g}"
    if sem is not None and isinstance(sem, (int, float)) and math.isfinite(sem):
        s += f" ± {sem:.2g}"
    return s


def to_markdown(comp: dict[str, Any], sources: dict[str, str]) -> str:
    """Markdown table: one row per run, one column per metric; the best value per metric in bold with ★."""
    metrics = comp["metrics"]
    header = "| run | " + " | ".join(
        f"{m} {'↑' if row['higher_is_better'] else '↓'}" for m, row in metrics.items()
    )
    lines = ["# Comparison", "", header + " |", "|---" * (len(metrics) + 1) + "|"]
    for run in comp["runs"]:
        cells = []
        for row in metrics.values():
            if run not in row["values"]:
                cells.append("—")
                continue
            cell = _fmt(row["values"][run], row["sem"].get(run))
            cells.append(f"**{cell}** ★" if row["best"] == run else cell)
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines.append("")
    if comp["summary"]:
        lines += [comp["summary"], ""]
    lines += ["★ best per metric (↑ higher is better, ↓ lower is better).", "", "Sources:", ""]
    lines += [f"- {run}: `{src}`" for run, src in sources.items()]
    return "\n".join(lines) + "\n"


def write_plot(path: Path, comp: dict[str, Any]) -> None:
    """One bar chart per metric (runs on the x axis), the best bar highlighted."""
    metrics = comp["metrics"]
    fig = Figure(
        figsize=(max(3.5, 1.0 + 0.8 * len(comp["runs"])) * len(metrics), 3.4), constrained_layout=True
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (metric, row) in zip(axes, metrics.items()):
        runs = [r for r in comp["runs"] if row["values"].get(r) is not None]
        vals = [row["values"][r] for r in runs]
        colors = ["tab:orange" if r == row["best"] else "tab:blue" for r in runs]
        ax.bar(range(len(runs)), vals, color=colors)
        ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right")
        ax.set_title(f"{metric} ({'higher' if row['higher_is_better'] else 'lower'} is better)")
        ax.grid(axis="y", alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def run(
    paths: Sequence[str | Path], out: str | Path = ".", names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Compare the runs at `paths`; write comparison.{md,json,png} into `out`; return the comparison."""
    if not paths:
        raise ValueError("give at least one run folder or metrics.json")
    if names is not None and len(names) != len(paths):
        raise ValueError(f"--names has {len(names)} names for {len(paths)} runs")
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    sources: dict[str, str] = {}
    for i, p in enumerate(paths):
        file, results = load_run(p)
        name = names[i] if names is not None else file.parent.name
        base, k = name, 2
        while name in runs:  # two runs with the same folder name
            name, k = f"{base}-{k}", k + 1
        runs[name] = results
        sources[name] = str(file.resolve())
    comp = compare(runs)
    comp["sources"] = sources
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "comparison.json", comp)
    write_text(out / "comparison.md", to_markdown(comp, sources))
    write_plot(out / "comparison.png", comp)
    return comp


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: videxp-compare RUN [RUN ...] [--out DIR] [--names a,b]."""
    parser = argparse.ArgumentParser(prog="videxp-compare", description=__doc__)
    parser.add_argument("runs", nargs="+", help="videxp-evaluate run folders or metrics.json files")
    parser.add_argument("--out", default=".", help="folder for comparison.{md,json,png} (default: cwd)")
    parser.add_argument("--names", default=None, help="comma-separated run names (default: run folder names)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    comp = run(args.runs, out=args.out, names=names)
    print(to_markdown(comp, comp["sources"]))
    print(f"comparison: {Path(args.out) / 'comparison.md'}")


if __name__ == "__main__":
    main()
