"""`make demo`: train a tiny FDM on moving_shapes, sample the test videos, evaluate, print where it all is."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


class StepFailed(Exception):
    """A demo step exited non-zero (its own error line is already printed above)."""

    def __init__(self, step: str, entry: str, code: int) -> None:
        super().__init__(f"step {step} (videxp-{entry}) failed with exit code {code}; its error is above")
        self.code = code


def _run(step: str, entry: str, *overrides: str) -> float:
    """Run `videxp-<entry>` with the overrides in a fresh process; returns its wall time in seconds.
    StepFailed when it exits non-zero."""
    print(f"\n[{step}] $ " + " ".join(["videxp-" + entry, *overrides]), flush=True)
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", f"videxp.{entry}", *overrides]).returncode
    if code != 0:
        raise StepFailed(step, entry, code)
    return time.perf_counter() - start


def summary(report: dict) -> str:
    """The result table: each metric of the model beside the trivial baselines scored on the same frames."""
    baselines = [b for b in report.get("baselines", {}) if b != "settings"]
    lines = [f"  {'metric':<8} {'model':>10}" + "".join(f" {b:>12}" for b in baselines)]
    for name, result in report.items():
        if isinstance(result, dict) and "value" in result:
            cells = "".join(
                f" {report['baselines'][b].get(name, {}).get('value', float('nan')):>12.4f}"
                for b in baselines
            )
            lines.append(f"  {name:<8} {result['value']:>10.4f}{cells}")
    blank = report.get("baselines", {}).get("settings", {}).get("blank")
    if blank:
        lines.append(f"  (repeat_last: the last observed frame repeated; blank: {blank})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-name", default=f"demo_{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for all three stages")
    args = parser.parse_args(argv)
    common = ["experiment=demo", f"run_name={args.run_name}", *args.overrides]
    train_dir = Path("outputs/train") / args.run_name
    sample_dir = Path("outputs/sample") / args.run_name
    eval_dir = Path("outputs/evaluate") / args.run_name
    try:
        seconds = {
            "train": _run("1/3 train", "train", *common),
            "sample": _run("2/3 sample", "sample", *common, f"ckpt_path={train_dir}"),
            "evaluate": _run("3/3 evaluate", "evaluate", *common, f"eval_dir={sample_dir / 'samples'}"),
        }
    except StepFailed as failed:
        print(f"videxp-demo: error: {failed}", file=sys.stderr, flush=True)
        sys.exit(failed.code if failed.code > 0 else 128 - failed.code)  # killed by a signal: 128 + signal
    grids = sorted((sample_dir / "videos").glob("grid_*.gif"))
    report = json.loads((eval_dir / "metrics.json").read_text())
    print("\nvidexp demo finished in " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    print(f"  curves      : {train_dir / 'curves.png'}  (loss and sampled validation PSNR/SSIM vs step)")
    print(f"  checkpoints : {train_dir / 'checkpoints'}")
    print(f"  samples     : {sample_dir / 'samples'}")
    if grids:
        print(f"  grid        : {grids[0]}  (rows: videos; columns: ground truth, samples)")
        print(f"                {grids[0].with_suffix('.png')}  (a still: a row per video, frames →)")
    print(f"  metrics     : {eval_dir / 'metrics.json'}  (+ per_frame.csv, per_frame.png)\n")
    print(f"  frames {report['scored_frames']} of {report['num_files']} samples:")
    print(summary(report) + "\n")


if __name__ == "__main__":
    main()
