"""Open-Sora v1.3 VAE: full-size manifest keys, tiny-fixture conformance, frame arithmetic, the loader."""

from __future__ import annotations

import pytest
import torch
from opensora_fixtures import load_fixture, rule_state_dict

from videxp.models.opensora.vae import (
    PRESETS,
    VIDEO_MEAN,
    VIDEO_STD,
    OpenSoraVAE,
    check_num_frames,
    encoder_frames_of_latent,
    latent_frames,
    load_state_strict,
    load_vae,
    pixel_frames,
    pixel_frames_of_latent,
)
from videxp.weights.files import ModelNotAvailable

MANIFEST = "vae_v1_3_manifest.json"
TINY = "vae_tiny.json"


@pytest.fixture(scope="module")
def tiny_fx() -> dict:
    return load_fixture(TINY)


@pytest.fixture(scope="module")
def tiny_state(tiny_fx) -> dict[str, torch.Tensor]:
    return rule_state_dict(tiny_fx["state_dict"])


@pytest.fixture(scope="module")
def tiny_vae(tiny_state) -> OpenSoraVAE:
    with torch.device("meta"):
        vae = OpenSoraVAE(PRESETS["tiny"])
    load_state_strict(vae, tiny_state)
    return vae.eval()


# ----------------------------------------------------------------------------- structure
def test_full_preset_matches_manifest_on_meta():
    manifest = load_fixture(MANIFEST)
    with torch.device("meta"):
        vae = OpenSoraVAE(PRESETS["full"])
    shapes = {k: list(v.shape) for k, v in vae.state_dict().items()}
    assert list(shapes) == list(manifest["state_dict"])  # same keys in the same order
    assert shapes == manifest["state_dict"]
    assert sum(p.numel() for p in vae.parameters()) == manifest["num_parameters"] == 259_163_811
    assert len(shapes) == manifest["num_keys"] == 256
    assert not list(vae.buffers())
    meta_state = {k: torch.empty(s, device="meta") for k, s in manifest["state_dict"].items()}
    vae.load_state_dict(meta_state, strict=True)
    load_state_strict(vae, meta_state)


def test_tiny_preset_matches_fixture_keys(tiny_fx, tiny_vae):
    shapes = {k: list(v.shape) for k, v in tiny_vae.state_dict().items()}
    assert list(shapes) == list(tiny_fx["state_dict"]) and shapes == tiny_fx["state_dict"]
    assert sum(p.numel() for p in tiny_vae.parameters()) == tiny_fx["num_parameters"] == 16_339_395


# ----------------------------------------------------------------------------- conformance
def _fixture_inputs(fx: dict) -> dict[str, torch.Tensor]:
    """Run the runnable part of the input recipe; check every input against input_checks."""
    ns = {"torch": torch}
    exec(fx["input_recipe"].split("\n\noutput")[0], ns)
    for name, check in fx["input_checks"].items():
        t = ns[name]
        assert list(t.shape) == check["shape"], name
        assert str(t.dtype).removeprefix("torch.") == check["dtype"], name
        assert t.double().sum().item() == pytest.approx(check["sum"], rel=1e-5, abs=1e-4), name
        assert t.double().abs().sum().item() == pytest.approx(check["abs_sum"], rel=1e-6), name
        assert t.flatten()[:4].tolist() == pytest.approx(check["first"], rel=1e-6), name
    return {k: ns[k] for k in fx["input_checks"]}


