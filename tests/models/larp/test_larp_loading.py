"""LARP checkpoints: hub ids (offline errors name the id; a cached hub snapshot loads), local folders in the
released config.json + model.safetensors layout (round trips), strict-load errors naming file and keys, the
tokenizer's optional prior."""

from __future__ import annotations

import json

import pytest
import torch
from larp_fixtures import load_fixture, recipe_inputs, rule_state_dict
from safetensors.torch import load_file, save_file

from videxp.models.larp.ar import LARPAR
from videxp.models.larp.hub import LARPCheckpointError
from videxp.models.larp.tokenizer import LARPTokenizer
from videxp.weights.files import ModelNotAvailable

TOKENIZER_ID, AR_ID = "hywang66/LARP-L-long-tokenizer", "hywang66/LARP-L-long-AR"


@pytest.fixture(scope="module")
def tok_fx() -> dict:
    return load_fixture("tokenizer_tiny.json")


@pytest.fixture(scope="module")
def ar_fx() -> dict:
    return load_fixture("ar_tiny.json")


@pytest.fixture
def tokenizer(tok_fx) -> LARPTokenizer:
    model = LARPTokenizer(**tok_fx["config"]).eval()
    model.load_state_dict(rule_state_dict(tok_fx["state_dict"]))
    return model


@pytest.fixture
def ar(ar_fx) -> LARPAR:
    model = LARPAR(**ar_fx["config"]).eval()
    model.load_state_dict(rule_state_dict(ar_fx["state_dict"]))
    return model


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Offline mode with an empty Hugging Face cache; returns the cache folder."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize(("cls", "hub_id"), [(LARPTokenizer, TOKENIZER_ID), (LARPAR, AR_ID)])
def test_offline_hub_id_not_in_the_cache_names_the_id(offline, cls, hub_id):
    with pytest.raises(ModelNotAvailable, match=hub_id) as err:
        cls.from_pretrained(hub_id)
    assert "offline" in str(err.value) and str(offline) in str(err.value)
    assert cls.from_pretrained.__defaults__[0] == hub_id  # the released checkpoint is the default


def test_hub_snapshot_in_the_cache_loads_offline(offline, tokenizer, tok_fx):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline / f"models--{TOKENIZER_ID.replace('/', '--')}"
    tokenizer.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = LARPTokenizer.from_pretrained(TOKENIZER_ID)
    assert not loaded.training and loaded.config == tok_fx["config"]
    for k, v in tokenizer.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_tokenizer_folder_round_trip_in_larp_format(tmp_path, tokenizer, tok_fx):
    folder = tokenizer.save_pretrained(tmp_path / "tok")
    assert json.loads((folder / "config.json").read_text()) == tok_fx["config"]  # LARPTokenizer(**config)
    assert list(load_file(folder / "model.safetensors")) == sorted(tok_fx["state_dict"])
    loaded = LARPTokenizer.from_pretrained(folder)
    assert loaded.prior_model is not None and not loaded.training
    ids = recipe_inputs(tok_fx)["ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode_from_bottleneck(ids), tokenizer.decode_from_bottleneck(ids))
    bf16 = LARPTokenizer.from_pretrained(folder, dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    with torch.no_grad():
        bf16.set_vq_eval_deterministic(True)
        assert bf16.encode(recipe_inputs(tok_fx)["video"])["regularized_z"].dtype == torch.float32


def test_tokenizer_checkpoint_without_the_prior(tmp_path, tokenizer, tok_fx):
    bare = LARPTokenizer(**tok_fx["config"], build_prior=False)
    bare.load_state_dict({k: v for k, v in tokenizer.state_dict().items() if not k.startswith("prior_")})
    folder = bare.save_pretrained(tmp_path / "bare")
    assert json.loads((folder / "config.json").read_text()) == tok_fx["config"]  # the prior stays described
    loaded = LARPTokenizer.from_pretrained(folder)  # built without the prior: the file has none
    assert loaded.prior_model is None
    with pytest.raises(LARPCheckpointError, match=r"model\.safetensors.*missing.*prior_model\.pos_emb"):
        LARPTokenizer.from_pretrained(folder, with_prior=True)
    full = tokenizer.save_pretrained(tmp_path / "full")
    assert LARPTokenizer.from_pretrained(full, with_prior=False).prior_model is None


def test_non_default_options_are_written_and_read_back(tmp_path, tok_fx):
    model = LARPTokenizer(**tok_fx["config"], ln_eps=1e-6)
    folder = model.save_pretrained(tmp_path / "eps")
    assert json.loads((folder / "config.json").read_text())["ln_eps"] == 1e-6
    assert LARPTokenizer.from_pretrained(folder).encoder.blocks[0].norm1.eps == 1e-6


def test_ar_folder_round_trip(tmp_path, ar, ar_fx):
    folder = ar.save_pretrained(tmp_path / "ar")
    assert json.loads((folder / "config.json").read_text()) == ar_fx["config"]  # every ModelArgs field
    loaded = LARPAR.from_pretrained(folder)
    c = recipe_inputs(ar_fx)["cond_idx"]
    assert torch.equal(loaded.sample(c, cfg_scale=1.5, top_k=1), ar.sample(c, cfg_scale=1.5, top_k=1))
    weights = LARPAR.from_pretrained(folder / "model.safetensors", config=ar_fx["config"])  # a bare file
    assert torch.equal(weights.abs_pe, ar.abs_pe)


@pytest.mark.parametrize("change", ["rename", "drop", "reshape"])
def test_mismatched_checkpoint_names_the_file_and_key(tmp_path, ar, change):
    folder = ar.save_pretrained(tmp_path / "ar")
    path = folder / "model.safetensors"
    sd = load_file(path)
    if change == "rename":
        sd["layers.0.attention.wqkv.weight_old"] = sd.pop("layers.0.attention.wqkv.weight")
    elif change == "drop":
        del sd["norm.weight"]
    else:
        sd["abs_pe"] = sd["abs_pe"][:, :8].contiguous()
    save_file(sd, path)
    key = {"rename": "layers.0.attention.wqkv.weight", "drop": "norm.weight", "reshape": "abs_pe"}[change]
    with pytest.raises(LARPCheckpointError) as err:
        LARPAR.from_pretrained(folder)
    assert str(path) in str(err.value) and key in str(err.value)


def test_missing_config_or_folder_is_reported(tmp_path, ar):
    folder = ar.save_pretrained(tmp_path / "ar")
    (folder / "config.json").unlink()
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        LARPAR.from_pretrained(folder)
    with pytest.raises(ModelNotAvailable, match="no such file or folder"):
        LARPTokenizer.from_pretrained(tmp_path / "nowhere")


def test_unknown_config_keys_are_reported(tmp_path, tokenizer, ar):
    for model, cls in ((tokenizer, LARPTokenizer), (ar, LARPAR)):
        folder = model.save_pretrained(tmp_path / cls.__name__)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "rope_scaling": 2.0}))
        with pytest.raises(LARPCheckpointError, match=r"\['rope_scaling'\] are not keywords"):
            cls.from_pretrained(folder)
