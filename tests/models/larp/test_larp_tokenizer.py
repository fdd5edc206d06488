"""LARP tokenizer: the paper-size checkpoint layout, every recorded tiny output, the videxp-only options
(LayerNorm eps, VQ sampling with per-video generators, prior attention dropout), the fresh-init tables."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from larp_fixtures import check_inputs, expected, load_fixture, recipe_inputs, rule_state_dict

from videxp.models.larp.layers import sincos_1d
from videxp.models.larp.tokenizer import LARPTokenizer, larp_tokenizer_config

ENCODE_KEYS = ("projected_z", "unregularized_z", "regularized_z", "bottleneck_rep", "encoded")
LOSS_KEYS = ("loss_q", "loss_commit", "loss_codebook")
OUTPUTS = (
    "patch_tokens",
    "encoder_out",
    *ENCODE_KEYS,
    "vq_cos_sim",
    *LOSS_KEYS,
    "recon",
    "codebook_z",
    "decoder_in",
    "decode_ids",
    "decoder_out",
    "prior_pred",
    "prior_logits",
    "prior_ce",
)


@pytest.fixture(scope="module")
def fx() -> dict:
    return load_fixture("tokenizer_tiny.json")


@pytest.fixture(scope="module")
def rule(fx) -> dict[str, torch.Tensor]:
    return rule_state_dict(fx["state_dict"])


def tiny(fx, rule, **options) -> LARPTokenizer:
    model = LARPTokenizer(**fx["config"], **options).eval()
    model.load_state_dict(rule, strict=True)
    model.set_vq_eval_deterministic(True)
    return model


@pytest.fixture(scope="module")
def model(fx, rule) -> LARPTokenizer:
    return tiny(fx, rule)


@pytest.fixture(scope="module")
def ns(fx) -> dict:
    return recipe_inputs(fx)


def run_recorded_calls(model: LARPTokenizer, ns: dict) -> dict[str, torch.Tensor]:
    """The fixture's calls (README, tokenizer outputs table); encoder / decoder outputs through hooks."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("encoder_out", o)),
        model.decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("decoder_out", o)),
    ]
    try:
        with torch.no_grad():
            enc = model.encode(ns["video"])
            out = {k: enc[k] for k in (*ENCODE_KEYS, *LOSS_KEYS)}
            out["encoder_out"] = seen["encoder_out"]
            out["patch_tokens"] = model.x_embedder(ns["video"])
            out["vq_cos_sim"] = torch.einsum("bnd,kd->bnk", enc["unregularized_z"], enc["emb"])
            out["recon"] = model.decode(enc["encoded"])
            out["codebook_z"] = model.bottleneck.regularizer.decode(ns["ids"])
            out["decoder_in"] = model.bottleneck.decode(ns["ids"])
            out["decode_ids"] = model.decode_from_bottleneck(ns["ids"])
            out["decoder_out"] = seen["decoder_out"]
            out["prior_pred"] = model.prior_model.ar_predict(enc["regularized_z"])
            out["prior_logits"] = model.calculate_logits_and_ar_pred_cont(out["prior_pred"])[0]
            labels = enc["bottleneck_rep"][:, 1:].reshape(-1)
            out["prior_ce"] = F.cross_entropy(out["prior_logits"].reshape(-1, model.codebook_size), labels)
    finally:
        for h in hooks:
            h.remove()
    return out


@pytest.fixture(scope="module")
def outputs(model, ns) -> dict[str, torch.Tensor]:
    return run_recorded_calls(model, ns)