def test_tiny_vae_reproduces_recorded_outputs(tiny_fx, tiny_vae):
    inputs = _fixture_inputs(tiny_fx)
    assert list(VIDEO_MEAN) == tiny_fx["normalization_video"]["mean"]
    assert list(VIDEO_STD) == tiny_fx["normalization_video"]["std"]
    with torch.no_grad():
        zv, mv = tiny_vae.encode(inputs["video"], sample=False, return_moments=True)
        zi, mi = tiny_vae.encode(inputs["image"], sample=False, return_moments=True)
        actual = {
            "encode_video_moments": mv,
            "encode_video_latent": zv,
            "encode_image_moments": mi,
            "encode_image_latent": zi,
            "encode_video_moments_unchunked": tiny_vae.encoder(inputs["video"]),
            "decode_video": tiny_vae.decode(inputs["z"]),
            "decode_image": tiny_vae.decode(inputs["z_img"], num_frames=1),
        }
    for name, value in actual.items():
        expected = torch.tensor(tiny_fx["outputs"][name]["values"], dtype=torch.float32)
        assert list(value.shape) == tiny_fx["outputs"][name]["shape"], name
        named = lambda m, n=name: f"{n}: {m}"  # noqa: E731 - name the output in the failure message
        torch.testing.assert_close(value, expected, atol=1e-4, rtol=1e-4, msg=named)
    # sampling (the reference's default): mean + exp(0.5 * clamp(logvar, -30, 20)) * eps, then normalised
    with torch.no_grad():
        sampled = tiny_vae.encode(inputs["image"], generator=torch.Generator().manual_seed(3))
    eps = torch.randn(zi.shape, generator=torch.Generator().manual_seed(3))
    mean_c = torch.tensor(VIDEO_MEAN).view(1, -1, 1, 1, 1)
    std_c = torch.tensor(VIDEO_STD).view(1, -1, 1, 1, 1)
    expected = (mi[:, :16] + torch.exp(0.5 * mi[:, 16:].clamp(-30, 20)) * eps - mean_c) / std_c
    torch.testing.assert_close(sampled, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(sampled, zi)


# ----------------------------------------------------------------------------- frame arithmetic
def test_latent_frame_counts():
    assert latent_frames(1) == 1
    assert latent_frames(17) == 5
    assert latent_frames(33) == 10
    assert latent_frames(49) == 15
    assert latent_frames(113) == 35
    assert latent_frames(9, micro_frame_size=None) == 3  # bare causal VAE: 4k+1 -> k+1
    assert latent_frames(33, micro_frame_size=None) == 9
    for T in (1, 17, 33, 49, 65, 81, 97, 113):
        assert pixel_frames(latent_frames(T)) == T
    for T in (1, 5, 9, 33):
        assert pixel_frames(latent_frames(T, None), None) == T
    assert pixel_frames(7) == 21  # a short last chunk (2 latents -> 5 frames) still decodes


def test_pixel_frames_of_latent():
    assert pixel_frames_of_latent(0) == range(0, 1)
    assert pixel_frames_of_latent(1) == range(1, 5)
    assert pixel_frames_of_latent(4) == range(13, 17)
    assert pixel_frames_of_latent(5) == range(16, 17)  # the frame chunks 0 and 1 share
    assert pixel_frames_of_latent(6) == range(17, 21)
    assert pixel_frames_of_latent(14) == range(45, 49)
    assert pixel_frames_of_latent(3, micro_frame_size=None) == range(9, 13)
    # the slots of a 16k+1 clip cover every frame; only the shared frames 16c (c >= 1) are covered twice
    for T in (17, 49):
        counts = [0] * T
        for i in range(latent_frames(T)):
            for f in pixel_frames_of_latent(i):
                counts[f] += 1
        assert counts == [2 if f % 16 == 0 and f > 0 and f < T - 1 else 1 for f in range(T)]
    assert encoder_frames_of_latent(7, 49) == range(16, 33)
    assert encoder_frames_of_latent(0, 1) == range(0, 1)
    with pytest.raises(ValueError, match="out of range"):
        encoder_frames_of_latent(15, 49)
    with pytest.raises(ValueError):
        pixel_frames_of_latent(-1)


@pytest.mark.parametrize("T", [0, 2, 16, 18, 21, 48, 50])
def test_wrong_frame_counts_raise(T):
    with pytest.raises(ValueError, match=f"cannot encode {T} frames.*16k\\+1"):
        check_num_frames(T)
    with pytest.raises(ValueError, match="cannot encode"):
        latent_frames(T)


def test_encode_rejects_bad_inputs_before_running(tiny_vae):
    with pytest.raises(ValueError, match=r"cannot encode 21 frames.*nearest valid lengths: 17 or 33"):
        tiny_vae.encode(torch.zeros(1, 3, 21, 16, 16))
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_vae.encode(torch.zeros(1, 3, 1, 12, 16))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        tiny_vae.encode(torch.zeros(1, 4, 1, 16, 16))
    with pytest.raises(ValueError, match="decode to 1 frames"):
        tiny_vae.decode(torch.zeros(1, 16, 1, 2, 2), num_frames=2)
    with pytest.raises(ValueError, match="9k\\+1|must be 4k\\+1"):
        OpenSoraVAE(PRESETS["tiny"], micro_frame_size=10)


# ----------------------------------------------------------------------------- loader
def _same_weights(vae: OpenSoraVAE, state: dict[str, torch.Tensor]) -> None:
    got = vae.state_dict()
    assert list(got) == list(state)
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_loader_round_trips(tmp_path, tiny_state):
    from safetensors.torch import save_file

    save_file(tiny_state, str(tmp_path / "vae.safetensors"))
    _same_weights(load_vae(tmp_path / "vae.safetensors", size="tiny"), tiny_state)
    torch.save(tiny_state, tmp_path / "vae.pt")
    vae = load_vae(str(tmp_path / "vae.pt"), size="tiny", device="cpu", dtype="bf16")
    assert vae.encoder.conv_in.conv.weight.dtype == torch.bfloat16 and not vae.training
    # a training-style file: nested under "state_dict", every key prefixed "module."
    wrapped = {"state_dict": {f"module.{k}": v for k, v in tiny_state.items()}, "step": 3}
    torch.save(wrapped, tmp_path / "ddp.pt")
    _same_weights(load_vae(tmp_path / "ddp.pt", size="tiny"), tiny_state)
    folder = tmp_path / "hub_like"
    folder.mkdir()
    save_file(tiny_state, str(folder / "model.safetensors"))
    _same_weights(load_vae(folder, size="tiny"), tiny_state)


def test_loader_reports_mismatches(tmp_path, tiny_state):
    bad = dict(tiny_state)
    bad["decoder.conv_out.weight"] = torch.zeros(3, 32, 3, 3, 1)
    del bad["encoder.norm_out.bias"]
    bad["encoder.extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        load_vae(tmp_path / "bad.pt", size="tiny")
    text = str(err.value)
    assert "bad.pt" in text and "1 missing: ['encoder.norm_out.bias']" in text
    assert "1 unexpected: ['encoder.extra.weight']" in text
    assert "decoder.conv_out.weight: file [3, 32, 3, 3, 1] vs model [3, 32, 3, 3, 3]" in text
    with pytest.raises(ValueError, match="shape mismatch"):  # tiny weights into the full-size network
        load_vae(tmp_path / "bad.pt", size="full")


def test_absent_hub_id_offline_raises_model_not_available(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelNotAvailable) as err:
        load_vae("hpcai-tech/OpenSora-VAE-v1.3", size="tiny")
    text = str(err.value)
    assert "hpcai-tech/OpenSora-VAE-v1.3" in text and str(tmp_path / "hf" / "hub") in text
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_vae(tmp_path / "nothing.safetensors", size="tiny")


def test_micro_batches_do_not_change_results(tiny_vae, tiny_state):
    x = torch.rand(2, 3, 1, 8, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.device("meta"):
        whole = OpenSoraVAE("tiny", micro_batch_size=None)
    load_state_strict(whole, tiny_state)
    with torch.no_grad():
        a = tiny_vae.encode(x, sample=False)  # micro_batch_size 1: one sample at a time
        b = whole.eval().encode(x, sample=False)
        rec = whole(x)
    assert a.shape == (2, 16, 1, 1, 2)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert rec.shape == x.shape
