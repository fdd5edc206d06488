"""Sharded sampling: shards compose to the unsharded run, partial metric states, a once-only finaliser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import TINY, compose_cfg

from videxp import evaluate, sample
from videxp.inference.shards import plan_shard, rank_from_env, resolve_shard
from videxp.scoring.finalise import finalise, partial_root

SHUFFLED = (2, 0, 1)  # shards run out of order


def _metric_overrides(root: Path) -> list[str]:
    return [
        *TINY,
        "metric=[psnr,ssim,fvd]",
        "model.sampling.timestep_respacing='2'",
        "metric.fvd.detector={_target_:stand_in_detector.Counting}",
        "metric.fvd.num_frames=6",
        f"metric.fvd.cache_dir={root / 'fvd_cache'}",
        f"paths.output_root={root}",
    ]


def _overrides(root: Path, *extra: str) -> list[str]:
    return [
        *_metric_overrides(root),
        "ckpt_path=random",  # the tiny model untrained, on purpose
        "sample.batch_size=1",
        "sample.stop_index=3",
        "sample.video_format=none",
        "sample.schedule_png=false",
        *extra,
    ]


def _run(root: Path, out: str, *extra: str) -> dict:
    cfg = compose_cfg("sample", _overrides(root, f"sample.out_dir={root / out}", *extra), root / out)
    return sample.run(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An unsharded run and the same run as 3 shards run in a shuffled order, sharing one output root."""
    root = tmp_path_factory.mktemp("shards")
    whole = _run(root, "whole")
    statuses = {k: _run(root, "sharded", "sample.num_shards=3", f"sample.shard={k}") for k in SHUFFLED}
    return root, whole, statuses


def _metrics(root: Path, out: str) -> dict:
    return json.loads((root / out / "metrics.json").read_text())


def _csv_rows(root: Path) -> list[str]:
    return (root / "fvd_report.csv").read_text().splitlines()


def test_shards_compose_to_the_unsharded_run(runs):
    root, whole, statuses = runs
    names = sorted(p.name for p in (root / "whole" / "samples").glob("*.npy"))
    assert names == [f"sample_{v:04d}-0.npy" for v in range(3)]
    for name in names:  # byte-identical samples
        assert (root / "whole/samples" / name).read_bytes() == (root / "sharded/samples" / name).read_bytes()
    assert [statuses[k]["finalise"]["status"] for k in SHUFFLED] == ["waiting", "waiting", "finalised"]
    assert statuses[1]["finalise"]["modes"] == {"psnr": "merged", "ssim": "merged", "fvd": "merged"}
    a, b = _metrics(root, "whole"), _metrics(root, "sharded")
    for name in ("psnr", "ssim"):
        assert a[name]["value"] == b[name]["value"] and a[name]["per_frame_mean"] == b[name]["per_frame_mean"]
    assert b["fvd"]["value"] == pytest.approx(a["fvd"]["value"], rel=1e-9)
    assert b["fvd"]["num_fake"] == 3 and b["num_files"] == 3
    # the merged manifest serves videxp-evaluate like an unsharded one
    manifest = json.loads((root / "sharded/samples/manifest.json").read_text())
    assert [(e["video"], e["sample"]) for e in manifest["samples"]] == [(v, 0) for v in range(3)]
    rows = _csv_rows(root)
    assert rows[0].startswith(
        "time,run_name,model,checkpoint,dataset,fvd_protocol,num_real,num_generated,fvd"
    )
    assert len(rows) == 3  # header + one row per run
    assert float(rows[2].split(",")[-1]) == pytest.approx(b["fvd"]["value"])


def test_evaluate_reads_the_merged_manifest(runs):
    root, _, _ = runs
    ecfg = compose_cfg(
        "evaluate", [*_metric_overrides(root), f"eval_dir={root / 'sharded/samples'}"], root / "e"
    )
    res = evaluate.run(ecfg)
    b = _metrics(root, "sharded")
    assert res["psnr"]["value"] == pytest.approx(b["psnr"]["value"], rel=1e-12)
    assert res["fvd"]["value"] == pytest.approx(b["fvd"]["value"], rel=1e-9)


