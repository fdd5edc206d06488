"""experiment=naive_finetune end to end: tiny FDM on an HMDB51 stand-in, base weights restored, resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import TINY, compose_cfg

from videxp import sample
from videxp.data.standins import write_hmdb51
from videxp.workflows import naive_finetune as naive

COMMON = [
    "experiment=naive_finetune",
    "ckpt_path=random",  # tiny models from random weights, on purpose
    "naive_finetune.num_videos=2",
    "naive_finetune.steps=2",
    "naive_finetune.lr=1e-3",  # visible change in 2 steps
    *[o for o in TINY if o.startswith("trainer.")],
    "dataset.image_size=32",  # LPIPS-alex needs >= 31 px
    "inference.obs_length=8",
    "device=cpu",
]
MODELS = {  # model -> (overrides, video_length)
    "fdm": (
        [
            *[o for o in TINY if o.startswith("model.")],
            "dataset.video_length=14",  # W5's 45 frames take minutes with FDM on CPU; same geometry
            "inference.step_size=3",
        ],
        14,
    ),
    "opensora": (
        [
            "model=opensora",
            "model.size=tiny",
            "model.max_frames=49",
            "model.sampling.steps=2",  # the preset's call plan: 45 frames = 8 observed + 37 in one call
        ],
        45,
    ),
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return write_hmdb51(tmp_path_factory.mktemp("hmdb") / "hmdb51", frames=48)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_naive_finetune_end_to_end_and_resume(model, raw, tmp_path, alex_state, monkeypatch):
    overrides, frames = MODELS[model]
    cfg = compose_cfg("sample", [*COMMON, *overrides, f"dataset.source.root={raw}"], tmp_path)
    assert cfg.model.optim.lr == pytest.approx(1e-3)
    calls = []
    real_finetune = naive.finetune_one

    def interrupted(cfg_, module, item):
        calls.append(int(item["index"]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job dies while fine-tuning the second video
        return real_finetune(cfg_, module, item)

    monkeypatch.setattr(naive, "finetune_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample.run(cfg)
    assert (tmp_path / "finetuned" / "samples" / "sample_0000-0.npy").is_file()
    assert not (tmp_path / "finetuned" / "samples" / "sample_0001-0.npy").exists()

    calls.clear()
    summary = sample.run(cfg)  # rerun: video 0 is skipped, video 1 is done
    assert calls == [1]
    log = [json.loads(line) for line in (tmp_path / "finetune_log.jsonl").read_text().splitlines()]
    assert [r["video"] for r in log] == [0, 1]
    assert {r["base_checksum"] for r in log} == {summary["base_checksum"]}  # base restored exactly each time

    for arm in ("baseline", "finetuned"):
        doc = json.loads((tmp_path / arm / "metrics.json").read_text())
        assert doc["label"] == arm and set(doc) >= {"psnr", "ssim", "lpips"}
        assert doc["scored_frames"] == [8, frames]  # the generated frames
    base = np.load(tmp_path / "baseline" / "samples" / "sample_0000-0.npy")
    tuned = np.load(tmp_path / "finetuned" / "samples" / "sample_0000-0.npy")
    assert base.shape == tuned.shape == (frames, 32, 32, 3)
    assert np.array_equal(base[:8], tuned[:8]) and not np.array_equal(base[8:], tuned[8:])
    rows = list(csv.DictReader((tmp_path / "per_video.csv").open()))
    assert [r["video"] for r in rows] == ["0", "1"]
    psnr = summary["metrics"]["psnr"]
    assert psnr["delta"] == pytest.approx(psnr["finetuned"] - psnr["baseline"])
    mean_delta = np.mean([float(r["psnr_delta"]) for r in rows])
    assert mean_delta == pytest.approx(psnr["delta"], abs=1e-9)
    top = json.loads((tmp_path / "metrics.json").read_text())  # beside per_video.csv: both arms per metric
    assert (
        top["metrics"]["psnr"] == pytest.approx(psnr) and top["metrics"]["lpips"]["higher_is_better"] is False
    )
    if model == "opensora":  # the conditioning actually used, recorded with the samples
        manifest = json.loads((tmp_path / "baseline" / "samples" / "manifest.json").read_text())
        (call,) = manifest["model"]["effective_conditioning"]
        assert (call["model_frames"], call["padded_frames"]) == (49, 4)
        assert call["conditioned_pixel_frames"] == [0, 4]


def test_experiment_is_w5_geometry(tmp_path):
    cfg = compose_cfg("sample", ["experiment=naive_finetune", "model=wan_lora"], tmp_path)
    assert cfg.dataset.video_length == 45 and cfg.inference.obs_length == 8
    assert cfg.model.optim.lr == pytest.approx(1e-5) and set(cfg.metric) == {"psnr", "ssim", "lpips"}
    cfg = compose_cfg("sample", ["experiment=naive_finetune", "model=opensora"], tmp_path)
    assert cfg.model.optim.lr == pytest.approx(1e-5)
    # W5's Open-Sora protocol by default: the 37 frames in one call, training conditions latent_t // 2
    assert cfg.inference.step_size == 37 and cfg.inference.obs_length + 37 == cfg.dataset.video_length
    assert cfg.model.training.cond_type == "v2v_head" and cfg.model.training.condition_frames == "half"
    assert cfg.model.training.cache_clip_latents is True
    over = [
        "experiment=naive_finetune",
        "model=opensora",
        "inference.step_size=5",
        "naive_finetune.condition_frames=8",
    ]
    cfg = compose_cfg("sample", over, tmp_path)  # overrides win over the preset
    assert cfg.inference.step_size == 5 and cfg.model.training.condition_frames == 8


def test_opensora_half_conditioning_takes_the_first_half_of_the_latents():
    from videxp.models.opensora.module import OpenSoraModule

    half = OpenSoraModule(size="tiny", training={"condition_frames": "half"})
    assert half.cond_index(13) == list(range(6)) and half.cond_index(4) == [0, 1]
    assert OpenSoraModule(size="tiny", training={"condition_frames": 8}).cond_index(13) == [0, 1]
    with pytest.raises(ValueError, match="condition_frames must be a positive int or 'half'"):
        OpenSoraModule(size="tiny", training={"condition_frames": "third"})


def test_base_weights_restore_exactly():
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    held = naive.BaseWeights(net)
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.add_(0.5)
    assert naive.state_checksum(net) != held.checksum
    assert held.restore() == held.checksum
