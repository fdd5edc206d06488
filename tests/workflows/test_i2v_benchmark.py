"""experiment=i2v_benchmark end to end: HMDB51 stand-in, tiny Wan and FramePack, random-weight I3D."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf
from PIL import Image

from videxp import evaluate, sample
from videxp.data.standins import write_hmdb51
from videxp.metrics.detector import fixture_weights
from videxp.metrics.i3d import InceptionI3d
from videxp.scoring import comparison
from videxp.video import read_video
from videxp.workflows.i2v_benchmark.generate import output_frames, playback_speed
from videxp.workflows.i2v_benchmark.summary import fvd_band

SIZE = 32  # frames: a multiple of 16 for both pipelines
COMMON = [
    "experiment=i2v_benchmark",
    "benchmark.per_class=1",
    "benchmark.reference_frames=9",  # the I3D needs >= 9 frames
    f"dataset.image_size=[{SIZE},{SIZE}]",
    "inference.video_length=9",  # Wan: 4k+1; FramePack (window 2): 1 + 8 per section
    "inference.step_size=8",
    "inference.max_frames=9",
    "model.size=tiny",
    "ckpt_path=random",  # size=tiny: random components, on purpose
    "model.sampling.steps=2",
    f"model.sampling.height={SIZE}",
    f"model.sampling.width={SIZE}",
    "metric.fvd.num_frames=9",
    "device=cpu",
]
WAN = [
    "model=wan",
    *[f"model.dtypes.{k}=fp32" for k in ("transformer", "text_encoder", "image_encoder", "vae")],
]
FRAMEPACK = ["model=framepack", "model.sampling.latent_window_size=2"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Both tiny methods sampled (each scoring itself), then videxp-evaluate over the benchmark."""
    tmp = tmp_path_factory.mktemp("bench")
    raw = write_hmdb51(tmp / "hmdb51", frames=48)
    detector = tmp / "i3d_random.pt"
    torch.save(fixture_weights(InceptionI3d(400), seed=0).state_dict(), detector)
    base = [
        *COMMON,
        f"dataset.source.root={raw}",
        f"paths.output_root={tmp / 'outputs'}",
        f"metric.fvd.detector={detector}",
        "metric.fvd.detector_kind=piergiaj",  # read as W1's rgb_imagenet.pt is
        f"metric.fvd.cache_dir={tmp / 'fvd_cache'}",
    ]
    runs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method, extra in (("wan", WAN), ("framepack", FRAMEPACK)):
            cfg = compose_cfg("sample", [*base, *extra, f"benchmark.method={method}"], tmp / "runs" / method)
            runs[method] = sample.run(cfg)
        cfg = compose_cfg("evaluate", base, tmp / "runs" / "evaluate")
        results = evaluate.run(cfg)
    root = tmp / "outputs" / "i2v_benchmark" / "hmdb51_n1"
    return {"tmp": tmp, "base": base, "root": root, "runs": runs, "results": results}


def test_starting_frames_manifest_and_references(bench):
    root = bench["root"]
    rows = [json.loads(line) for line in (root / "starting_frames_manifest.jsonl").read_text().splitlines()]
    assert sorted(r["category"] for r in rows) == ["brush_hair", "cartwheel", "wave"]  # one per class
    doc = json.loads((root / "benchmark.json").read_text())
    assert doc["num_videos"] == 3 and doc["fps"] == 8.0 and doc["reference_frames"] == 9
    for row in rows:
        assert row["prompt"].startswith("a video of a person doing")
        assert row["frame_step"] == 4 and row["source_fps"] == pytest.approx(30.0)  # 30 fps -> 7.5 fps
        assert np.diff(row["source_frames"]).tolist() == [4] * 8
        png = np.asarray(Image.open(root / row["frame_path"]))
        ref = read_video(root / row["reference_path"])  # [9, 32, 32, 3] mp4
        assert png.shape == (SIZE, SIZE, 3) and ref.shape == (9, SIZE, SIZE, 3)
        assert (
            np.abs(ref[0].astype(int) - png.astype(int)).mean() < 6
        )  # frame 0 = the start image (codec error)
    assert "round(source fps / 8" in doc["reference_resampling"]


def test_each_method_generates_one_video_per_starting_frame(bench):
    root = bench["root"]
    for method, fps in (("wan", 16.0), ("framepack", 30.0)):
        files = sorted((root / "generated_videos" / method).rglob("*.mp4"))
        assert len(files) == 3
        assert read_video(files[0]).shape == (9, SIZE, SIZE, 3)
        info = json.loads((root / "methods" / method / "method.json").read_text())
        assert info["timing"]["model_fps"] == fps and info["timing"]["output_fps"] == 8.0
        assert info["timing"]["playback_speed"] == pytest.approx(8.0 / fps)
        manifest = json.loads((root / "methods" / method / "samples" / "manifest.json").read_text())
        assert manifest["model"]["steps"] == 2 and len(manifest["samples"]) == 3
    wan = json.loads((root / "methods" / "wan" / "method.json").read_text())
    fp = json.loads((root / "methods" / "framepack" / "method.json").read_text())
    assert wan["model"]["guidance_scale"] == 5.0 and wan["sampling"]["guidance_scale"] == 5.0
    assert fp["model"]["guidance_scale"] == 9.0  # W1's per-method guidance
    # the mp4 at 8 fps holds what the sample file holds
    sample0 = np.load(root / "methods" / "wan" / "samples" / "sample_0000-0.npy")
    first = json.loads((root / "starting_frames_manifest.jsonl").read_text().splitlines()[0])
    exported = read_video(root / "generated_videos" / "wan" / f"{first['id']}.mp4")
    assert np.abs(exported.astype(int) - sample0.astype(int)).mean() < 6


