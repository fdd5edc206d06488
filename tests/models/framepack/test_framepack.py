"""FramePack through diffusers, offline: tiny pipeline via videxp-sample, frame contracts, conformance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf

from videxp import sample
from videxp.inference.loop import plan_sampling
from videxp.models.framepack.generator import FramePackGenerator
from videxp.weights.files import ModelNotAvailable, hf_cache_dir

SAMPLE = [  # 32x32 frames: multiples of 16, and latents large enough for the 4x history embedder
    "model=framepack",
    "model.size=tiny",
    "ckpt_path=random",  # size=tiny: random components, on purpose
    "model.sampling.steps=2",
    "model.sampling.latent_window_size=2",  # 1 + 8*sections frames per call
    "model.sampling.prompt='a moving shape'",  # moving_shapes has no classes: empty dataset prompts
    "dataset.image_size=32",
    "dataset.video_length=8",
    "dataset.source.num_videos={train: 4, val: 2, test: 2}",
    "dataset.source.sprite_size=[4,8]",
    "inference.obs_length=1",
    "inference.step_size=4",
    "inference.max_frames=5",  # one observed frame per call
    "sample.batch_size=2",
    "sample.video_format=none",
    "sample.schedule_png=false",
    "device=cpu",
]
FULL_PARAMS = 12_874_314_816  # reference §2.1, counted on a meta-device build
FULL_MODULES = {
    "x_embedder",
    "clean_x_embedder",
    "context_embedder",
    "image_projection",
    "time_text_embed",
    "transformer_blocks",
    "single_transformer_blocks",
    "norm_out",
    "proj_out",
}


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    """Nothing may be downloaded: Hugging Face libraries read only the local cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny() -> FramePackGenerator:
    """One tiny random FramePack generator (2 steps, window 2) shared by the direct-call tests."""
    return FramePackGenerator(size="tiny", device="cpu", sampling={"steps": 2, "latent_window_size": 2})


def _image(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, 3, 32, 32, generator=g) * 2 - 1  # [B, T_obs, C, H, W]


def test_sample_run_generates_trimmed_videos(tmp_path):
    cfg = compose_cfg("sample", SAMPLE, tmp_path)
    summary = sample.run(cfg)
    files = sorted((tmp_path / "samples").glob("*.npy"))
    assert [f.name for f in files] == ["sample_0000-0.npy", "sample_0001-0.npy"]
    video = np.load(files[0])
    assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8
    manifest = json.loads((tmp_path / "samples" / "manifest.json").read_text())
    model = manifest["model"]
    assert model["class"].endswith("FramePackGenerator") and model["size"] == "tiny"
    assert model["sampling_type"] == "inverted_anti_drifting" and model["fps"] == 30.0
    assert model["capabilities"]["index_patterns"] == ["first_image_chunk"]
    assert model["capabilities"]["conditioning"] == ["first_image", "prompt", "last_image"]
    # autoreg over 8 frames from 1 observed: chunks of 4 then 3 targets; each call makes 1 + 8 frames
    plan = model["frames"]["effective_frames"]
    assert plan == [
        {"targets": 3, "sections": 1, "num_frames": 5, "produced": 9, "dropped": 5},
        {"targets": 4, "sections": 1, "num_frames": 5, "produced": 9, "dropped": 4},
    ]
    assert summary["written"] == 2


def test_trimming_contract(tiny):
    """More frames are produced than requested; exactly the requested ones come back."""
    for n in (1, 5, 8, 9):
        plan = tiny.frame_plan(n)
        assert plan["produced"] == 1 + 8 * plan["sections"] >= 1 + n
        out = tiny.generate(_image(0), [0], list(range(1, 1 + n)), {"prompt": ["a video"]}, [3])
        assert out.shape == (1, n, 3, 32, 32) and out.abs().max() <= 1
    assert tiny.frame_plan(9) == {"targets": 9, "sections": 2, "num_frames": 10, "produced": 17, "dropped": 7}


