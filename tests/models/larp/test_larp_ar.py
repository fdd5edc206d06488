"""LARP AR model: the paper-size layout, recorded teacher-forced outputs and samples (token for token), the
out-of-module KV cache, per-row generators, bf16 sampling, the frame-prediction variant."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from larp_fixtures import check_inputs, expected, load_fixture, recipe_inputs, rule_state_dict

from videxp.models.larp.ar import LARPAR, LARPARConfig, RMSNorm, larp_ar_config

SAMPLES = {  # fixture name -> sample() keywords (README, AR outputs table)
    "sample_greedy": dict(cfg_scale=1.0, top_k=1),
    "sample_greedy_cfg": dict(cfg_scale=1.5, top_k=1),
    "sample_greedy_cfg_interval": dict(cfg_scale=4.0, cfg_interval=3, top_k=1),
}


@pytest.fixture(scope="module")
def fx() -> dict:
    return load_fixture("ar_tiny.json")


@pytest.fixture(scope="module")
def rule(fx) -> dict[str, torch.Tensor]:
    return rule_state_dict(fx["state_dict"])


@pytest.fixture
def model(fx, rule) -> LARPAR:
    model = LARPAR(**fx["config"]).eval()
    model.load_state_dict(rule, strict=True)
    return model


@pytest.fixture(scope="module")
def ns(fx) -> dict:
    return recipe_inputs(fx)


def assert_close(fx, got, name):
    tol = fx["recommended_tolerance"]
    torch.testing.assert_close(got, expected(fx, name), atol=tol["atol"], rtol=tol["rtol"])


# ----------------------------------------------------------------------------- layout
def test_llama_abs_lp_layout_matches_manifest():
    manifest = load_fixture("ar_manifest.json")
    config = larp_ar_config("llama-abs-LP")
    assert config == LARPARConfig(**manifest["config"])
    assert dataclasses.asdict(config) == manifest["config"]  # every ModelArgs field, nothing else
    with torch.device("meta"):
        model = LARPAR(**manifest["config"])
    sd = model.state_dict()
    assert list(sd) == list(manifest["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == manifest["state_dict"]
    assert len(sd) == manifest["num_keys"] == 215 and not list(model.buffers())
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == 631_975_680
    model.load_state_dict({k: torch.empty(s, device="meta") for k, s in manifest["state_dict"].items()})


def test_tiny_layout_and_inputs(fx, model, ns):
    assert larp_ar_config("tiny") == LARPARConfig(**fx["config"])
    assert list(model.state_dict()) == list(fx["state_dict"])
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == fx["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == fx["num_parameters"]
    check_inputs(fx, ns)


# ----------------------------------------------------------------------------- recorded outputs
def test_teacher_forced_logits_losses_and_first_layer(fx, model, ns):
    seen = []
    model.layers[0].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        logits, loss = model(idx=ns["idx"], cond_idx=ns["cond_idx"], targets=ns["targets"])
        _, loss_valid = model(
            idx=ns["idx"], cond_idx=ns["cond_idx"], targets=ns["targets"], valid=ns["valid"]
        )
    assert logits.shape == (3, 16, 64)
    for name, got in (
        ("logits", logits),
        ("loss", loss),
        ("loss_valid", loss_valid),
        ("layer0_out", seen[0]),
    ):
        assert_close(fx, got, name)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_greedy_samples_token_for_token(fx, model, ns, name):
    seq = model.sample(ns["cond_idx"], **SAMPLES[name])
    assert seq.dtype == torch.int32 and seq.shape == (3, 16)
    assert torch.equal(seq, expected(fx, name))
    if name == "sample_greedy":
        model.reset_caches()  # a no-op, kept for LARP's call sites (sample.py)
        with torch.no_grad():
            nll = model(idx=seq[:, :-1], cond_idx=ns["cond_idx"], targets=seq.long())[1]
        assert_close(fx, nll, "sample_greedy_nll")


def test_multinomial_sample_draws_from_the_global_rng_like_larp(fx, model, ns):
    torch.manual_seed(0)
    assert torch.equal(model.sample(ns["cond_idx"], cfg_scale=1.0), expected(fx, "sample_multinomial_seed0"))


def test_kv_cache_stays_out_of_the_state_dict(fx, model, rule, ns):
    keys = list(model.state_dict())
    model.sample(ns["cond_idx"], cfg_scale=1.5, top_k=1)
    assert list(model.state_dict()) == keys and not any("cache" in k for k in keys)
    model.load_state_dict(rule, strict=True)  # right after sampling, without reset_caches()
    with torch.no_grad():
        logits, _ = model(idx=ns["idx"], cond_idx=ns["cond_idx"])  # no cache left to get in the way
    assert_close(fx, logits, "logits")


def test_per_row_generators_make_rows_independent_of_their_batch(model, ns):
    c = ns["cond_idx"]
    kw = dict(cfg_scale=1.5, temperature=1.0, top_p=0.95)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = model.sample(c, generators=gens([10, 11, 12]), **kw)
    for b in range(3):
        alone = model.sample(c[b : b + 1], generators=gens([10 + b]), **kw)
        assert torch.equal(alone[0], batch[b]), b
    assert torch.equal(batch, model.sample(c, generators=gens([10, 11, 12]), **kw))
    assert not torch.equal(batch, model.sample(c, generators=gens([20, 21, 22]), **kw))
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        model.sample(c[:2], generators=gens([1, 2, 3]))


def test_sample_checks_the_sequence_length(model, ns):
    with pytest.raises(ValueError, match="exactly max_seq_len=16"):
        model.sample(ns["cond_idx"], seq_length=8)


def test_bfloat16_sampling_and_rmsnorm_casts_back_before_the_weight(fx, model, ns):
    norm = RMSNorm(4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 1.1, 0.9, 1.3]))
    norm = norm.to(torch.bfloat16)
    x = torch.randn(2, 4).to(torch.bfloat16)
    xf = x.float()
    want = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16) * norm.weight
    assert torch.equal(norm(x), want) and norm(x).dtype == torch.bfloat16
    model = model.to(torch.bfloat16)
    seq = model.sample(ns["cond_idx"], cfg_scale=1.5, top_k=1)
    assert seq.dtype == torch.int32 and seq.shape == (3, 16)
    agree = (seq == expected(fx, "sample_greedy_cfg")).float().mean().item()
    assert agree > 0.5  # bf16 logits may flip close calls, and later tokens follow


def test_training_forward_drops_classes_and_backpropagates(fx, rule, ns):
    model = LARPAR(**fx["config"]).train()
    model.load_state_dict(rule)
    torch.manual_seed(0)
    logits, loss = model(idx=ns["idx"], cond_idx=ns["cond_idx"], targets=ns["targets"])
    assert logits.shape == (3, 16, 64) and loss.isfinite()
    loss.backward()
    assert model.abs_pe.grad.abs().sum() > 0 and model.cls_embedding.embedding_table.weight.grad is not None


def test_frame_prediction_variant_samples_what_teacher_forcing_predicts():
    config = larp_ar_config("tiny", frame_prediction=True, cls_token_num=5)
    with torch.device("meta"):
        keys = LARPAR(config).state_dict()
    model = LARPAR(config).eval()
    assert model.cls_embedding is None and model.tok_embeddings.weight.shape == (65, 48)  # + separator
    assert model.abs_pe.shape == (1, 20, 48)
    model.load_state_dict(rule_state_dict({k: list(v.shape) for k, v in keys.items()}))
    cond = torch.tensor([[1, 2, 3, 4, 64], [5, 6, 7, 8, 64]])  # 4 frame tokens + the separator
    seq = model.sample(cond, cfg_scale=1.0, top_k=1)
    assert seq.shape == (2, 16)
    with torch.no_grad():
        logits, _ = model(idx=seq[:, :-1].long(), cond_idx=cond)
    assert logits.shape == (2, 16, 64)  # sliced to the positions that predict video tokens
    assert torch.equal(logits.argmax(-1).int(), seq)
    with pytest.raises(ValueError, match="cfg_scale=1.0"):
        model.sample(cond, cfg_scale=2.0)
