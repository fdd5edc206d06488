"""RIVER's KTH autoencoder (taming VQGAN f8_small): manifest keys, fixture conformance, the quantiser."""

from __future__ import annotations

import pytest
import torch
from river_fixtures import load_fixture, rule_state_dict

from videxp.models.interpolant.autoencoder import LatentAutoencoder
from videxp.models.interpolant.vqgan import PRESETS, TamingVQGAN

MANIFEST = "kth_vqgan_f8_small_manifest.json"


def _fixture_inputs(fx: dict) -> dict[str, torch.Tensor]:
    """Run the runnable part of a fixture's input_recipe; check x and z against its input_checks."""
    ns = {"torch": torch}
    exec(fx["input_recipe"].split("\n\noutput")[0], ns)
    for name, check in fx["input_checks"].items():
        t = ns[name]
        assert list(t.shape) == check["shape"]
        assert t.sum().item() == pytest.approx(check["sum"], rel=1e-5)
        assert t.flatten()[:4].tolist() == pytest.approx(check["first"], rel=1e-6)
    return {"x": ns["x"], "z": ns["z"]}


def _check_conformance(ae: TamingVQGAN, fx: dict) -> None:
    """Compare encode / indices / decode (and the same for z) with the fixture's recorded outputs."""
    inputs = _fixture_inputs(fx)
    out = fx["outputs"]
    with torch.no_grad():
        latent = ae.encode(inputs["x"])  # [2, 4, 8, 6]
        actual = {
            "encode": latent,
            "indices": ae.quantize(latent).indices,
            "decode": ae.decode(latent),
            "indices_z": ae.quantize(inputs["z"]).indices,
            "decode_z": ae.decode(inputs["z"]),
        }
    for name, value in actual.items():
        expected = torch.tensor(out[name]["values"])
        assert list(value.shape) == out[name]["shape"], name
        if name.startswith("indices"):
            assert value.dtype == torch.int64
            assert torch.equal(value, expected), f"{name}: {(value != expected).sum().item()} indices differ"
        else:
            named = lambda m, n=name: f"{n}: {m}"  # noqa: E731 - name the output in the failure message
            torch.testing.assert_close(value, expected, atol=1e-4, rtol=1e-4, msg=named)


def test_paper_preset_matches_manifest_on_meta():
    manifest = load_fixture(MANIFEST)
    with torch.device("meta"):
        ae = TamingVQGAN.from_preset("f8_small")
    shapes = {k: list(v.shape) for k, v in ae.state_dict().items()}
    assert list(shapes) == list(manifest["state_dict"])  # same keys, same (module) order
    assert shapes == manifest["state_dict"]
    assert sum(p.numel() for p in ae.parameters()) == manifest["num_parameters"] == 63_777_455
    assert not list(ae.buffers())
    meta_sd = {k: torch.empty(s, device="meta") for k, s in manifest["state_dict"].items()}
    ae.load_state_dict(meta_sd, strict=True, assign=True)
    assert isinstance(ae, LatentAutoencoder)
    assert (ae.latent_channels, ae.downsample, ae.num_codes) == (4, 8, 16384)
    assert ae.checkpoint_prefixes == ("", "ae.", "module.ae.")
    assert ae.last_layer_weight() is ae.decoder.conv_out.weight
    cfg = manifest["config"]["ddconfig"]
    preset = PRESETS["f8_small"]
    for key in ("ch", "num_res_blocks", "resolution", "in_channels", "out_ch", "z_channels", "embed_dim"):
        assert preset[key] == cfg[key], key
    assert list(preset["ch_mult"]) == cfg["ch_mult"]
    assert list(preset["attn_resolutions"]) == cfg["attn_resolutions"]
    assert (preset["n_embed"], preset["dropout"], preset["beta"]) == (cfg["n_embed"], cfg["dropout"], 0.25)


def test_tiny_fixture_conformance():
    fx = load_fixture("kth_vqgan_tiny.json")
    ae = TamingVQGAN.from_preset("tiny").eval()
    assert PRESETS["tiny"] == {**PRESETS["f8_small"], "ch": fx["config"]["ddconfig"]["ch"]}
    assert list(ae.state_dict()) == list(fx["state_dict"])
    ae.load_state_dict(rule_state_dict(fx["state_dict"]), strict=True)
    assert sum(p.numel() for p in ae.parameters()) == fx["num_parameters"]
    _check_conformance(ae, fx)


