"""Open-Sora v1.3 STDiT3: checkpoint keys/shapes, recorded tiny outputs, loader, gradient checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
from opensora_fixtures import load_fixture, rule_state_dict
from safetensors.torch import save_file

from videxp.models.opensora.stdit3 import (
    STDIT3_PRESETS,
    STDiT3,
    STDiT3CheckpointError,
    STDiT3Config,
    load_stdit3,
    stdit3_config,
)
from videxp.weights.files import ModelNotAvailable

CALLS = ("t2v", "x_mask", "i2v")


@pytest.fixture(scope="module")
def tiny_fx() -> dict:
    return load_fixture("stdit3_tiny.json")


@pytest.fixture(scope="module")
def tiny_rule(tiny_fx) -> dict[str, torch.Tensor]:
    return rule_state_dict(tiny_fx["state_dict"])


@pytest.fixture(scope="module")
def tiny_model(tiny_fx, tiny_rule) -> STDiT3:
    model = STDiT3(**tiny_fx["config"]).eval()
    model.load_state_dict(tiny_rule, strict=True)
    return model


@pytest.fixture(scope="module")
def tiny_inputs(tiny_fx, tiny_model) -> dict:
    ns = {"torch": torch, "model": tiny_model}
    exec(tiny_fx["input_recipe"].split("\n\noutput")[0], ns)
    return ns


def call_kwargs(ns: dict, name: str) -> dict:
    """forward kwargs of the fixture's call `name` (README §2)."""
    kw = dict(mask=ns["mask"], fps=ns["fps"], height=ns["height"], width=ns["width"])
    if name == "x_mask":
        kw["x_mask"] = ns["x_mask"]
    if name == "i2v":
        kw.update(
            cond=ns["cond"], cond_mask=ns["cond_mask"], mask_index=ns["mask_index"], y_null=ns["y_null"]
        )
    return kw


# ----------------------------------------------------------------------------- full-size checkpoint layout
def test_xl_preset_matches_manifest_config():
    manifest = load_fixture("stdit3_xl2_manifest.json")
    assert stdit3_config("xl") == STDiT3Config(**manifest["config"])
    assert STDiT3Config() == stdit3_config("xl")  # defaults are the XL/2 v1.3 values


def test_xl_state_dict_matches_released_checkpoint_layout():
    manifest = load_fixture("stdit3_xl2_manifest.json")
    with torch.device("meta"):
        model = STDiT3(stdit3_config("xl"))
    sd = model.state_dict()
    assert list(sd) == list(manifest["state_dict"])  # same keys, same order
    assert {k: list(v.shape) for k, v in sd.items()} == manifest["state_dict"]
    assert len(sd) == manifest["num_keys"] == 977
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == 1_207_959_692
    assert [k for k, _ in model.named_buffers() if k in sd] == manifest["buffers"]
    persistent = set(sd)
    assert sorted(k for k, _ in model.named_buffers() if k not in persistent) == sorted(
        manifest["non_persistent_buffers"]
    )
    assert isinstance(model.rope.freqs, torch.nn.Parameter) and not model.rope.freqs.requires_grad
    meta_sd = {k: torch.empty(s, device="meta") for k, s in manifest["state_dict"].items()}
    model.load_state_dict(meta_sd, strict=True)


# ----------------------------------------------------------------------------- recorded outputs
def test_tiny_layout_and_inputs(tiny_fx, tiny_model, tiny_inputs):
    assert stdit3_config("tiny") == STDiT3Config(**tiny_fx["config"])
    assert {k: list(v.shape) for k, v in tiny_model.state_dict().items()} == tiny_fx["state_dict"]
    assert list(tiny_model.state_dict()) == list(tiny_fx["state_dict"])
    assert sum(p.numel() for p in tiny_model.parameters()) == tiny_fx["num_parameters"]
    for name, check in tiny_fx["input_checks"].items():
        value = tiny_inputs[name]
        if name == "mask_index":
            assert value == check
            continue
        assert (
            list(value.shape) == check["shape"] and str(value.dtype).removeprefix("torch.") == check["dtype"]
        )
        flat = value.double().reshape(-1)
        assert flat.sum().item() == pytest.approx(check["sum"], rel=1e-6, abs=1e-4), name
        assert flat.abs().sum().item() == pytest.approx(check["abs_sum"], rel=1e-6), name
        assert flat[:4].tolist() == pytest.approx([float(v) for v in check["first"]], rel=1e-6), name


@pytest.mark.parametrize("name", CALLS)
def test_tiny_reproduces_recorded_output(tiny_fx, tiny_model, tiny_inputs, name):
    ns = tiny_inputs
    with torch.no_grad():
        out = tiny_model(ns["x"], ns["timestep"], ns["y"], **call_kwargs(ns, name))
    rec = tiny_fx["outputs"][name]
    expected = torch.tensor(rec["values"], dtype=torch.float32)
    assert list(out.shape) == rec["shape"] and out.dtype == torch.float32
    tol = tiny_fx["recommended_tolerance"]
    torch.testing.assert_close(out, expected, atol=tol["atol"], rtol=tol["rtol"])


