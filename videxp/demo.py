"""`make demo`: train a tiny FDM on moving_shapes, sample the test videos, evaluate, print where it all is."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _run(entry: str, *overrides: str) -> None:
    cmd = [sys.executable, "-m", f"videxp.{entry}", *overrides]
    print("$ " + " ".join(["videxp-" + entry, *overrides]), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-name", default=f"demo_{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for all three stages")
    args = parser.parse_args(argv)
    common = ["experiment=demo", f"run_name={args.run_name}", *args.overrides]
    train_dir = Path("outputs/train") / args.run_name
    sample_dir = Path("outputs/sample") / args.run_name
    eval_dir = Path("outputs/evaluate") / args.run_name
    _run("train", *common)
    _run("sample", *common, f"ckpt_path={train_dir}")
    _run("evaluate", *common, f"eval_dir={sample_dir / 'samples'}")
    grids = sorted((sample_dir / "videos").glob("grid_*"))
    print("\nvidexp demo finished")
    print(f"  checkpoints : {train_dir / 'checkpoints'}")
    print(f"  samples     : {sample_dir / 'samples'}")
    print(
        f"  grid        : {grids[0] if grids else '(none)'}   (rows: videos; columns: ground truth, samples)"
    )
    print(f"  schedule    : {sample_dir / 'schedule.png'}")
    print(f"  metrics     : {eval_dir / 'metrics.json'}  (+ per_frame.csv, per_frame.png)\n")
    report = json.loads((eval_dir / "metrics.json").read_text())
    print(f"  {'metric':<8} {'value':>10}  frames {report['scored_frames']}, {report['num_files']} samples")
    for name, result in report.items():
        if isinstance(result, dict) and "value" in result:
            print(f"  {name:<8} {result['value']:>10.4f}")


if __name__ == "__main__":
    main()
