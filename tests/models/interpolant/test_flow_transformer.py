"""RIVER flow transformer: key-for-key manifest, numeric conformance with the reference, behaviour."""

from __future__ import annotations

import pytest
import torch
from river_fixtures import load_fixture, rule_state_dict

from videxp.models.interpolant.flow_transformer import PRESETS, FlowTransformer, timestep_embedding

INPUT_NAMES = ("input_latents", "reference_latents", "conditioning_latents", "index_distances", "timestamps")


def make_inputs(batch: int, channels: int, height: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random keyword inputs for one forward call."""
    g = torch.Generator().manual_seed(seed)
    return {
        "input_latents": torch.randn(batch, channels, height, width, generator=g),
        "reference_latents": torch.randn(batch, channels, height, width, generator=g),
        "conditioning_latents": torch.randn(batch, channels, height, width, generator=g),
        "index_distances": torch.randint(1, 10, (batch,), generator=g),
        "timestamps": torch.rand(batch, generator=g),
    }


def run_numeric_fixture(name: str, manifest: str | None) -> None:
    """Build the fixture's config with rule weights, rebuild its inputs, compare with the recorded output."""
    fx = load_fixture(name)
    keys = fx.get("state_dict") or load_fixture(manifest)["state_dict"]
    kwargs = dict(fx["config"]["kwargs"])
    assert kwargs.pop("reference") is True
    with torch.device("meta"):  # skip the random init: every entry is replaced below
        net = FlowTransformer(**kwargs)
    net.load_state_dict(rule_state_dict(keys), strict=True, assign=True)
    net.eval()
    assert sum(p.numel() for p in net.parameters()) == fx["num_parameters"]

    ns = {"torch": torch}
    exec(fx["input_recipe"].split("\n\noutput")[0], ns)
    for input_name, check in fx["input_checks"].items():
        value = ns[input_name]
        assert list(value.shape) == check["shape"] and str(value.dtype) == f"torch.{check['dtype']}"
        assert value.double().sum().item() == pytest.approx(check["sum"], rel=1e-6, abs=1e-6)
        first = torch.tensor(check["first"], dtype=torch.float64)
        torch.testing.assert_close(value.flatten()[:4].double(), first)

    with torch.no_grad():
        out = net(**{k: ns[k] for k in INPUT_NAMES})
    expected = fx["outputs"]["out"]
    assert list(out.shape) == expected["shape"]
    torch.testing.assert_close(out, torch.tensor(expected["values"]), atol=1e-4, rtol=1e-4)


def test_paper_state_dict_matches_manifest_on_meta():
    """Paper size: same keys in the same order, same shapes, strict load of every manifest entry."""
    manifest = load_fixture("flow_transformer_manifest.json")
    with torch.device("meta"):
        net = FlowTransformer.from_preset("paper")
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert list(ours) == list(manifest["state_dict"])
    assert ours == manifest["state_dict"]
    assert sum(p.numel() for p in net.parameters()) == manifest["num_parameters"] == 98_084_868
    meta = {k: torch.empty(shape, device="meta") for k, shape in manifest["state_dict"].items()}
    net.load_state_dict(meta, strict=True, assign=True)


def test_tiny_fixture_matches_reference():
    """Tiny config (D=64, depth 2, mid 2, 4x6 grid) reproduces RIVER's output to 1e-4."""
    run_numeric_fixture("flow_transformer_tiny.json", None)


def test_kth_paper_fixture_matches_reference():
    """Paper KTH config (98.1M params, 8x8 grid) reproduces RIVER's output to 1e-4."""
    run_numeric_fixture("flow_transformer_kth.json", "flow_transformer_manifest.json")


def test_presets_and_sizes():
    """Presets build the documented sizes; overrides win; unknown names are rejected."""
    assert PRESETS["paper"] == {"inner_dim": 768, "depth": 4, "mid_depth": 5}
    tiny = FlowTransformer.from_preset("tiny", state_res=(4, 6))
    assert sum(p.numel() for p in tiny.parameters()) == 373_572  # the tiny fixture's count
    small = FlowTransformer.from_preset("test", state_size=3)
    assert small.inner_dim == 32 and len(small.in_blocks) == 1 and small.in_blocks[0].self_attn.num_heads == 4
    assert small.project_out[-1].out_channels == 3
    with pytest.raises(KeyError, match="unknown FlowTransformer preset"):
        FlowTransformer.from_preset("huge")
    with pytest.raises(ValueError, match="out_norm"):
        FlowTransformer.from_preset("test", out_norm="gn")
    with pytest.raises(ValueError, match="divisible by nhead"):
        FlowTransformer.from_preset("test", inner_dim=36, nhead=8)


def test_bn_head_layout_and_forward():
    """BAIR-256 head: Linear, (reshape), GELU, BatchNorm2d at index 3, Conv 3x3; runs in both modes."""
    net = FlowTransformer.from_preset("test", state_size=8, state_res=(4, 4), out_norm="bn")
    head = {k for k in net.state_dict() if k.startswith("project_out.")}
    assert head == {
        "project_out.0.weight",
        "project_out.0.bias",
        "project_out.3.weight",
        "project_out.3.bias",
        "project_out.3.running_mean",
        "project_out.3.running_var",
        "project_out.3.num_batches_tracked",
        "project_out.4.weight",
        "project_out.4.bias",
    }
    inputs = make_inputs(2, 8, 4, 4)
    assert net.train()(**inputs).shape == (2, 8, 4, 4)
    assert int(net.project_out[3].num_batches_tracked) == 1
    with torch.no_grad():
        assert net.eval()(**inputs).shape == (2, 8, 4, 4)


def test_timestep_embedding_cos_first_scale_200():
    """Token 0 is `[cos(200·t·f), sin(200·t·f)]` with f_i = 10000^(-i/half)."""
    emb = timestep_embedding(torch.tensor([0.0, 0.25]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.tensor([10000 ** (-i / 4) for i in range(4)])
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(50 * freqs), torch.sin(50 * freqs)]))