def test_i2v_default_y_null_is_the_learned_null_caption(tiny_fx, tiny_model, tiny_inputs):
    ns = tiny_inputs
    kw = call_kwargs(ns, "i2v")
    del kw["y_null"]  # the fixture's y_null is y_embedder.y_embedding repeated: the default
    with torch.no_grad():
        out = tiny_model(ns["x"], ns["timestep"], ns["y"], **kw)
    torch.testing.assert_close(out, torch.tensor(tiny_fx["outputs"]["i2v"]["values"]), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- loader
def _tiny_forward(model: STDiT3, ns: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(ns["x"], ns["timestep"], ns["y"], **call_kwargs(ns, "t2v"))


def test_load_safetensors_file_and_folder(tmp_path, tiny_rule, tiny_model, tiny_inputs):
    path = tmp_path / "stdit3.safetensors"
    save_file(tiny_rule, str(path))
    model = load_stdit3(path, size="tiny", device="cpu")
    assert not model.training and model.rope.freqs.device.type == "cpu"
    assert all(v.device.type == "cpu" for v in model.state_dict().values())
    torch.testing.assert_close(model.pos_embed.inv_freq, tiny_model.pos_embed.inv_freq)
    for k, v in tiny_rule.items():
        assert torch.equal(model.state_dict()[k], v), k
    torch.testing.assert_close(_tiny_forward(model, tiny_inputs), _tiny_forward(tiny_model, tiny_inputs))

    folder = tmp_path / "repo"
    folder.mkdir()
    save_file(tiny_rule, str(folder / "model.safetensors"))
    # size fields of config.json are read; the v1.3 switches stay the preset's
    (folder / "config.json").write_text('{"model_type": "STDiT3", "depth": 2, "kernel_size": null}')
    model = load_stdit3(folder, size="tiny", dtype="bf16")
    assert model.config.kernel_size == (8, 8, -1)
    assert model.x_embedder.proj.weight.dtype == torch.bfloat16
    (folder / "config.json").write_text('{"model_type": "STDiT3", "depth": 1}')
    with pytest.raises(STDiT3CheckpointError, match=r"unexpected: \[.spatial_blocks\.1\."):
        load_stdit3(folder, size="tiny")


def test_load_pt_with_wrapper_and_prefix(tmp_path, tiny_rule, tiny_model, tiny_inputs):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_rule.items()}}, path)
    model = load_stdit3(str(path), size="tiny")
    torch.testing.assert_close(_tiny_forward(model, tiny_inputs), _tiny_forward(tiny_model, tiny_inputs))


def test_load_wrong_shapes_names_the_keys(tmp_path, tiny_rule):
    bad = dict(tiny_rule)
    bad["final_layer.linear.weight"] = torch.zeros(3, 48)
    del bad["t_block.1.bias"]
    bad["extra.weight"] = torch.zeros(2)
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    with pytest.raises(STDiT3CheckpointError) as err:
        load_stdit3(path, size="tiny")
    text = str(err.value)
    assert "final_layer.linear.weight: file [3, 48] vs model [32, 48]" in text
    assert "1 missing: ['t_block.1.bias']" in text and "1 unexpected: ['extra.weight']" in text
    with pytest.raises(STDiT3CheckpointError, match="shape mismatch"):
        load_stdit3(tmp_path / "bad.safetensors", size="xl")


def test_absent_hub_id_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(ModelNotAvailable) as err:
        load_stdit3("videxp-tests/absent-stdit3", size="tiny")
    text = str(err.value)
    assert "videxp-tests/absent-stdit3" in text and str(tmp_path / "hf" / "hub") in text
    with pytest.raises(ModelNotAvailable, match="no such file"):
        load_stdit3(tmp_path / "missing.safetensors", size="tiny")


# ----------------------------------------------------------------------------- training
def test_gradient_checkpointing_same_output_and_grads(tiny_fx, tiny_rule):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    B, C, T, H, W = 2, 4, 3, 6, 10
    x = torch.randn(B, C, T, H, W, generator=g)
    y = torch.randn(B, 1, 16, 32, generator=g)
    mask = (torch.arange(16)[None] < torch.tensor([[5], [9]])).long()
    cond_mask = torch.zeros(B, C, T, H, W)
    cond_mask[:, :, 0] = 1
    kw = dict(
        mask=mask,
        fps=torch.tensor([24.0, 12.0]),
        height=torch.tensor([48.0] * B),
        width=torch.tensor([80.0] * B),
    )
    kw.update(
        cond=x * cond_mask,
        cond_mask=cond_mask,
        mask_index=[0],
        x_mask=torch.tensor([[False, True, True]] * B),
    )
    results = []
    for ckpt in (False, True):
        model = STDiT3(**tiny_fx["config"])
        model.load_state_dict(tiny_rule, strict=True)
        model.train().enable_gradient_checkpointing(ckpt)
        out = model(x, torch.tensor([500.0, 20.0]), y, **kw)
        out.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        assert "rope.freqs" not in grads and grads
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], atol=0, rtol=0)
    for n, gr in results[0][1].items():
        torch.testing.assert_close(gr, results[1][1][n], atol=1e-6, rtol=1e-5, msg=n)


def test_presets_are_known():
    assert set(STDIT3_PRESETS) == {"tiny", "xl"}
    with pytest.raises(ValueError, match="unknown STDiT3 size"):
        stdit3_config("huge")
    assert math.prod(stdit3_config("xl").patch_size) * stdit3_config("xl").out_channels == 128
