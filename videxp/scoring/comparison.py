"""Comparing evaluation runs or whole sweeps: one table (md, json, csv, plots), the best marked."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from videxp.utils.io import atomic_path, write_json, write_text
from videxp.video.walk import walk

# Direction when a result does not say (`higher_is_better` in the metric result wins).
HIGHER_IS_BETTER = {"fvd": False, "lpips": False, "fid": False, "psnr": True, "ssim": True}


def load_run(path: str | Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """(metrics.json path, {metric: result}) of a run folder or a metrics.json file."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json (give a videxp-evaluate run folder or the file)")
    return file, _results(_read(file), file)


def _read(file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"{file}: expected a JSON object of metric results, got a {type(doc).__name__}")
    return doc


def _results(doc: dict[str, Any], file: Path) -> dict[str, dict[str, Any]]:
    results = {k: v for k, v in doc.items() if isinstance(v, dict) and "value" in v}
    if not results:
        raise ValueError(f"{file}: holds no metric results (objects with a 'value')")
    for name, result in results.items():
        value = result["value"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{file}: {name}.value must be a number or null, got {value!r}")
    return results


def baseline_values(doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{baseline: {metric: value}} of a metrics.json with baselines (`repeat_last`, `blank`), else {}."""
    found = {}
    for name, scores in (doc.get("baselines") or {}).items():
        if name == "settings" or not isinstance(scores, dict):
            continue
        values = {
            m: r["value"] for m, r in scores.items() if isinstance(r, dict) and r.get("value") is not None
        }
        if values:
            found[name] = values
    return found


def discover(path: str | Path) -> list[Path]:
    """The metrics.json files a path stands for: the file, the folder's own, or every one below a folder
    without its own (a multirun sweep, a benchmark evaluation), sorted; hidden folders are skipped."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / "metrics.json").is_file():
        return [path / "metrics.json"]
    if path.is_dir():
        found = sorted(f for _, _, files in walk(path) for f in files if f.name == "metrics.json")
        if found:
            return found
    raise FileNotFoundError(
        f"{path}: no metrics.json (give a videxp-evaluate run folder, the file, or a folder of runs)"
    )


def run_overrides(file: Path) -> list[str]:
    """The Hydra overrides of the run that wrote `file` (its .hydra/overrides.yaml), [] when unknown."""
    hydra_file = file.parent / ".hydra" / "overrides.yaml"
    if not hydra_file.is_file():
        return []
    loaded = yaml.safe_load(hydra_file.read_text()) or []
    return [str(o) for o in loaded] if isinstance(loaded, list) else []


def _is_seed(override: str) -> bool:
    return override.lstrip("+~").split("=", 1)[0] == "seed"


def row_names(
    files: Sequence[Path], docs: Sequence[dict[str, Any]], roots: Sequence[Path], drop_seed: bool = True
) -> list[str]:
    """A row name per run: its `label` (benchmark methods), else the overrides that differ between the runs
    (without `seed` when `drop_seed`, so seeds of one setting share a name), else its folder relative to
    what was given."""
    overrides = [run_overrides(f) for f in files]
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    names = []
    for file, doc, root, over in zip(files, docs, roots, overrides, strict=True):
        varying = [o for o in over if o not in common and not (drop_seed and _is_seed(o))]
        if isinstance(doc.get("label"), str):
            names.append(",".join([doc["label"], *varying]))
        elif varying:
            names.append(",".join(varying))
        elif over and any(_is_seed(o) for o in over):
            names.append("all seeds")
        else:
            rel = file.parent.relative_to(root) if file.parent != root else Path(file.parent.name)
            names.append(rel.as_posix() or file.parent.name)
    return names


def seed_of(file: Path) -> str | None:
    """The `seed=` override of the run that wrote `file`, if any."""
    return next((o.split("=", 1)[1] for o in run_overrides(file) if _is_seed(o)), None)


def pool_seeds(group: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Results of several seeds of one setting as one row: per metric the mean over seeds, s.e. =
    std (ddof 1) / sqrt(n), `n_seeds`, and the mean per-frame curve where every seed has one."""
    if len(group) == 1:
        return group[0]
    pooled: dict[str, dict[str, Any]] = {}
    for metric in dict.fromkeys(m for res in group for m in res):
        entries = [res[metric] for res in group if metric in res]
        values = np.array([e["value"] for e in entries if e.get("value") is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        row: dict[str, Any] = {
            "value": float(values.mean()) if values.size else None,
            "sem": float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else None,
            "n_seeds": int(values.size),
            "seed_values": values.tolist(),
        }
        hib = [e["higher_is_better"] for e in entries if isinstance(e.get("higher_is_better"), bool)]
        if hib:
            row["higher_is_better"] = hib[0]
        curves = [e.get("per_frame_mean") for e in entries]
        frames = entries[0].get("frames")
        if (
            frames
            and all(c and len(c) == len(frames) for c in curves)
            and all(e.get("frames") == frames for e in entries)
        ):
            row["frames"] = frames
            row["per_frame_mean"] = np.nanmean(np.array(curves, dtype=np.float64), axis=0).tolist()
        pooled[metric] = row
    return pooled


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


def baseline_rows(comp: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Table rows for the runs' baselines: `<baseline> (baseline)` when every run that has them scored the
    same values (one test set), else `<run> · <baseline>`; each row {metric: value}."""
    per_run = {run: b for run, b in (comp.get("baselines") or {}).items() if b}
    if not per_run:
        return {}
    distinct = {json.dumps(b, sort_keys=True) for b in per_run.values()}
    if len(distinct) == 1:
        return {f"{name} (baseline)": values for name, values in next(iter(per_run.values())).items()}
    return {f"{run} · {name}": values for run, b in per_run.items() for name, values in b.items()}


def to_markdown(comp: dict[str, Any], sources: dict[str, str]) -> str:
    """Markdown table: one row per run, one column per metric; the best value per metric in bold with ★;
    then the trivial baselines in italics (never ranked)."""
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
    for label, values in baseline_rows(comp).items():
        cells = [f"*{values[m]:.4g}*" if m in values else "—" for m in metrics]
        lines.append(f"| *{label}* | " + " | ".join(cells) + " |")
    lines.append("")
    if comp["summary"]:
        lines += [comp["summary"], ""]
    lines += ["★ best per metric (↑ higher is better, ↓ lower is better).", ""]
    if baseline_rows(comp):
        lines += ["*Italic rows*: trivial predictors scored on the same frames (not ranked).", ""]
    lines += ["Sources:", ""]
    for run, src in sources.items():
        files = src if isinstance(src, list) else [src]
        seeds = f" ({len(files)} seeds, mean ± s.e.)" if len(files) > 1 else ""
        lines += [f"- {run}{seeds}: " + ", ".join(f"`{f}`" for f in files)]
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
        errs = [row["sem"].get(r) or 0.0 for r in runs]
        colors = ["tab:orange" if r == row["best"] else "tab:blue" for r in runs]
        ax.bar(range(len(runs)), vals, yerr=errs, capsize=3, color=colors)
        ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right")
        ax.set_title(f"{metric} ({'higher' if row['higher_is_better'] else 'lower'} is better)")
        ax.grid(axis="y", alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_csv(path: Path, comp: dict[str, Any]) -> None:
    """One row per run: name, n_seeds, then value and s.e. per metric, then the run's overrides."""
    metrics = comp["metrics"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "n_seeds", *[c for m in metrics for c in (m, f"{m}_sem")], "overrides"])
        for run in comp["runs"]:
            cells = []
            for row in metrics.values():
                value, sem = row["values"].get(run), row["sem"].get(run)
                cells += ["" if value is None else repr(value), "" if sem is None else repr(sem)]
            over = " ".join(comp["overrides"].get(run, []))
            writer.writerow([run, comp["n_seeds"].get(run, 1), *cells, over])


def write_curves(path: Path, runs: dict[str, dict[str, dict[str, Any]]]) -> bool:
    """Per-frame curves (one subplot per frame metric, one line per run); False when no run has any."""
    metrics = list(
        dict.fromkeys(
            m for res in runs.values() for m, r in res.items() if r.get("per_frame_mean") and r.get("frames")
        )
    )
    if not metrics:
        return False
    fig = Figure(figsize=(4.2 * len(metrics), 3.3), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for name, res in runs.items():
            r = res.get(metric) or {}
            if r.get("per_frame_mean") and r.get("frames"):
                curve = [math.nan if v is None else v for v in r["per_frame_mean"]]
                ax.plot(r["frames"], curve, label=name, lw=1.4)
        ax.set_title(metric)
        ax.set_xlabel("frame index")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return True


def compare_runs(
    paths: Sequence[str | Path],
    out: str | Path = ".",
    names: Sequence[str] | None = None,
    group_seeds: bool = True,
) -> dict[str, Any]:
    """Compare the runs at `paths` (run folders, metrics.json files, or folders of runs such as a multirun
    sweep); write comparison.{md,json,csv,png} (+ comparison_curves.png) into `out`; return the comparison.

    Rows are named by `names`, else per `row_names`; with `group_seeds`, runs that differ only in `seed=`
    become one row with the mean ± s.e. over seeds.
    """
    if not paths:
        raise ValueError("give at least one run folder or metrics.json")
    files, roots = [], []
    for p in paths:
        found = discover(p)
        files += found
        roots += [Path(p) if Path(p).is_dir() else Path(p).parent] * len(found)
    if names is not None and len(names) != len(files):
        raise ValueError(f"--names has {len(names)} names for {len(files)} runs")
    docs = [_read(f) for f in files]
    labels = list(names) if names is not None else row_names(files, docs, roots, drop_seed=group_seeds)
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        key = label
        if not group_seeds or seed_of(files[i]) is None:  # identical names without seeds stay apart
            k = 2
            while key in groups:
                key, k = f"{label}-{k}", k + 1
        groups.setdefault(key, []).append(i)
    runs = {name: pool_seeds([_results(docs[i], files[i]) for i in idx]) for name, idx in groups.items()}
    comp = compare(runs)
    comp["sources"] = {name: [str(files[i].resolve()) for i in idx] for name, idx in groups.items()}
    comp["overrides"] = {name: run_overrides(files[idx[0]]) for name, idx in groups.items()}
    comp["n_seeds"] = {name: len(idx) for name, idx in groups.items()}
    comp["baselines"] = {name: baseline_values(docs[idx[0]]) for name, idx in groups.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "comparison.json", comp)
    write_text(out / "comparison.md", to_markdown(comp, comp["sources"]))
    write_csv(out / "comparison.csv", comp)
    write_plot(out / "comparison.png", comp)
    write_curves(out / "comparison_curves.png", runs)
    return comp
