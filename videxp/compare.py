"""videxp-compare: a table (md, json, csv, plots) of evaluation runs or whole sweeps, the best marked."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from videxp.scoring.comparison import compare_runs, to_markdown
from videxp.utils.cli import reports_errors


@reports_errors("videxp-compare")
def main(argv: Sequence[str] | None = None) -> None:
    """CLI: videxp-compare RUN [RUN ...] [--out DIR] [--names a,b]."""
    parser = argparse.ArgumentParser(prog="videxp-compare", description=__doc__)
    parser.add_argument(
        "runs", nargs="+", help="run folders, metrics.json files or folders of runs (multirun)"
    )
    parser.add_argument("--out", default=".", help="folder for comparison.{md,json,png} (default: cwd)")
    parser.add_argument(
        "--names", default=None, help="comma-separated run names (default: label / overrides)"
    )
    parser.add_argument(
        "--no-group-seeds", action="store_true", help="one row per seed instead of mean ± s.e."
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    comp = compare_runs(args.runs, out=args.out, names=names, group_seeds=not args.no_group_seeds)
    print(to_markdown(comp, comp["sources"]))
    print(f"comparison: {Path(args.out) / 'comparison.md'}")


if __name__ == "__main__":
    main()
