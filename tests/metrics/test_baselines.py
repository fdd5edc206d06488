"""Trivial baselines (repeat_last, blank): exact values, and their place in metrics.json and the tables."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY, compose_cfg
from omegaconf import OmegaConf, open_dict

from videxp import evaluate
from videxp.metrics import PSNR, SSIM
from videxp.metrics.baselines import Baselines, baseline_prediction
from videxp.scoring import comparison
from videxp.utils.io import write_json, write_npy


def _score(baselines: Baselines, real: torch.Tensor, frames: range) -> dict:
    baselines.update(real, list(range(real.shape[0])), frames)
    return baselines.compute()


def test_static_video_repeat_last_is_perfect_and_black_video_blank_is_perfect():
    g = torch.Generator().manual_seed(0)
    static = torch.rand(2, 1, 3, 16, 16, generator=g).expand(2, 6, 3, 16, 16).contiguous()  # [B, T, C, H, W]
    out = _score(Baselines({"psnr": PSNR(), "ssim": SSIM()}, obs_length=2), static, range(2, 6))
    assert out["repeat_last"]["psnr"]["value"] == 100.0  # JH's cap for identical frames
    assert out["repeat_last"]["ssim"]["value"] == pytest.approx(1.0, abs=1e-12)
    assert out["blank"]["psnr"]["value"] < 20

    black = torch.zeros(2, 6, 3, 16, 16)
    black[:, :2] = 0.7  # the observed frames are not black: blank must not look at them
    out = _score(Baselines({"psnr": PSNR()}, obs_length=2), black, range(2, 6))
    assert out["blank"]["psnr"]["value"] == 100.0
    assert out["repeat_last"]["psnr"]["value"] == pytest.approx(10 * np.log10(1 / 0.49))
    assert out["blank"]["psnr"]["frames"] == [2, 3, 4, 5]
    assert out["settings"]["blank"] == "black frame (0)"


def test_exact_values_and_observed_mean_colour():
    real = torch.zeros(1, 4, 3, 4, 4)
    real[0, 0] = 0.25
    real[0, 1] = torch.tensor([0.5, 0.25, 0.0])[:, None, None]  # the last observed frame
    real[0, 2:] = 0.5
    last = baseline_prediction("repeat_last", real, 2)
    assert torch.equal(last[0, 3], real[0, 1])
    mean = baseline_prediction("blank", real, 2, blank="observed_mean")  # [1, 4, 3, 4, 4]
    assert torch.allclose(mean[0, 3, :, 0, 0], torch.tensor([0.375, 0.25, 0.125]))
    out = _score(Baselines({"psnr": PSNR()}, obs_length=2, blank="observed_mean"), real, range(2, 4))
    mse = ((0.5 - torch.tensor([0.375, 0.25, 0.125])) ** 2).mean().item()
    assert out["blank"]["psnr"]["value"] == pytest.approx(10 * np.log10(1 / mse))
    with pytest.raises(ValueError, match="observed frames"):
        Baselines({"psnr": PSNR()}, obs_length=0)
    with pytest.raises(ValueError, match="unknown baselines"):
        Baselines({"psnr": PSNR()}, obs_length=1, names=["oracle"])


def test_each_video_is_scored_once_whatever_its_samples():
    base = Baselines({"psnr": PSNR()}, obs_length=1, names=["repeat_last"])
    real = torch.rand(3, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    base.update(real[[0, 0, 1]], [0, 0, 1], range(1, 4))  # two samples of video 0 in one batch
    base.update(real[[1, 2]], [1, 2], range(1, 4))
    result = base.compute()["repeat_last"]["psnr"]
    assert result["num_videos"] == 3


def _samples_folder(tmp_path, obs_length: int) -> tuple:
    """A samples folder in videxp-sample's format holding the test clips themselves (a perfect model)."""
    cfg = compose_cfg("evaluate", TINY + [f"inference.obs_length={obs_length}"], tmp_path / "eval")
    from hydra.utils import instantiate

    dataset = instantiate(cfg.dataset).dataset("test")
    samples = tmp_path / "samples"
    entries = []
    for v in range(3):
        video = ((dataset[v]["video"].permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        write_npy(samples / f"sample_{v:04d}-0.npy", video)
        entries.append({"file": f"sample_{v:04d}-0.npy", "video": v, "sample": 0})
    inference = OmegaConf.to_container(cfg.inference, resolve=True) | {"max_frames": 6}
    write_json(
        samples / "manifest.json",
        {
            "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
            "split": "test",
            "inference": inference,
            "samples": entries,
        },
    )
    with open_dict(cfg):
        cfg.eval_dir = str(samples)
    return cfg, samples


def test_evaluate_writes_baselines_beside_the_model(tmp_path, capsys):
    cfg, _ = _samples_folder(tmp_path, obs_length=2)
    results = evaluate.run(cfg)
    assert results["psnr"]["value"] == 100.0  # the samples are the clips
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    base = doc["baselines"]
    assert set(base) == {"repeat_last", "blank", "settings"}
    assert set(base["repeat_last"]) == {"psnr", "ssim"}
    assert base["blank"]["psnr"]["frames"] == doc["psnr"]["frames"] == list(range(2, 8))
    assert 5 < base["blank"]["psnr"]["value"] < 40 and base["repeat_last"]["ssim"]["value"] < 1
    table = capsys.readouterr().out
    assert "repeat_last" in table.splitlines()[0] and "blank" in table.splitlines()[0]

    comp = comparison.compare_runs([tmp_path / "eval"], tmp_path / "compare")
    md = comparison.to_markdown(comp, comp["sources"])
    assert "*repeat_last (baseline)*" in md and "*blank (baseline)*" in md


def test_baselines_off_and_not_computed_without_observed_frames(tmp_path):
    cfg, _ = _samples_folder(tmp_path / "off", obs_length=2)
    with open_dict(cfg):
        cfg.evaluate.baselines = []
    evaluate.run(cfg)
    assert "baselines" not in json.loads((tmp_path / "off" / "eval" / "metrics.json").read_text())

    cfg, _ = _samples_folder(tmp_path / "uncond", obs_length=0)
    evaluate.run(cfg)
    assert "baselines" not in json.loads((tmp_path / "uncond" / "eval" / "metrics.json").read_text())
