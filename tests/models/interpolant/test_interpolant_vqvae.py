"""RIVER's CLEVRER VQVAE: manifest keys, conformance with the reference fixture, quantiser behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from river_fixtures import load_fixture, rule_state_dict

from videxp.models.interpolant.autoencoder import LatentAutoencoder
from videxp.models.interpolant.vqvae import PRESETS, RiverVQVAE


@pytest.fixture(scope="module")
def manifest() -> dict[str, list[int]]:
    """Key -> shape of the paper-size network."""
    return load_fixture("clevrer_vqvae_manifest.json")["state_dict"]


@pytest.fixture
def test_ae() -> RiverVQVAE:
    """The small "test" preset, seeded."""
    torch.manual_seed(0)
    return RiverVQVAE.from_preset("test")


def test_manifest_keys_and_strict_meta_load(manifest):
    with torch.device("meta"):
        ae = RiverVQVAE()
    sd = ae.state_dict()
    assert list(sd) == list(manifest)  # same keys, same module order
    assert {k: list(v.shape) for k, v in sd.items()} == manifest
    assert sum(p.numel() for p in ae.parameters()) == 7329703  # the manifest's num_parameters
    meta = {
        k: torch.empty(
            s, device="meta", dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32
        )
        for k, s in manifest.items()
    }
    ae.load_state_dict(meta, strict=True, assign=True)
    batchnorms = sorted(k for k in sd if k.endswith("num_batches_tracked"))
    assert batchnorms == [f"decoder.residuals.{i}.1.norm.num_batches_tracked" for i in range(3)]
    assert all(sd[k].dtype == torch.int64 for k in batchnorms)
    assert isinstance(ae.decoder.residuals[0][1].norm, torch.nn.BatchNorm2d)
    assert isinstance(ae.encoder.residuals[0].bn1, torch.nn.GroupNorm)
    assert isinstance(ae.encoder.residuals[0].downsample[2], torch.nn.GroupNorm)
    assert ae.last_layer_weight() is ae.decoder.out_conv.weight


def test_matches_reference_fixture():
    fx = load_fixture("clevrer_vqvae.json")
    with torch.device("meta"):
        ae = RiverVQVAE.from_preset("clevrer")
    ae.load_state_dict(rule_state_dict(fx["state_dict"]), strict=True, assign=True)
    ae.eval()
    ns = {"torch": torch}
    exec(fx["input_recipe"].split("\n\noutput")[0], ns)
    x, z = ns["x"], ns["z"]
    for name, t in (("x", x), ("z", z)):
        check = fx["input_checks"][name]
        assert list(t.shape) == check["shape"]
        assert t.flatten()[:4].tolist() == pytest.approx(check["first"], abs=1e-7)
        assert t.double().sum().item() == pytest.approx(check["sum"], abs=1e-3)

    with torch.no_grad():
        out = ae(x)
        decode_z = ae.decode(z)
        indices_z = ae.quantize(z).indices
    names = ("encode", "indices", "decode", "indices_z", "decode_z")
    expected = {k: torch.tensor(fx["outputs"][k]["values"]) for k in names}
    torch.testing.assert_close(out.latent, expected["encode"], atol=1e-4, rtol=1e-4)
    assert torch.equal(out.quantized.indices, expected["indices"])
    torch.testing.assert_close(out.recon, expected["decode"], atol=1e-4, rtol=1e-4)
    assert torch.equal(indices_z, expected["indices_z"])
    torch.testing.assert_close(decode_z, expected["decode_z"], atol=1e-4, rtol=1e-4)


def test_quantizer_nearest_code_loss_and_straight_through(test_ae):
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    q = test_ae.quantize(z)
    codebook = test_ae.vector_quantizer.embedding.weight
    assert q.indices.shape == (2, 3, 5) and q.indices.dtype == torch.int64
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.equal(q.indices.flatten(), torch.cdist(flat, codebook.detach()).argmin(1))
    # forward value is one_hot(idx) @ E, rows in (b, h, w) order
    one_hot = F.one_hot(q.indices.flatten(), test_ae.num_codes).float()
    looked_up = (one_hot @ codebook.detach()).reshape(2, 3, 5, 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(q.z_q.detach(), looked_up, atol=1e-6, rtol=0)
    # loss = mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2)
    mse = ((looked_up - z.detach()) ** 2).mean()
    torch.testing.assert_close(q.loss.detach(), (1 + 0.25) * mse)
    z_grad, e_grad = torch.autograd.grad(q.loss, [z, codebook])
    torch.testing.assert_close(z_grad, 2 * (z.detach() - looked_up) / z.numel())  # commitment term: weight 1
    e_expected = one_hot.t() @ (
        2 * 0.25 * (looked_up - z.detach()).permute(0, 2, 3, 1).reshape(-1, 4) / z.numel()
    )
    torch.testing.assert_close(e_grad, e_expected)  # codebook term: weight beta
    # straight-through: d z_q / d z is the identity
    (g,) = torch.autograd.grad(test_ae.quantize(z).z_q.sum(), z)
    assert torch.equal(g, torch.ones_like(z))


def test_ties_pick_first_index(test_ae):
    with torch.no_grad():
        test_ae.vector_quantizer.embedding.weight[:] = 5.0
        test_ae.vector_quantizer.embedding.weight[7:10] = torch.tensor([0.5, 0.0, 0.0, 0.0])
    z = torch.zeros(1, 4, 2, 2)
    assert (test_ae.quantize(z).indices == 7).all()


def test_straight_through_gradients_reach_encoder(test_ae):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = test_ae(x)
    assert out.latent.shape == (2, 4, 4, 4) and out.recon.shape == (2, 3, 32, 32)
    assert out.recon.abs().max() < 1  # tanh
    (F.mse_loss(out.recon, x) + out.quantized.loss).backward()
    for name, p in test_ae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # reconstruction term alone reaches the encoder only through the straight-through estimator
    test_ae.zero_grad()
    test_ae(x).recon.sum().backward()
    assert test_ae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert (
        test_ae.vector_quantizer.embedding.weight.grad is None
        or not test_ae.vector_quantizer.embedding.weight.grad.any()
    )


def test_decode_is_quantize_then_decode_quantized(test_ae):
    test_ae.eval()
    z = torch.randn(1, 4, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(
            test_ae.decode(z), test_ae.decode_quantized(test_ae.quantize(z).z_q), atol=0, rtol=0
        )
        assert test_ae.decode(z).shape == (1, 3, 16, 24)


@pytest.mark.parametrize("hw", [(36, 32), (32, 20)])
def test_rejects_sizes_not_divisible_by_8(test_ae, hw):
    with pytest.raises(ValueError, match="divisible by the downsampling factor 8"):
        test_ae.encode(torch.zeros(1, 3, *hw))


def test_presets_and_width_checks():
    assert PRESETS["clevrer"] == dict(
        in_channels=3,
        latent_channels=4,
        num_codes=8192,
        beta=0.25,
        encoder_width=32,
        decoder_width=256,
        num_groups=32,
    )
    ae = RiverVQVAE.from_preset("test", num_codes=64)
    assert isinstance(ae, LatentAutoencoder)
    assert (ae.latent_channels, ae.downsample, ae.num_codes) == (4, 8, 64)
    assert RiverVQVAE.checkpoint_prefixes == ("module.", "", "ae.backbone.", "module.ae.backbone.")
    with pytest.raises(ValueError, match="unknown RiverVQVAE preset"):
        RiverVQVAE.from_preset("kth")
    with pytest.raises(ValueError, match="num_groups=32"):
        RiverVQVAE(decoder_width=128)  # last decoder stage: 16 channels
    with pytest.raises(ValueError, match="divisible by 8"):
        RiverVQVAE.from_preset("test", decoder_width=36)