# ----------------------------------------------------------------------------- paper-size layout
def test_larp_l_long_layout_matches_manifest():
    manifest = load_fixture("tokenizer_manifest.json")
    assert larp_tokenizer_config("larp_l_long") == manifest["config"]
    with torch.device("meta"):
        model = LARPTokenizer(**manifest["config"])
        bare = LARPTokenizer(**manifest["config"], build_prior=False)
    sd = model.state_dict()
    assert list(sd) == list(manifest["state_dict"])  # keys and order
    assert {k: list(v.shape) for k, v in sd.items()} == manifest["state_dict"]
    assert len(sd) == manifest["num_keys"] == 479
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == 193_880_224
    assert [k for k, _ in model.named_buffers()] == manifest["buffers"]  # all persistent
    meta = {k: torch.empty(s, device="meta") for k, s in manifest["state_dict"].items()}
    model.load_state_dict(meta, strict=True)
    prior = manifest["prior_model_keys"]
    assert sum(k.startswith(prior["prefix"]) for k in sd) == prior["count"]
    assert bare.prior_model is None and len(bare.state_dict()) == 479 - prior["count"]
    params = sum(p.numel() for p in bare.parameters())
    assert params == manifest["num_parameters_without_prior_model"] == 172_179_984
    assert (model.bottleneck_token_num, model.codebook_size, model.frame_num, model.input_size) == (
        1024,
        8192,
        16,
        128,
    )


