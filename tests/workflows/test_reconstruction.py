"""experiment=ucf101_larp_rfvd: tiny LARP tokenizer reconstructions of UCF101 stand-ins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose_cfg

from videxp import evaluate
from videxp.data.standins import write_ucf101
from videxp.errors import ConfigError
from videxp.models.larp.tokenizer import LARPTokenizer, larp_tokenizer_config
from videxp.workflows.reconstruction.codec import reconstruct
from videxp.workflows.reconstruction.loop import clip_batch
from videxp.workflows.reconstruction.tokenizer import build_tokenizer, tokenizer_settings


def overrides(raw, out, *extra: str, weights=None, size: int = 16) -> list[str]:
    return [
        "experiment=ucf101_larp_rfvd",
        # the LARP keys the workflow reads (conf/model/larp.yaml will hold them), on the default model node
        "model.size=tiny",  # the tiny preset (4 x 16 x 16), seeded random weights
        f"+model.tokenizer.pretrained={weights if weights else 'null'}",
        "+model.tokenizer.dtype=fp32",
        "+model.tokenizer.deterministic=true",
        f"dataset.source.root={raw}",
        "dataset.video_length=4",
        f"dataset.image_size={size}",
        "metric=[fvd,psnr]",
        "metric.fvd.detector={_target_:stand_in_detector.Counting}",
        "metric.fvd.num_frames=4",
        f"metric.fvd.cache_dir={out / 'fvd_cache'}",
        "reconstruction.batch_size=2",
        "reconstruction.chunk_size=3",
        "device=cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return write_ucf101(tmp_path_factory.mktemp("ucf") / "ucf101", frames=12)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny tokenizer folder (config.json + model.safetensors) whose output layer is not LARP's zero init,
    so reconstructions differ per clip."""
    torch.manual_seed(0)
    tokenizer = LARPTokenizer(
        **larp_tokenizer_config("tiny", input_size=32, build_prior=False)
    )  # LPIPS: >= 31 px
    with torch.no_grad():
        tokenizer.final_layer.linear.weight.normal_(0, 0.05)
        tokenizer.final_layer.linear.bias.fill_(0.5)
    return tokenizer.save_pretrained(tmp_path_factory.mktemp("tok") / "tiny")


FULL = ["metric=[fvd,psnr,ssim,lpips]", "metric.lpips.net=alex"]  # the stand-in AlexNet of `alex_state`


def test_rfvd_end_to_end_matches_direct_reconstruction(raw, weights, tmp_path, alex_state):
    cfg = compose_cfg("evaluate", overrides(raw, tmp_path, *FULL, weights=weights, size=32), tmp_path)
    results = evaluate.run(cfg)
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert {"fvd", "psnr", "ssim", "lpips", "reconstruction"} <= set(doc)
    assert np.isfinite(doc["fvd"]["value"]) and doc["reconstruction"]["num_videos"] == 8  # 8 train videos
    assert doc["reconstruction"]["tokenizer"]["deterministic"] is True

    # the PSNR equals the one computed directly from decode_from_bottleneck(encode(x)["bottleneck_rep"])
    tokenizer = build_tokenizer(tokenizer_settings(cfg), int(cfg.seed), torch.device("cpu"))
    from hydra.utils import instantiate

    dataset = instantiate(cfg.dataset).dataset("train", evaluation=True)
    x = clip_batch(dataset, list(range(len(dataset))))  # [B, T, C, H, W] in [0, 1]
    with torch.inference_mode():
        ids = tokenizer.encode(x.permute(0, 2, 1, 3, 4))["bottleneck_rep"]
        y = tokenizer.decode_from_bottleneck(ids).clamp(0, 1).permute(0, 2, 1, 3, 4)  # [B, T, C, H, W]
    mse = (y.double() - x.double()).pow(2).mean(dim=(2, 3, 4))  # [B, T]
    assert 5 < results["psnr"]["value"] < 60  # a real reconstruction, not a constant
    assert results["psnr"]["value"] == pytest.approx(float((-10 * mse.log10()).mean()), abs=1e-5)

    # resumed: every chunk merged, the same numbers
    again = evaluate.run(
        compose_cfg("evaluate", overrides(raw, tmp_path, *FULL, weights=weights, size=32), tmp_path)
    )
    assert again["psnr"]["value"] == results["psnr"]["value"]
    assert again["fvd"]["value"] == pytest.approx(results["fvd"]["value"])


def test_wrong_clip_size_names_both(raw, tmp_path):
    cfg = compose_cfg("evaluate", overrides(raw, tmp_path, "dataset.image_size=24"), tmp_path)
    with pytest.raises(ConfigError, match=r"4x24x24.*4x16x16"):
        evaluate.run(cfg)


def test_stochastic_vq_is_live(raw, tmp_path):
    cfg = compose_cfg("evaluate", overrides(raw, tmp_path), tmp_path)
    from hydra.utils import instantiate

    x = clip_batch(instantiate(cfg.dataset).dataset("train", evaluation=True), [0, 1])
    settings = tokenizer_settings(cfg)
    det = build_tokenizer(settings, 0, torch.device("cpu"))
    _, ids_a = reconstruct(det, x)
    _, ids_b = reconstruct(det, x)
    assert torch.equal(ids_a, ids_b)  # argmax: no randomness
    cfg_s = compose_cfg("evaluate", overrides(raw, tmp_path, "reconstruction.deterministic=false"), tmp_path)
    settings_s = tokenizer_settings(cfg_s)
    assert settings_s["deterministic"] is False
    sto = build_tokenizer(settings_s, 0, torch.device("cpu"))
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    _, ids_s = reconstruct(sto, x, gens)
    _, ids_t = reconstruct(sto, x, [torch.Generator().manual_seed(s) for s in (3, 4)])
    assert not torch.equal(ids_s, ids_t)  # sampled ids depend on the generators
    _, ids_u = reconstruct(sto, x, [torch.Generator().manual_seed(s) for s in (1, 2)])
    assert torch.equal(ids_s, ids_u)  # ... and only on them


def test_stochastic_run_differs_and_saves_a_samples_folder(raw, weights, tmp_path):
    def run(out, *extra):
        cfg = compose_cfg("evaluate", overrides(raw, out, *extra, weights=weights, size=32), out)
        return evaluate.run(cfg)["psnr"]["value"]

    det = run(tmp_path / "det")
    sto = run(
        tmp_path / "sto", "reconstruction.deterministic=false", "reconstruction.save_reconstructions=true"
    )
    assert sto != det  # the sampling VQ is what ran
    doc = json.loads((tmp_path / "sto" / "metrics.json").read_text())
    assert doc["reconstruction"]["tokenizer"]["deterministic"] is False
    manifest = json.loads((tmp_path / "sto" / "reconstructions" / "manifest.json").read_text())
    assert len(manifest["samples"]) == 8
    assert all((tmp_path / "sto" / "reconstructions" / e["file"]).is_file() for e in manifest["samples"])
    assert (
        run(
            tmp_path / "sto", "reconstruction.deterministic=false", "reconstruction.save_reconstructions=true"
        )
        == sto
    )