def test_position_encoding_column_half_first():
    """Token (h, w) of the row-major grid gets `[col_embed[w], row_embed[h]]`."""
    net = FlowTransformer.from_preset("test", state_res=(3, 5))
    pe = net.position_encoding
    pos = pe(3, 5)  # [15, D]
    assert pos.shape == (15, 32)
    h, w = 2, 1
    torch.testing.assert_close(pos[h * 5 + w], torch.cat([pe.col_embed.weight[w], pe.row_embed.weight[h]]))


def test_output_shape_and_input_order_matters():
    """Non-square grid keeps its shape; reference and context are not interchangeable; x_t matters."""
    torch.manual_seed(0)
    net = FlowTransformer.from_preset("test", state_res=(3, 5)).eval()
    inputs = make_inputs(2, 4, 3, 5)
    with torch.no_grad():
        out = net(**inputs)
        swapped = net(
            **{
                **inputs,
                "reference_latents": inputs["conditioning_latents"],
                "conditioning_latents": inputs["reference_latents"],
            }
        )
        other_x = net(**{**inputs, "input_latents": inputs["reference_latents"]})
        other_t = net(**{**inputs, "timestamps": 1 - inputs["timestamps"]})
        other_d = net(**{**inputs, "index_distances": inputs["index_distances"] + 3})
    assert out.shape == (2, 4, 3, 5) and out.dtype == torch.float32
    for changed in (swapped, other_x, other_t, other_d):
        assert (changed - out).abs().max() > 1e-4


def test_invalid_inputs_raise():
    """Distances < 1, a wrong channel count or grid, and mismatched batch sizes are named errors."""
    net = FlowTransformer.from_preset("test", state_res=(3, 5)).eval()
    inputs = make_inputs(2, 4, 3, 5)
    with pytest.raises(ValueError, match="index_distances must be >= 1"):
        net(**{**inputs, "index_distances": torch.tensor([1, 0])})
    with pytest.raises(ValueError, match="input_latents must be"):
        net(**{**inputs, "input_latents": torch.randn(2, 3, 3, 5)})
    with pytest.raises(ValueError, match="conditioning_latents must be"):
        net(**{**inputs, "conditioning_latents": torch.randn(2, 4, 5, 3)})
    with pytest.raises(ValueError, match="batch sizes differ"):
        net(**{**inputs, "reference_latents": torch.randn(3, 4, 3, 5)})
    with pytest.raises(ValueError, match="timestamps must be"):
        net(**{**inputs, "timestamps": torch.rand(2, 1)})


def test_dropout_in_training_and_deterministic_eval():
    """Training mode samples dropout masks (passes differ); eval mode repeats exactly."""
    net = FlowTransformer.from_preset("test", state_res=(3, 5))
    inputs = make_inputs(2, 4, 3, 5)
    net.train()
    assert (net(**inputs) - net(**inputs)).abs().max() > 1e-6
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(**inputs), net(**inputs), atol=0.0, rtol=0.0)


def test_gradients_reach_every_parameter():
    """A loss on the output back-propagates into every parameter (position tables: the rows in use)."""
    net = FlowTransformer.from_preset("test", state_res=(3, 5), depth=2).train()
    net(**make_inputs(2, 4, 3, 5)).square().mean().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert net.position_encoding.row_embed.weight.grad[3:].abs().sum() == 0  # only rows 0..2 used