@pytest.mark.slow  # ~1 s idle, 10+ s on busy shared cores (64M rule weights); tiny covers the same code
def test_paper_fixture_conformance():
    fx = load_fixture("kth_vqgan_f8_small.json")
    with torch.device("meta"):  # skip the 64M-parameter default init: every weight comes from the rule
        ae = TamingVQGAN.from_preset("f8_small")
    ae.load_state_dict(rule_state_dict(load_fixture(MANIFEST)["state_dict"]), strict=True, assign=True)
    _check_conformance(ae.eval(), fx)


def test_test_preset_is_small_and_downsamples_by_8():
    ae = TamingVQGAN.from_preset("test")
    assert sum(p.numel() for p in ae.parameters()) < 1_000_000
    assert (ae.downsample, ae.latent_channels, ae.num_codes) == (8, 4, 256)
    with torch.no_grad():
        out = ae(torch.rand(1, 3, 32, 24) * 2 - 1)
    assert out.latent.shape == (1, 4, 4, 3) and out.recon.shape == (1, 3, 32, 24)
    assert out.quantized.indices.shape == (1, 4, 3)


def test_straight_through_gradients_reach_encoder():
    torch.manual_seed(0)
    ae = TamingVQGAN.from_preset("test")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = ae(x)
    out.recon.square().mean().backward()
    for param in (ae.encoder.conv_in.weight, ae.quant_conv.weight, ae.decoder.conv_out.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    # the reconstruction loss alone does not train the codebook (only the quantiser loss does)
    assert ae.quantizer.embedding.weight.grad is None or ae.quantizer.embedding.weight.grad.abs().sum() == 0


def test_quantizer_nearest_code_loss_and_legacy_weighting():
    torch.manual_seed(0)
    ae = TamingVQGAN.from_preset("test", beta=0.3)
    codebook = ae.quantizer.embedding.weight
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    q = ae.quantize(z)
    dist = ((z.detach().permute(0, 2, 3, 1)[..., None, :] - codebook.detach()) ** 2).sum(-1)  # [2, 3, 5, 256]
    assert torch.equal(q.indices, dist.argmin(-1))
    nearest = codebook.detach()[q.indices].permute(0, 3, 1, 2)  # [2, 4, 3, 5]
    torch.testing.assert_close(q.z_q, nearest)
    mse = ((nearest - z.detach()) ** 2).mean()
    torch.testing.assert_close(q.loss, (1 + 0.3) * mse)
    # legacy=True: the commitment term (grad to z) has weight 1, beta weights the codebook term
    q.loss.backward()
    torch.testing.assert_close(z.grad, 2 * (z.detach() - nearest) / z.numel())
    expected = torch.zeros_like(codebook)
    diff = (nearest - z.detach()).permute(0, 2, 3, 1).reshape(-1, 4)  # [30, 4]
    expected.index_add_(0, q.indices.flatten(), 0.3 * 2 * diff / z.numel())
    torch.testing.assert_close(codebook.grad, expected)


def test_quantizer_straight_through_and_first_index_on_ties():
    ae = TamingVQGAN.from_preset("test")
    with torch.no_grad():
        ae.quantizer.embedding.weight.zero_()  # every code equally close: the first one must win
        ae.quantizer.embedding.weight[5] = 10.0
    z = torch.randn(1, 4, 2, 2, requires_grad=True)
    q = ae.quantize(z)
    assert torch.equal(q.indices, torch.zeros(1, 2, 2, dtype=torch.int64))
    q.z_q.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # identity gradient through the quantiser


def test_decode_is_decode_quantized_of_quantize():
    torch.manual_seed(0)
    ae = TamingVQGAN.from_preset("test").eval()
    z = torch.randn(2, 4, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(ae.decode(z), ae.decode_quantized(ae.quantize(z).z_q), atol=0, rtol=0)
        assert ae.decode(z).shape == (2, 3, 16, 24)


def test_shape_errors():
    ae = TamingVQGAN.from_preset("test")
    with pytest.raises(ValueError, match="divisible by the downsampling factor 8"):
        ae.encode(torch.zeros(1, 3, 20, 16))
    with pytest.raises(ValueError, match="divisible by the downsampling factor 8"):
        ae.encode(torch.zeros(1, 3, 16, 12))
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        ae.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"expected latents \[B, 4, h, w\]"):
        ae.quantize(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"expected latents \[B, 4, h, w\]"):
        ae.decode_quantized(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="unknown TamingVQGAN preset 'nope'"):
        TamingVQGAN.from_preset("nope")
    with pytest.raises(ValueError, match="divisible by 32"):
        TamingVQGAN(ch=16)