def test_conditioning_image_is_used_and_image_branch_runs(tiny):
    calls: dict[str, list] = {"siglip": [], "proj": [], "text_len": []}
    pipe = tiny.pipe
    hooks = [
        pipe.image_encoder.register_forward_hook(lambda m, i, o: calls["siglip"].append(o.last_hidden_state)),
        pipe.transformer.image_projection.register_forward_hook(lambda m, i, o: calls["proj"].append(o)),
        pipe.text_encoder.register_forward_pre_hook(
            lambda m, a, kw: calls["text_len"].append((kw.get("input_ids") if kw else a[0]).shape[-1]),
            with_kwargs=True,
        ),
    ]
    try:
        a = tiny.generate(_image(1), [0], [1, 2, 3], {"prompt": ["a moving shape"]}, [7])
        a2 = tiny.generate(_image(1), [0], [1, 2, 3], {"prompt": ["a moving shape"]}, [7])
        b = tiny.generate(_image(2), [0], [1, 2, 3], {"prompt": ["a moving shape"]}, [7])
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(a, a2)  # same image, same seed: the same frames
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-3  # the first generated frame depends on the input image
    assert calls["siglip"] and calls["siglip"][0].shape[-1] == 32  # SigLIP hidden size = image_proj_dim
    assert calls["proj"] and calls["proj"][0].shape[-1] == 20  # projected to the transformer's inner dim
    assert set(calls["text_len"]) == {256}  # Llama text padded to max_sequence_length, as the real model


def test_rows_follow_their_own_seed(tiny):
    frames = torch.cat([_image(1), _image(2)])  # [2, 1, C, H, W]
    both = tiny.generate(frames, [0], [1, 2], {"prompt": ["a", "b"]}, [11, 12])
    alone = tiny.generate(frames[1:], [0], [1, 2], {"prompt": ["b"]}, [12])
    assert torch.equal(both[1:], alone)


def test_request_errors(tiny):
    with pytest.raises(ValueError, match="has no prompt"):
        tiny.generate(_image(0), [0], [1, 2], {"prompt": [""]}, [0])
    with pytest.raises(ValueError, match="right after observed frame 0"):
        tiny.generate(_image(0), [0], [2, 3], {"prompt": ["a"]}, [0])
    with pytest.raises(ValueError, match="step_size \\+ 1"):
        tiny.generate(torch.cat([_image(0)] * 2, 1), [0, 1], [2, 3], {"prompt": ["a"]}, [0])
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny.generate(torch.zeros(1, 1, 3, 24, 24), [0], [1], {"prompt": ["a"]}, [0])
    last = torch.cat([_image(0), _image(1)], 1)  # start image at 0, last image at 6
    with pytest.raises(ValueError, match="nothing may be trimmed"):
        tiny.generate(last, [0, 6], [1, 2, 3, 4, 5], {"prompt": ["a"]}, [0])


def test_inference_plan_checked_before_loading():
    plan = {"name": "autoreg", "video_length": 8, "obs_length": 1, "step_size": 4, "max_frames": None}
    generator = FramePackGenerator(size="full", device="cpu")  # weights load on first use
    with pytest.raises(ValueError, match="inference.max_frames = inference.step_size \\+ 1"):
        plan_sampling(generator, plan)  # the loop hands over the schedule: raises before any hub lookup


def test_last_image_only_with_the_inverted_checkpoint(tiny):
    frames = torch.cat([_image(0), _image(1)], 1)  # [1, 2, C, H, W]: frame 0 and frame 9
    out = tiny.generate(frames, [0, 9], list(range(1, 9)), {"prompt": ["a"]}, [0])  # 8 = 4*lws: no trim
    assert out.shape == (1, 8, 3, 32, 32)
    f1 = FramePackGenerator(
        size="tiny", variant="f1", device="cpu", sampling={"steps": 2, "latent_window_size": 2}
    )
    assert f1.sampling_type == "vanilla" and "last_image" not in f1.capabilities.conditioning
    assert f1.generate(frames[:, :1], [0], [1, 2, 3], {"prompt": ["a"]}, [0]).shape == (1, 3, 3, 32, 32)
    with pytest.raises(ValueError, match="inverted anti-drifting"):
        f1.generate(frames, [0, 9], list(range(1, 9)), {"prompt": ["a"]}, [0])


