"""model=opensora sampling: head conditioning through the generator request and videxp-sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from opensora_fixtures import mix_weights, spy_forward

from videxp import sample
from videxp.models.opensora.generator import model_frame_size
from videxp.models.opensora.module import OpenSoraModule

SAMPLING = {"steps": 3, "prompt": "a video of moving shapes"}


def mixing_module(**kw) -> OpenSoraModule:
    """The tiny module with random values in its zero-initialised layers (see `mix_weights`)."""
    m = OpenSoraModule(size="tiny", sampling=SAMPLING, max_frames=49, **kw)
    mix_weights(m.stdit)
    return m.eval()


@pytest.fixture(scope="module")
def module():
    return mixing_module()


def filled(frames: torch.Tensor, total: int) -> torch.Tensor:
    """[1, n, 3, H, W] observed frames -> the clip [1, 3, total, H, W] the adapter encodes: the observed
    frames, then the last one repeated."""
    fill = frames[:, -1:].expand(-1, total - frames.shape[1], -1, -1, -1)
    return torch.cat([frames, fill], 1).permute(0, 2, 1, 3, 4)


def head(seed: int, n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, n, 3, 32, 32, generator=g) * 2 - 1  # [1, n, 3, 32, 32]


def test_the_model_is_conditioned_on_the_latents_of_the_observed_frames(module, monkeypatch):
    frames = head(0)
    # what the adapter conditions on: the observed frames, the rest of their chunk filled with frame 7
    ref = module.vae.encode(filled(frames, 49), sample=False)  # [1, 16, 15, 4, 4]
    calls = spy_forward(module.stdit, monkeypatch)
    out = module.generator().generate(frames, list(range(8)), list(range(8, 45)), {"prompt": None}, [3])
    assert out.shape == (1, 37, 3, 32, 32) and out.abs().max() <= 1
    assert len(calls) == 3 * SAMPLING["steps"]  # cond, uncond_text, uncond_all per step
    cond, uncond_text, uncond_all = calls[:3]
    for kw in (cond, uncond_text, uncond_all):
        assert kw["mask_index"] == [0, 1]  # latents 0, 1 = frames 0..4 of the 8 observed
        assert kw["cond_mask"][:, :, :2].eq(1).all() and kw["cond_mask"][:, :, 2:].eq(0).all()
    assert (
        torch.allclose(cond["cond"][:, :, :2], ref[:, :, :2], atol=1e-6)
        and cond["cond"][:, :, 2:].eq(0).all()
    )
    assert torch.equal(uncond_text["cond"], cond["cond"]) and uncond_all["cond"].eq(0).all()


def test_hold_condition_ends_on_the_observed_latents(monkeypatch):
    m = mixing_module()
    m.sampling = {**m.sampling, "hold_condition": True}
    frames = head(0)
    ref = m.vae.encode(filled(frames, 49), sample=False)
    z = latents_of(m, monkeypatch, frames, 3)
    assert torch.allclose(z[:, :, :2], ref[:, :, :2], atol=1e-6)
    assert not torch.allclose(z[:, :, 2:], ref[:, :, 2:], atol=1e-2)


def latents_of(module, monkeypatch, frames: torch.Tensor, seed: int) -> torch.Tensor:
    """The sampled latents [1, 16, 15, 4, 4] of one W5-shaped call (8 observed, 37 generated)."""
    seen = {}
    decode = module.vae.decode

    def spy(z, num_frames=None):
        seen["z"] = z.clone()
        return decode(z, num_frames)

    monkeypatch.setattr(module.vae, "decode", spy)
    module.generator().generate(frames, list(range(8)), list(range(8, 45)), {}, [seed])
    monkeypatch.undo()
    return seen["z"]


def test_generated_frames_depend_on_the_observed_ones_and_the_seed(module, monkeypatch):
    a = latents_of(module, monkeypatch, head(0), 3)
    assert torch.equal(a, latents_of(module, monkeypatch, head(0), 3))  # deterministic per seed
    b = latents_of(module, monkeypatch, head(1), 3)
    # latents 5.. (frames 16..) are decoded apart from chunk 0: they differ through the STDiT3's attention
    assert (a[:, :, 5:] - b[:, :, 5:]).abs().mean() > 1e-3  # ~4e-3 here; float noise is ~1e-7
    assert (a[:, :, 5:] - latents_of(module, monkeypatch, head(0), 4)[:, :, 5:]).abs().mean() > 0.1
    # a grey clip comes back grey, at the input size
    grey = module.generator().generate(head(0)[:, :, :1], list(range(8)), list(range(8, 45)), {}, [3])
    assert grey.shape == (1, 37, 1, 32, 32)


def test_rows_do_not_depend_on_the_batch(module):
    gen = module.generator()
    frames = torch.cat([head(0), head(1)])  # [2, 8, 3, 32, 32]
    args = (list(range(8)), list(range(8, 25)))
    both = gen.generate(frames, *args, {"prompt": ["a dog", "a cat"]}, [3, 4])
    alone = gen.generate(frames[1:], *args, {"prompt": ["a cat"]}, [4])
    assert torch.allclose(both[1:], alone, atol=1e-5)


def test_bad_requests_are_explicit(module):
    gen = module.generator()
    with pytest.raises(ValueError, match="consecutive"):
        gen.generate(head(0, 2), [0, 2], [3], {}, [0])
    with pytest.raises(ValueError, match="padded to 65.*max_frames=49"):
        gen.generate(head(0), list(range(8)), list(range(8, 50)), {}, [0])
    with pytest.raises(ValueError, match="multiples of 8"):
        gen.generate(head(0)[..., :20, :20], list(range(8)), [8], {}, [0])
    with pytest.raises(ValueError, match="no prompt"):
        OpenSoraModule(size="tiny", max_frames=49).generator().generate(head(0), list(range(8)), [8], {}, [0])


def test_resolution_presets_and_odd_latent_sizes(module):
    assert model_frame_size({"resolution": "360p", "aspect_ratio": "9:16"}, 32, 32) == (360, 640)
    assert model_frame_size({"resolution": "720p", "aspect_ratio": "1:1"}, 32, 32) == (960, 960)
    assert model_frame_size({"height": None, "width": 48}, 32, 40) == (32, 48)
    with pytest.raises(ValueError, match="either resolution or height/width"):
        model_frame_size({"resolution": "360p", "height": 360}, 32, 32)
    with pytest.raises(ValueError, match="unknown resolution '480p'"):
        model_frame_size({"resolution": "480p"}, 32, 32)
    # 360p's 45 latent rows are odd: STDiT3 pads to its 2 x 2 patches; here 24 px -> 3 x 3 latents
    out = module.generator().generate(head(0)[..., :24, :24], list(range(8)), [8], {}, [0])
    assert out.shape == (1, 1, 3, 24, 24) and torch.isfinite(out).all()


def test_videxp_sample_autoreg_chunks_and_records_the_conditioning(tmp_path):
    overrides = [
        "model=opensora",
        "model.size=tiny",
        "ckpt_path=random",  # size=tiny: random networks, on purpose
        "model.max_frames=33",
        "model.sampling.steps=2",
        "model.sampling.prompt='moving shapes'",  # the synthetic dataset has no captions
        "dataset.image_size=32",
        "dataset.video_length=45",
        "dataset.source.num_videos={train: 2, val: 2, test: 2}",
        "inference.obs_length=8",
        "inference.step_size=16",  # K = 33: calls of 8 + 16, 17 + 16 and 17 + 5 frames
        "sample.num_samples=1",
        "sample.split=test",
        "metric=[psnr]",
        "device=cpu",
    ]
    cfg = compose_cfg("sample", overrides, tmp_path)
    sample.run(cfg)
    manifest = json.loads((tmp_path / "samples" / "manifest.json").read_text())
    calls = {
        (c["observed_frames"], c["target_frames"]): c for c in manifest["model"]["effective_conditioning"]
    }
    assert set(calls) == {(8, 16), (17, 16), (17, 5)}
    assert calls[(8, 16)]["model_frames"] == 33 and calls[(8, 16)]["padded_frames"] == 9
    assert calls[(8, 16)]["conditioned_pixel_frames"] == [0, 4]
    assert calls[(17, 16)]["conditioned_latents"] == [0, 1, 2, 3, 4] and calls[(17, 16)]["padded_frames"] == 0
    assert calls[(17, 5)]["model_frames"] == 33 and calls[(17, 5)]["padded_frames"] == 11
    out = np.load(tmp_path / "samples" / "sample_0000-0.npy")
    assert out.shape == (45, 32, 32, 3)
    assert (tmp_path / "metrics.json").is_file()


def test_x_mask_mechanism_holds_the_observed_latents_with_t0_modulation(monkeypatch):
    m = mixing_module()
    m.sampling = {**m.sampling, "mechanism": "x_mask"}
    calls = spy_forward(m.stdit, monkeypatch)
    frames = head(0)
    ref = m.vae.encode(filled(frames, 49), sample=False)
    z = latents_of(m, monkeypatch, frames, 3)
    assert torch.allclose(z[:, :, :2], ref[:, :, :2], atol=1e-6)  # edit ratio 0: kept
    x_mask = calls[0]["x_mask"]
    assert x_mask.shape == (1, 15) and not x_mask[0, :2].any() and x_mask[0, 2:].all()
    assert "mask_index" not in calls[0]
    with pytest.raises(ValueError, match="mechanism"):
        OpenSoraModule(size="tiny", max_frames=49, sampling={"mechanism": "edit"}).generator()


@pytest.mark.parametrize(("n_obs", "n_target"), [(1, 16), (20, 12), (33, 16)])
def test_reference_latents_encode_only_the_conditioned_chunks(module, n_obs, n_target):
    gen = module.generator()
    frames = head(2, n_obs)
    p = gen.plan(n_obs, n_target)
    ref = gen.reference_latents(frames, p, (32, 32))
    whole = module.vae.encode(filled(frames, p.model_frames), sample=False)  # every chunk, as a check
    k = p.conditioned_latents
    assert torch.allclose(ref[:, :, k], whole[:, :, k], atol=1e-5)
    assert ref[:, :, len(k) :].eq(0).all()
    out = gen.generate(frames, list(range(n_obs)), list(range(n_obs, n_obs + n_target)), {}, [0])
    assert out.shape == (1, n_target, 3, 32, 32)
