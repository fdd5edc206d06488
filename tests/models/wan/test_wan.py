"""Wan2.1 I2V adapter: tiny pipeline via videxp-sample, conditioning, full-size keys, offline errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import compose_cfg

from videxp import sample
from videxp.models.diffusers_common import row_prompts
from videxp.models.wan.components import full_transformer_config
from videxp.models.wan.generator import WanGenerator
from videxp.weights.files import ModelNotAvailable, hf_cache_dir

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this file may reach the hub

FP32 = {k: "fp32" for k in ("transformer", "text_encoder", "image_encoder", "vae")}
TINY_SAMPLING = {"steps": 2, "height": None, "width": None, "prompt": "moving shapes"}

WAN_TINY = [
    "model=wan",
    "model.size=tiny",
    "ckpt_path=random",  # size=tiny: random components, on purpose
    "model.sampling.steps=2",
    "model.sampling.height=null",  # the dataset frame size (32, a multiple of 16)
    "model.sampling.width=null",
    "model.sampling.prompt='moving shapes'",
    "model.sampling.frame_rule=round_up",
    *[f"model.dtypes.{k}=fp32" for k in FP32],
    "dataset.image_size=32",
    "dataset.video_length=8",
    "dataset.source.num_videos={train: 4, val: 2, test: 2}",
    "dataset.source.sprite_size=[4,8]",
    "inference.obs_length=1",
    "inference.step_size=4",  # calls of 1 + 4 = 5 frames (4k+1), then 1 + 3 = 4 -> rounded to 5 and trimmed
    "inference.max_frames=5",  # one observed frame per call
    "sample.batch_size=2",
    "sample.video_format=none",
    "sample.schedule_png=false",
    "device=cpu",
]


@pytest.fixture(scope="module")
def tiny() -> WanGenerator:
    return WanGenerator(
        size="tiny", dtypes=FP32, device="cpu", sampling={**TINY_SAMPLING, "frame_rule": "round_up"}
    )


def test_tiny_wan_samples_through_videxp_sample(tmp_path):
    cfg = compose_cfg("sample", WAN_TINY, tmp_path)
    summary = sample.run(cfg)
    manifest = json.loads((tmp_path / "samples" / "manifest.json").read_text())
    assert summary["written"] == 2
    model = manifest["model"]
    assert model["frame_rule"] == "round_up" and model["fps"] == 16.0
    calls = {c["targets"]: c for c in model["effective_frames"]}
    assert calls[4] == {"targets": 4, "requested": 5, "generated": 5, "calls": 1, "trimmed": 0}
    assert calls[3] == {"targets": 3, "requested": 4, "generated": 5, "calls": 1, "trimmed": 1}
    assert model["dtypes"]["vae"] == "float32" and model["steps"] == 2
    assert "resolved_revision" in model  # the hub commit used (None: built locally, nothing from the hub)
    import numpy as np

    video = np.load(tmp_path / "samples" / "sample_0000-0.npy")
    assert video.shape == (8, 32, 32, 3)


def test_frame_rule_error_is_explicit():
    gen = WanGenerator.__new__(WanGenerator)  # frames_for only reads sampling and capabilities
    gen.sampling = {"frame_rule": "error"}
    with pytest.raises(ValueError, match="4k\\+1.*frame_rule=round_up"):
        gen.frames_for(3)
    assert gen.frames_for(4) == (5, 5)


def test_sizes_must_be_multiples_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        WanGenerator(size="tiny", device="cpu", sampling={"height": 40})


def test_first_generated_frame_depends_on_the_image(tiny):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 3, 32, 32, generator=g) * 2 - 1  # [B, 1, C, H, W]
    y = x.flip(-1).neg()
    a = tiny.generate(x, [0], [1, 2, 3, 4], {}, [7])
    b = tiny.generate(x, [0], [1, 2, 3, 4], {}, [7])
    c = tiny.generate(y, [0], [1, 2, 3, 4], {}, [7])
    assert a.shape == (1, 4, 3, 32, 32)
    torch.testing.assert_close(a, b)  # same seed, same image: same video
    assert (a[:, 0] - c[:, 0]).abs().max() > 1e-4  # another image changes the first generated frame


def test_rows_are_seeded_independently_of_the_batch(tiny):
    x = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    both = tiny.generate(x, [0], [1, 2, 3, 4], {"prompt": ["a red circle", ""]}, [3, 4])
    alone = tiny.generate(x[1:], [0], [1, 2, 3, 4], {"prompt": [""]}, [4])
    torch.testing.assert_close(both[1:], alone)


def test_image_attention_branch_runs_with_512_text_tokens(tiny):
    seen = []
    attn2 = tiny.pipe.transformer.blocks[0].attn2
    hook = attn2.add_k_proj.register_forward_hook(lambda m, i, o: seen.append(("img", i[0].shape)))
    cross = attn2.register_forward_pre_hook(
        lambda m, a, kw: seen.append(("ctx", (a[1] if len(a) > 1 else kw["encoder_hidden_states"]).shape)),
        with_kwargs=True,
    )
    try:
        tiny.generate(torch.zeros(1, 1, 3, 32, 32), [0], [1, 2, 3, 4], {}, [0])
    finally:
        hook.remove()
        cross.remove()
    image_tokens = 32 * 32 + 1  # tiny CLIP: patch 1 on 32x32 plus the class token
    img = [shape for kind, shape in seen if kind == "img"]  # image keys: [1, image tokens, inner dim]
    ctx = [shape for kind, shape in seen if kind == "ctx"]  # image + text context of cross-attention
    assert img and all(s == (1, image_tokens, 24) for s in img)
    assert ctx and all(s[1] == image_tokens + 512 for s in ctx)


def test_prompt_required_and_first_last_needs_flf2v(tiny):
    assert row_prompts({"prompt": ["", "b"]}, 2, "default") == ["default", "b"]
    with pytest.raises(ValueError, match="no prompt"):  # an empty dataset prompt and no sampling.prompt
        row_prompts({"prompt": [""]}, 1, None)
    with pytest.raises(ValueError, match="one frame"):
        tiny.generate(torch.zeros(1, 2, 3, 32, 32), [0, 1], [2, 3, 4, 5], {}, [0])
    with pytest.raises(ValueError, match="FLF2V"):
        WanGenerator(size="tiny", dtypes=FP32, device="cpu", condition="first_last", sampling=TINY_SAMPLING)


def test_full_transformer_on_meta_matches_the_checkpoint_keys():
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**full_transformer_config())
    state = model.state_dict()
    assert len(state) == 1303
    assert sum(p.numel() for p in model.parameters()) == 16_394_878_784
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    expected = {
        "scale_shift_table": (1, 2, 5120),
        "patch_embedding.weight": (5120, 36, 1, 2, 2),
        "proj_out.weight": (64, 5120),
        "condition_embedder.time_proj.weight": (30720, 5120),
        "condition_embedder.text_embedder.linear_1.weight": (5120, 4096),
        "condition_embedder.image_embedder.norm1.weight": (1280,),
        "condition_embedder.image_embedder.ff.net.0.proj.weight": (1280, 1280),
        "condition_embedder.image_embedder.ff.net.2.weight": (5120, 1280),
        "condition_embedder.image_embedder.norm2.weight": (5120,),
    }
    for n in (0, 39):
        b = f"blocks.{n}."
        expected |= {
            b + "scale_shift_table": (1, 6, 5120),
            b + "attn1.norm_q.weight": (5120,),
            b + "attn2.norm_added_k.weight": (5120,),
            b + "norm2.weight": (5120,),
            b + "norm2.bias": (5120,),
            b + "ffn.net.0.proj.weight": (13824, 5120),
            b + "ffn.net.2.weight": (5120, 13824),
        }
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                expected[f"{b}{attn}.{proj}.weight"] = (5120, 5120)
                expected[f"{b}{attn}.{proj}.bias"] = (5120,)
        for proj in ("add_k_proj", "add_v_proj"):
            expected[f"{b}attn2.{proj}.weight"] = (5120, 5120)
    assert {k: shapes.get(k) for k in expected} == expected
    assert "blocks.40.scale_shift_table" not in shapes
    assert not any(k.startswith("blocks.0.norm1.") or k.startswith("blocks.0.norm3.") for k in shapes)


def test_offline_absent_model_names_the_id_and_cache(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable) as err:
        WanGenerator(size="full", pretrained="videxp-tests/absent-wan", device="cpu")
    text = str(err.value)
    assert "videxp-tests/absent-wan" in text and hf_cache_dir() in text
    assert "huggingface-cli download videxp-tests/absent-wan" in text