def test_rerun_of_a_finished_shard_rewrites_nothing(runs):
    root, _, _ = runs
    files = [p for p in root.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    again = _run(root, "sharded", "sample.num_shards=3", "sample.shard=1")
    assert again["written"] == 0 and again["finalise"]["status"] == "done"
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert after == before


def test_finaliser_runs_once_under_concurrent_calls(runs, tmp_path):
    root, _, statuses = runs
    overrides = _overrides(root, f"sample.out_dir={root / 'sharded'}", "run_name=refinalised")
    cfg = compose_cfg("sample", overrides, root / "sharded")
    summary = statuses[1]
    samples_dir, plan, header = Path(summary["samples_dir"]), summary["plan"], summary["part"]
    (partial_root(samples_dir, plan.run_id) / "finalised.json").unlink()  # as if no shard had finalised
    rows_before = len(_csv_rows(root))
    barrier, results = threading.Barrier(4), []

    def call():
        barrier.wait()
        results.append(finalise(cfg, samples_dir, plan, header)["status"])

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("finalised") == 1 and set(results) <= {"finalised", "busy", "done"}
    assert len(_csv_rows(root)) == rows_before + 1  # one row, from the one call that finalised
    assert finalise(cfg, samples_dir, plan, header)["status"] == "done"  # idempotent

    # a stale lock (its process is gone) does not block: the next call breaks it and finalises
    (partial_root(samples_dir, plan.run_id) / "finalised.json").unlink()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    import socket
    import time

    lock = partial_root(samples_dir, plan.run_id) / "finalise.lock"
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "time": time.time()}))
    assert finalise(cfg, samples_dir, plan, header)["status"] == "finalised" and not lock.exists()
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}))
    (partial_root(samples_dir, plan.run_id) / "finalised.json").unlink()
    assert finalise(cfg, samples_dir, plan, header)["status"] == "busy"  # a live holder is respected
    lock.unlink()
    assert finalise(cfg, samples_dir, plan, header)["status"] == "finalised"


def test_overlapping_and_out_of_range_shards_are_errors(runs):
    root, _, _ = runs
    with pytest.raises(ValueError, match=r"shard-00000-of-00003.json.*3 shards.*num_shards=2 would overlap"):
        _run(root, "sharded", "sample.num_shards=2", "sample.shard=0")
    with pytest.raises(ValueError, match=r"sample.shard=3 is out of range for num_shards=3"):
        plan_shard(0, 3, 1, 1, None, 3, 3)
    with pytest.raises(ValueError, match=r"num_shards=4 exceeds the 3 generator calls"):
        plan_shard(0, 3, 1, 1, None, 4, 0)
    with pytest.raises(ValueError, match=r"num_samples_total=7 must be in \[1, 6\]"):
        plan_shard(0, 3, 2, 1, 7, 1, 0)


def test_plans_partition_the_items():
    whole = plan_shard(0, 10, 3, 4, 26, 1, 0)
    assert whole.stop == 9 and len(whole.items()) == 26 and whole.items()[-1] == (8, 1)
    parts = [plan_shard(0, 10, 3, 4, 26, 5, k) for k in range(5)]
    items = [it for p in parts for it in p.items()]
    assert sorted(items) == whole.items() and len(set(items)) == len(items)  # disjoint, complete
    assert [u for p in parts for u in p.mine] == list(whole.units)  # the same generator calls, in order
    assert len({p.run_id for p in parts}) == 1


def test_rank_as_shard_from_the_environment():
    assert rank_from_env("auto", {}) == (0, 1)
    assert rank_from_env("auto", {"WORLD_SIZE": "4", "RANK": "3"}) == (3, 4)
    assert rank_from_env("auto", {"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}) == (1, 2)
    assert rank_from_env("off", {"WORLD_SIZE": "4", "RANK": "3"}) == (0, 1)
    assert resolve_shard(2, 1, "auto", {"WORLD_SIZE": "4", "RANK": "3"}) == (
        7,
        8,
    )  # array task 1 of 2, rank 3
    with pytest.raises(ValueError, match="neither WORLD_SIZE"):
        rank_from_env("on", {})
    with pytest.raises(ValueError, match="bad rank environment"):
        rank_from_env("auto", {"WORLD_SIZE": "2", "RANK": "2"})