def test_per_method_metrics_and_comparison_summary(bench):
    tmp, results = bench["tmp"], bench["results"]
    assert set(results) == {"wan", "framepack"}
    for method in ("wan", "framepack"):
        fvd = results[method]["fvd"]
        assert fvd["num_real"] == 3 and fvd["num_fake"] == 3 and fvd["value"] > 0
        w1 = json.loads((tmp / "runs" / "evaluate" / method / "fvd.json").read_text())
        assert w1["fvd"] == pytest.approx(fvd["value"]) and w1["generated_features_shape"] == [3, 1024]
        # the sample run scored its own method the same way
        own = json.loads((tmp / "runs" / method / "metrics.json").read_text())
        assert own["label"] == method and own["fvd"]["value"] == pytest.approx(fvd["value"], rel=1e-6)
    # W1's timestamped names beside the stable ones
    assert len(list((tmp / "runs" / "evaluate" / "wan").glob("fvd_wan_*.json"))) == 1
    assert len(list((tmp / "runs" / "evaluate").glob("benchmark_summary_*.json"))) == 1
    summary = json.loads((tmp / "runs" / "evaluate" / "benchmark_summary.json").read_text())
    assert set(summary["methods"]) == {"wan", "framepack"} and summary["num_reference_videos"] == 3
    row = summary["methods"]["wan"]
    assert row["num_videos"] == 3 and row["fvd"] == pytest.approx(results["wan"]["fvd"]["value"])
    assert row["fvd_band"] == fvd_band(row["fvd"]) and row["output_file"].endswith("fvd.json")
    assert "% better" in summary["summary"]
    for name in ("comparison.md", "comparison.json", "comparison.png"):
        assert (tmp / "runs" / "evaluate" / name).is_file()
    # videxp-compare over the sample runs' folders names rows by method
    comp = comparison.compare_runs([tmp / "runs" / "wan", tmp / "runs" / "framepack"], out=tmp / "cmp")
    assert comp["runs"] == ["wan", "framepack"]


def test_inputs_are_reused_and_never_mixed(bench, tmp_path):
    root = bench["root"]
    cfg = compose_cfg("sample", [*bench["base"], *WAN, "benchmark.method=wan", "benchmark.fps=10"], tmp_path)
    with pytest.raises(ValueError, match="benchmark.json was made with different .*fps"):
        sample.run(cfg)
    assert json.loads((root / "benchmark.json").read_text())["fps"] == 8.0


def test_method_settings_and_capability_errors(bench, tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # no Hydra run: the method must be given
    over = [*bench["base"], f"paths.output_root={tmp_path}"]
    with pytest.raises(ValueError, match="set benchmark.method"):
        sample.run(compose_cfg("sample", [*over, *WAN], tmp_path))


def test_method_presets_are_composed_and_overrides_win(tmp_path):
    """W1's per-method guidance is part of the composed config: --cfg job shows the value the run uses."""
    guidance = {
        model: compose_cfg("sample", ["experiment=i2v_benchmark", f"model={model}"], tmp_path).model.sampling
        for model in ("wan", "framepack")
    }
    assert guidance["wan"].guidance_scale == 5.0
    assert guidance["framepack"].guidance_scale == 9.0 and guidance["framepack"].true_cfg_scale == 1.0
    outside = compose_cfg("sample", ["model=framepack"], tmp_path).model.sampling
    assert outside.guidance_scale == 10.0  # the preset belongs to the benchmark only
    args = ["experiment=i2v_benchmark", "model=framepack", "model.sampling.guidance_scale=7", "--cfg", "job"]
    shown = subprocess.run(
        [sys.executable, "-m", "videxp.sample", *args], capture_output=True, text=True, check=True
    ).stdout
    assert OmegaConf.create(shown).model.sampling.guidance_scale == 7.0


def test_sweep_jobs_get_one_method_label_each(tmp_path, monkeypatch):
    """A sweep over model.* settings names each job's method after its model and its overrides (W1's
    suffix per setting); the labels follow W1 (wan2.1_i2v, framepack_i2v)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from videxp.scoring.selection import CONF_DIR
    from videxp.workflows.i2v_benchmark.generate import method_name

    labels = []
    for model, steps in (("wan", 10), ("wan", 50), ("framepack", 20)):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            over = ["experiment=i2v_benchmark", f"model={model}", f"model.sampling.steps={steps}"]
            cfg = compose("sample", overrides=over, return_hydra_config=True)
        monkeypatch.setattr(HydraConfig.instance(), "cfg", cfg)
        labels.append(method_name(cfg))
    assert labels == ["wan2.1_i2v_steps10", "wan2.1_i2v_steps50", "framepack_i2v_steps20"]
    assert (
        method_name(compose_cfg("sample", ["experiment=i2v_benchmark", "benchmark.method=mine"], tmp_path))
        == "mine"
    )


def test_output_timing_rules():
    assert output_frames(81, 16.0, 8.0, "as_generated") == list(range(81))
    assert output_frames(81, 16.0, 8.0, "resample") == list(range(0, 81, 2))  # 41 frames, real speed
    assert len(output_frames(81, 30.0, 8.0, "resample")) == 22  # FramePack: 2.7 s at 8 fps
    assert playback_speed(output_frames(81, 16.0, 8.0, "resample"), 16.0, 8.0) == 1.0
    with pytest.raises(ValueError, match="cannot upsample"):
        output_frames(9, 4.0, 8.0, "resample")
    assert [fvd_band(v) for v in (32.49, 40.73, 75, 250, 400, 900)] == [
        "exceptional",
        "exceptional",
        "excellent",
        "good",
        "moderate",
        "poor",
    ]
