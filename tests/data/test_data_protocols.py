"""Real-dataset configs and evaluation protocols end to end on stand-ins in the official on-disk formats."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import compose_cfg
from hydra.utils import instantiate
from stand_in_detector import Counting

from videxp import evaluate, sample
from videxp.data import standins

# a tiny random FDM and a fast sampler; frames big enough for LPIPS' AlexNet (>= 31 px)
TINY_MODEL = [
    "ckpt_path=random",  # a tiny model with random weights, on purpose
    "model.size=tiny",
    "model.max_frames=6",
    "model.sampling.timestep_respacing='2'",
    "inference.step_size=3",
    "sample.batch_size=4",
    "sample.video_format=none",
    "sample.grid_videos=0",
    "sample.schedule_png=false",
    "dataset.image_size=32",
    "dataset.num_workers=0",
]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Stand-in trees of the four datasets (small, written once)."""
    root = tmp_path_factory.mktemp("raw")
    return {
        "kth": standins.write_kth(
            root / "kth", persons=(1, 21, 22), actions=("boxing", "walking"), scenarios=(1,)
        ),
        "clevrer": standins.write_clevrer(root / "clevrer", ids=(0, 10000, 10001, 15000), frames=80),
        "hmdb51": standins.write_hmdb51(root / "hmdb51", classes=("brush_hair", "wave")),
        "ucf101": standins.write_ucf101(root / "ucf101", classes=("HandstandPushups", "YoYo"), groups=(1, 8)),
    }


@pytest.mark.parametrize("name", ["kth", "clevrer", "hmdb51", "ucf101"])
def test_dataset_config_reads_the_official_tree(trees, tmp_path, name):
    cfg = compose_cfg(
        "train", [f"dataset={name}", f"dataset.source.root={trees[name]}", "dataset.image_size=32"], tmp_path
    )
    dm = instantiate(cfg.dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = dm.dataset("test")
    item = test[0]
    assert item["video"].shape == (cfg.dataset.video_length, 3, 32, 32)
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    step = cfg.dataset.clips.stride
    assert np.all(np.diff(item["frames"].numpy()) == step)
    if name == "clevrer":
        assert item["label"] == -1 and item["prompt"] == ""
    else:
        assert 0 <= item["label"] < cfg.dataset.num_classes and item["prompt"].startswith("a video of")
    # fixed evaluation windows: the same clip twice; training windows: drawn per access
    assert np.array_equal(test[0]["frames"], item["frames"])
    again = instantiate(cfg.dataset).dataset("test")[0]
    assert np.array_equal(again["video"].numpy(), item["video"].numpy())


def test_ucf101_prompt_and_label_come_from_the_folder(trees, tmp_path):
    cfg = compose_cfg("train", ["dataset=ucf101", f"dataset.source.root={trees['ucf101']}"], tmp_path)
    test = instantiate(cfg.dataset).dataset("test")
    items = [test[i] for i in range(len(test))]
    hs = [it for it in items if it["video_id"].startswith("HandstandPushups/")]
    assert hs and all(it["label"] == 36 for it in hs)  # classInd.txt: 37 HandstandPushups (1-based)
    assert hs[0]["prompt"] == "a video of a person doing handstand pushups"


def test_short_videos_are_skipped_with_a_logged_reason(trees, tmp_path, caplog):
    overrides = ["dataset=hmdb51", f"dataset.source.root={trees['hmdb51']}", "dataset.clips.train_mode=fixed"]
    cfg = compose_cfg("train", [*overrides, "dataset.source.options.include_unused=true"], tmp_path)
    with caplog.at_level("WARNING"):
        test = instantiate(cfg.dataset).dataset("train")  # the short stand-in clip is tagged 0 (unused)
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped and any(f"{standins.HMDB51_SHORT} frames" in r.getMessage() for r in skipped)
    assert len(test) == len(test.source) - len(test.sampler.skipped)


PROTOCOLS = {
    "kth_srvp": ["dataset.clips.num_clips=3", "sample.num_samples=2"],
    "kth_mcvd": ["dataset.clips.num_clips=3", "sample.num_samples=2"],
    "clevrer_river": [],
    "ucf101_larp": ["dataset.clips.num_clips=3", "metric.fvd.num_real=3", "metric.fvd.num_fake=3"],
    "ucf101_styleganv": ["sample.stop_index=4"],
    "hmdb51_continuation": [],
}
DATASET_OF = {"kth": "kth", "clevrer": "clevrer", "ucf101": "ucf101", "hmdb51": "hmdb51"}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_protocol_runs_end_to_end(trees, tmp_path, protocol, request):
    root = trees[DATASET_OF[protocol.split("_")[0]]]
    overrides = [f"experiment={protocol}", f"dataset.source.root={root}", *TINY_MODEL, *PROTOCOLS[protocol]]
    scfg = compose_cfg("sample", overrides, tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = sample.run(scfg)
        samples_dir = tmp_path / "s" / "samples"
        manifest = json.loads((samples_dir / "manifest.json").read_text())
        assert manifest["dataset"]["name"] == scfg.dataset.name
        eval_overrides = [o for o in overrides if not o.startswith("sample.")]
        ecfg = compose_cfg("evaluate", [*eval_overrides, f"eval_dir={samples_dir}"], tmp_path / "e")
        if "lpips" in ecfg.metric:
            request.getfixturevalue("alex_state")
        metrics = {
            name: instantiate(node, **({"detector": Counting(), "use_cache": False} if name == "fvd" else {}))
            for name, node in ecfg.metric.items()
        }
        results = evaluate.run(ecfg, metrics=metrics)
    assert set(results) == set(ecfg.metric)
    assert summary["written"] == len(manifest["samples"])
    for name, res in results.items():
        assert np.isfinite(res["value"]), name
    if "psnr" in results:
        assert results["psnr"]["reduction"] == ecfg.metric.psnr.reduction
    if "fvd" in results:
        assert results["fvd"]["settings"]["protocol"] == ecfg.metric.fvd.protocol
    assert (tmp_path / "e" / "metrics.json").is_file()