# ----------------------------------------------------------------------------- recorded tiny outputs
def test_tiny_layout_and_inputs(fx, model, ns):
    assert larp_tokenizer_config("tiny") == fx["config"]
    sd = model.state_dict()
    assert list(sd) == list(fx["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == fx["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == fx["num_parameters"]
    check_inputs(fx, ns)


def test_every_recorded_output_is_checked(fx):
    assert set(OUTPUTS) == set(fx["outputs"])


@pytest.mark.parametrize("name", OUTPUTS)
def test_tiny_reproduces_recorded_output(fx, outputs, name):
    want, got = expected(fx, name), outputs[name]
    assert list(got.shape) == fx["outputs"][name]["shape"] and got.dtype == want.dtype
    if not want.is_floating_point():
        assert torch.equal(got, want)  # token ids: exactly
    else:
        tol = fx["recommended_tolerance"]
        torch.testing.assert_close(got, want, atol=tol["atol"], rtol=tol["rtol"])


def test_encode_eval_and_decode_eval_equal_encode_and_decode(model, ns, outputs):
    with torch.no_grad():
        enc = model.encode_eval(ns["video"])
        assert enc["num_x_tokens"] == model.video_token_num
        assert torch.equal(enc["bottleneck_rep"], outputs["bottleneck_rep"])
        torch.testing.assert_close(model.decode_eval(enc["encoded"]), outputs["recon"], atol=0, rtol=0)
        first = model.decode_eval(enc["encoded"], num_x_tokens=16)  # the first temporal patch: 2 frames
    assert first.shape == (2, 3, 2, 16, 16)
    assert isinstance(enc["input_norm_first"], float) and isinstance(enc["input_norm_last"], float)


def test_input_size_is_checked_strictly(model):
    with pytest.raises(ValueError, match=r"must be \[B, 3, \*\[4, 16, 16\]\]"):
        model.encode(torch.rand(1, 3, 4, 16, 8))


# ----------------------------------------------------------------------------- options
def test_layernorm_eps_option_is_live(fx, rule, ns, outputs):
    """timm >= 1.0.16 builds LARP's blocks with eps 1e-6: encoder_out moves by ~1e-3 (README)."""
    model = tiny(fx, rule, ln_eps=1e-6)
    assert model.encoder.blocks[0].norm1.eps == 1e-6 and model.final_layer.norm_final.eps == 1e-6
    seen = {}
    model.encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    with torch.no_grad():
        model.encode(ns["video"])
    diff = (seen["out"] - outputs["encoder_out"]).abs().max().item()
    assert 1e-4 < diff < 1e-2
    assert LARPTokenizer(**fx["config"]).encoder.blocks[0].norm1.eps == 1e-5  # the default: timm <= 1.0.15


def test_vq_samples_by_default_and_per_video_generators_are_batch_independent(fx, rule, ns, outputs):
    model = tiny(fx, rule)
    model.set_vq_eval_deterministic(False)  # LARP's default in eval mode
    video = ns["video"]

    def ids(v, seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        with torch.no_grad():
            return model.encode(v, generator=gens)["bottleneck_rep"]

    batch = ids(video, [3, 4])
    assert torch.equal(batch[0], ids(video[:1], [3])[0]) and torch.equal(batch[1], ids(video[1:], [4])[0])
    assert torch.equal(batch, ids(video, [3, 4]))
    draws = torch.stack([ids(video, [s, s + 1]) for s in range(8)])
    assert (draws != outputs["bottleneck_rep"]).any()  # sampled, not the argmax
    one = torch.Generator().manual_seed(5)
    with torch.no_grad():
        a = model.encode(video, generator=one)["bottleneck_rep"]
        b = model.encode(video, generator=torch.Generator().manual_seed(5))["bottleneck_rep"]
    assert torch.equal(a, b)


def test_prior_attention_dropout_applies_in_eval_only_when_asked(fx, rule, outputs):
    config = copy.deepcopy(fx["config"])
    config["prior_model"]["no_dropout"] = False  # the paper setting: attn_pdrop 0.1
    zq = outputs["regularized_z"]
    for in_eval, stochastic in ((False, False), (True, True)):
        model = LARPTokenizer(**config, prior_attn_dropout_in_eval=in_eval).eval()
        model.load_state_dict(rule)
        with torch.no_grad():
            a, b = model.prior_model.ar_predict(zq), model.prior_model.ar_predict(zq)
        assert (not torch.equal(a, b)) == stochastic
        if not in_eval:
            torch.testing.assert_close(a, outputs["prior_pred"], atol=1e-5, rtol=1e-5)


def test_training_forward_gives_reconstruction_and_prior_losses(fx, rule, ns):
    model = tiny(fx, rule).train()
    torch.manual_seed(0)
    out = model(ns["video"], global_step=10, max_steps=100)
    assert out["pred_frames"].shape == ns["video"].shape
    assert set(out) >= {"loss_q", "loss_latent_ce", "prior_top1_acc", "prior_top5_acc", "bottleneck_rep"}
    loss = F.mse_loss(out["pred_frames"], ns["video"]) + out["loss_q"] + out["loss_latent_ce"]
    loss.backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0  # straight-through estimator
    assert model.prior_model.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="global_step"):
        model(ns["video"])


# ----------------------------------------------------------------------------- fresh init
def test_fresh_init_fills_the_position_tables_with_sincos(fx):
    torch.manual_seed(0)
    model = LARPTokenizer(**fx["config"])
    D, t_n, h_n = 32, 2, 4
    pe = model.encoder_patch_pe[0].double()  # [t h w, D]
    for t, h, w in ((0, 0, 0), (1, 2, 3), (0, 3, 1)):
        spatial = torch.cat([sincos_1d(D // 2, torch.tensor([w])), sincos_1d(D // 2, torch.tensor([h]))], 1)
        want = spatial + sincos_1d(D, torch.tensor([t]))
        torch.testing.assert_close(pe[(t * h_n + h) * h_n + w], want[0].double(), atol=1e-6, rtol=0)
    assert pe.shape[0] == t_n * h_n * h_n
    torch.testing.assert_close(
        model.decoder_latent_pe[0].double(), sincos_1d(D, torch.arange(16)), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(model.decoder_patch_query_embed, model.encoder_patch_pe)
    assert model.encoder_latent_query_embed.std().item() == pytest.approx(0.02, rel=0.3)
    assert model.final_layer.linear.weight.abs().sum() == 0


def test_frame_patches_without_temporal_patching(fx):
    config = larp_tokenizer_config("tiny", temporal_patch_size=1, decoder_temporal_patch_size=1)
    config["prior_model"] = {"name": "none"}
    model = LARPTokenizer(**config).eval()
    assert model.x_embedder.proj.weight.shape == (32, 3, 4, 4)  # LARP's per-frame Conv2d
    model.set_vq_eval_deterministic(True)
    with torch.no_grad():
        out = model.decode(model.encode(torch.rand(1, 3, 4, 16, 16))["encoded"])
    assert out.shape == (1, 3, 4, 16, 16) and model.prior_model is None