def test_output_resized_to_the_input_size():
    gen = FramePackGenerator(
        size="tiny", device="cpu", sampling={"steps": 2, "latent_window_size": 2, "height": 32, "width": 48}
    )
    out = gen.generate(torch.zeros(1, 1, 3, 20, 20), [0], [1, 2], {"prompt": ["a"]}, [0])
    assert out.shape == (1, 2, 3, 20, 20)


def test_full_loading_from_a_saved_pipeline_folder(tiny, tmp_path):
    """size=full reads every component from a local folder (offline) and reproduces the tiny output."""
    tiny.pipe.save_pretrained(tmp_path)
    loaded = FramePackGenerator(
        size="full",
        pretrained=str(tmp_path),
        device="cpu",
        dtypes=dict.fromkeys(tiny.dtypes, "fp32"),
        sampling={**tiny.sampling},
    )
    for name in tiny.dtypes:  # every weighted component comes back exactly
        ours, theirs = getattr(tiny.pipe, name).state_dict(), getattr(loaded.pipe, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for name in ("tokenizer", "tokenizer_2"):
        text = "a moving shape"
        assert getattr(loaded.pipe, name)(text).input_ids == getattr(tiny.pipe, name)(text).input_ids
    x = _image(3)
    args = ([0], [1, 2], {"prompt": ["a moving shape"]}, [5])
    # same weights; the transformer differs from the in-memory one by ~1e-6 (kernel choice), which the
    # random VAE amplifies: compare loosely
    assert torch.allclose(loaded.generate(x, *args), tiny.generate(x, *args), atol=0.1)
    assert loaded.describe()["model_id"] == str(tmp_path)


def test_full_transformer_conformance_on_meta():
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    from videxp.models.framepack.components import full_transformer_config

    with torch.device("meta"):
        model = HunyuanVideoFramepackTransformer3DModel(**full_transformer_config())
    assert sum(p.numel() for p in model.parameters()) == FULL_PARAMS
    keys = model.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == FULL_MODULES
    history = {k.split(".")[1] for k in keys if k.startswith("clean_x_embedder.")}
    assert history == {"proj", "proj_2x", "proj_4x"}
    assert {k.split(".")[1] for k in keys if k.startswith("image_projection.")} == {"up", "down"}
    assert len(model.transformer_blocks) == 20 and len(model.single_transformer_blocks) == 40


def test_full_config_composes_with_upstream_defaults(tmp_path):
    cfg = compose_cfg("sample", ["model=framepack", "model.variant=f1"], tmp_path)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert model["size"] == "full" and model["fps"] == 30 and cfg.inference.name == "autoreg"
    assert "plan" not in model  # the schedule reaches the generator through the sampling loop
    assert model["sampling"]["steps"] == 25 and model["sampling"]["guidance_scale"] == 10.0
    assert model["sampling"]["latent_window_size"] == 9 and model["dtypes"]["transformer"] == "bf16"


def test_offline_missing_model_names_id_and_cache():
    with pytest.raises(ModelNotAvailable) as err:
        FramePackGenerator(size="full", device="cpu").pipe  # noqa: B018 - the weights load on first use
    message = str(err.value)
    assert "lllyasviel/FramePackI2V_HY" in message and hf_cache_dir() in message
    with pytest.raises(ModelNotAvailable, match="no/such-framepack"):
        FramePackGenerator(size="full", device="cpu", transformer_id="no/such-framepack").pipe  # noqa: B018
