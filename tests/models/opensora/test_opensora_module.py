"""model=opensora fine-tuning: v2v_head training mask, padding, LoRA, EMA, checkpoints, weight files."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import bare_trainer, compose_cfg
from opensora_fixtures import mix_weights, spy_forward
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from videxp import train
from videxp.models.loading import build_module
from videxp.models.opensora import vae as opensora_vae
from videxp.models.opensora.module import OpenSoraModule
from videxp.models.opensora.text import T5TextEncoder
from videxp.weights.files import ModelNotAvailable

PROMPT = "a video of a person waving"


def clip(frames: int = 45, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.rand(1, frames, 3, 32, 32, generator=g) * 2 - 1, "prompt": [PROMPT]}


def fit(module: L.LightningModule, steps: int = 2, **trainer_kw) -> L.Trainer:
    item = {k: v[0] for k, v in clip().items()}
    trainer = bare_trainer(steps, **trainer_kw)
    trainer.fit(module, DataLoader([item] * steps, batch_size=1))
    return trainer


def test_training_step_uses_the_v2v_head_mask_of_the_observed_frames(monkeypatch):
    m = OpenSoraModule(size="tiny", max_frames=49, training={"condition_frames": 8})
    calls = spy_forward(m.stdit, monkeypatch)
    loss = m.flow_loss(clip()["video"], [PROMPT], torch.Generator().manual_seed(0))
    loss.backward()
    kw = calls[0]
    assert kw["x"].shape == (1, 16, 15, 4, 4)  # 45 frames padded to 49 -> 15 latents
    assert kw["mask_index"] == [0, 1]  # the latents standing only for frames 0..4 of the 8 observed
    assert kw["cond_mask"][:, :, :2].eq(1).all() and kw["cond_mask"][:, :, 2:].eq(0).all()
    assert kw["cond"][:, :, 2:].eq(0).all() and kw["cond"][:, :, :2].abs().sum() > 0
    assert 0 < float(kw["t"][0]) < 1000 and torch.isfinite(loss)
    assert m.stdit.final_layer.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in (*m.vae.parameters(), *m.text_encoder.parameters()))
    # Open-Sora's own setting: 17 frames -> condition_frame_length 5
    m.training_cfg["condition_frames"] = 17
    assert m.cond_index(15) == [0, 1, 2, 3, 4]
    m.training_cfg["cond_type"] = "i2v_loop"
    assert m.cond_index(15) == [0, 14]


def test_latents_of_padding_only_get_no_loss():
    m = OpenSoraModule(size="tiny", max_frames=49)
    w = m.loss_weights(15, 45)  # latent 14 stands for frames 45..48, all padding
    assert w.tolist() == [1.0] * 14 + [0.0]
    assert m.loss_weights(15, 49).tolist() == [1.0] * 15
    with pytest.raises(ValueError, match="pad to 65 > model.max_frames=49"):
        m.model_clip(torch.zeros(1, 50, 3, 32, 32))


def test_drop_condition_and_x_cond_weight(monkeypatch):
    m = OpenSoraModule(size="tiny", max_frames=49, training={"condition_frames": 8})
    m.training_cfg["drop_condition"] = {"null": 1.0}  # neither caption nor condition latents
    calls = spy_forward(m.stdit, monkeypatch)
    m.flow_loss(clip()["video"], [PROMPT], torch.Generator().manual_seed(0))
    kw = calls[0]
    assert kw["cond"].eq(0).all() and kw["cond_mask"][:, :, :2].eq(1).all() and kw["mask_index"] == [0, 1]
    assert kw["force_drop_ids"].all()
    m.training_cfg["drop_condition"] = {"keep": 0.85, "cond": 0.05, "text": 0.05, "null": 0.05}
    draws = [m.draw_condition(torch.Generator().manual_seed(k)) for k in range(200)]
    assert draws.count("keep") > 150 and set(draws) <= {"keep", "cond", "text", "null"}
    m.training_cfg["drop_condition"] = {"sometimes": 1.0}
    with pytest.raises(ValueError, match="unknown keys"):
        m.draw_condition(torch.Generator())
    m.training_cfg["x_cond_weight"] = 3.0  # Open-Sora's rule: the other real latents share what is left
    w = m.loss_weights(15, 45, [0, 1])
    assert w[:2].tolist() == [3.0, 3.0] and w[14] == 0 and w.sum() == pytest.approx(14)
    assert torch.allclose(w[2:14], torch.full((12,), (14 - 6) / 12))


def test_clip_latent_cache_encodes_once_and_changes_nothing(monkeypatch):
    plain = OpenSoraModule(size="tiny", max_frames=49)
    cached = OpenSoraModule(size="tiny", max_frames=49, training={"cache_clip_latents": True})
    calls = []
    encode = cached.vae.encode_moments
    monkeypatch.setattr(cached.vae, "encode_moments", lambda x: calls.append(1) or encode(x))
    video = clip()["video"]
    for step in range(3):  # the same clip three times, as in naive_finetune
        g1, g2 = torch.Generator().manual_seed(step), torch.Generator().manual_seed(step)
        assert torch.equal(plain.flow_loss(video, [PROMPT], g1), cached.flow_loss(video, [PROMPT], g2))
    assert len(calls) == 1
    cached.flow_loss(clip(seed=1)["video"], [PROMPT], torch.Generator())  # another clip: encoded again
    assert len(calls) == 2


def test_caption_dropout_is_only_the_configured_one():
    m = OpenSoraModule(size="tiny", max_frames=49, training={"condition_frames": 8}).train()
    mix_weights(m.stdit)  # a fresh STDiT3 outputs zeros whatever the caption
    video = clip(17)["video"]  # latents 2..4 are not conditioned: they read the caption
    base = m.flow_loss(video, [PROMPT], torch.Generator().manual_seed(0))
    m.stdit.y_embedder.dropout_prob = 1.0  # the XL network's own class_dropout_prob (0.1) never fires
    assert torch.equal(m.flow_loss(video, [PROMPT], torch.Generator().manual_seed(0)), base)
    m.training_cfg["text_dropout"] = 1.0  # videxp's option does
    assert not torch.equal(m.flow_loss(video, [PROMPT], torch.Generator().manual_seed(0)), base)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        m = OpenSoraModule(size="tiny", max_frames=49, gradient_checkpointing=ckpt).train()
        mix_weights(m.stdit)  # gradients reach every block
        m.flow_loss(clip(17)["video"], [PROMPT], torch.Generator().manual_seed(0)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.stdit.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and (grads[0] != 0).float().mean() > 0.5


def test_lora_trains_only_the_adapter(tmp_path):
    m = OpenSoraModule(size="tiny", max_frames=49, lora={"rank": 4, "alpha": 4})
    mix_weights(m.stdit)  # a fresh STDiT3's zero final layer would pass no gradient to the blocks
    keys = set(m.state_dict())
    assert keys and all(".lora_" in k for k in keys)
    base = {k: v.clone() for k, v in m.stdit.state_dict().items() if ".lora_" not in k}
    lora_b = {k: v.clone() for k, v in m.state_dict().items() if "lora_B" in k}
    assert all(v.abs().sum() == 0 for v in lora_b.values())  # starts exactly at the base model
    trainer = fit(m, steps=2)
    after = m.stdit.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())
    assert any(m.state_dict()[k].abs().sum() > 0 for k in lora_b)
    trainer.save_checkpoint(tmp_path / "lora.ckpt")  # holds the LoRA only; the base is rebuilt
    loaded = OpenSoraModule.load_from_checkpoint(tmp_path / "lora.ckpt", map_location="cpu")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in m.state_dict().items())
    with pytest.raises(ValueError, match="missing"):
        m.load_state_dict({})
    with pytest.raises(ValueError, match="ema is for full fine-tuning"):
        OpenSoraModule(size="tiny", lora={}, ema={"enabled": True})


def test_ema_follows_the_weights_and_is_sampled_by_default():
    m = OpenSoraModule(size="tiny", max_frames=49, ema={"enabled": True, "decay": 0.5}, optim={"lr": 1e-2})
    fit(m, steps=2)
    raw, ema = m.stdit.final_layer.linear.weight, m.ema_stdit.final_layer.linear.weight
    assert not torch.equal(raw, ema) and ema.abs().sum() > 0
    assert m.generator().stdit is m.ema_stdit and m.generator(use_ema=False).stdit is m.stdit
    assert any(k.startswith("ema_stdit.") for k in m.state_dict())
    assert not any(k.startswith(("vae.", "text_encoder.")) for k in m.state_dict())


def test_bf16_mixed_step_on_cpu():
    m = OpenSoraModule(size="tiny", max_frames=49)
    trainer = fit(m, steps=1, precision="bf16-mixed")
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_plain_stdit3_weight_files_load_strictly(tmp_path):
    src = OpenSoraModule(size="tiny", max_frames=49, tiny_seed=5)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in src.stdit.state_dict().items()}, str(path))
    m = OpenSoraModule(size="tiny", max_frames=49, ema={"enabled": True})
    assert not torch.equal(m.stdit.x_embedder.proj.weight, src.stdit.x_embedder.proj.weight)
    m.load_weights(path)
    assert torch.equal(m.stdit.x_embedder.proj.weight, src.stdit.x_embedder.proj.weight)
    assert torch.equal(m.ema_stdit.x_embedder.proj.weight, src.stdit.x_embedder.proj.weight)
    bad = tmp_path / "bad.safetensors"
    save_file({"x_embedder.proj.weight": torch.zeros(3)}, str(bad))
    with pytest.raises(ValueError, match="bad.safetensors"):
        m.load_weights(bad)


def test_videxp_train_then_sample_from_the_checkpoint(tmp_path):
    overrides = [
        "model=opensora",
        "model.size=tiny",
        "model.max_frames=17",
        "model.sampling.steps=2",
        "model.training.prompt='moving shapes'",
        "model.sampling.prompt='moving shapes'",
        "model.ema.enabled=true",
        "dataset.image_size=32",
        "dataset.video_length=17",
        "dataset.batch_size=1",
        "dataset.source.num_videos={train: 4, val: 2, test: 2}",
        "inference.obs_length=8",
        "model.training.condition_frames=8",  # train with the observed frames sampling conditions on
        "inference.step_size=9",
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        "callbacks.sample_metrics.num_videos=1",
    ]
    cfg = compose_cfg("train", overrides, tmp_path)
    trainer = train.run(cfg)
    assert {"train/loss", "val/loss", "val/psnr"} <= set(trainer.callback_metrics)  # sampled at validation
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    assert not any(k.startswith(("vae.", "text_encoder.")) for k in state["state_dict"])
    module, info = build_module(cfg.model, str(tmp_path))
    assert info["step"] == 2
    assert torch.equal(
        module.ema_stdit.final_layer.linear.weight, state["state_dict"]["ema_stdit.final_layer.linear.weight"]
    )


def test_text_encoder_loads_a_t5_folder_and_missing_weights_fail_clearly(tmp_path):
    tiny = T5TextEncoder(size="tiny", d_model=32, max_length=16, dtype="fp32")
    tiny.model.save_pretrained(tmp_path / "t5")
    tiny.tokenizer.save_pretrained(tmp_path / "t5")
    loaded = T5TextEncoder(
        size="full", pretrained=str(tmp_path / "t5"), max_length=16, d_model=32, dtype="fp32"
    )
    y, mask = loaded(["a person waving", "a video"])
    assert y.shape == (2, 1, 16, 32) and mask.shape == (2, 16) and mask[:, 0].all() and not mask[:, -1].any()
    assert torch.equal(y, tiny(["a person waving", "a video"])[0])
    with pytest.raises(ValueError, match="caption_channels=64"):
        T5TextEncoder(size="full", pretrained=str(tmp_path / "t5"), d_model=64, dtype="fp32")
    # tests run offline: the released weights are not in the cache, and the error says what to fetch
    with pytest.raises(ModelNotAvailable, match="DeepFloyd/t5-v1_1-xxl"):
        T5TextEncoder(size="full")
    with pytest.raises(ModelNotAvailable, match="hpcai-tech/OpenSora-STDiT-v4"):
        OpenSoraModule(size="xl")


def test_hub_revisions_are_pinned_per_network(monkeypatch):
    m = OpenSoraModule(size="tiny", max_frames=49, revision="v4")  # a plain string pins the STDiT3, as before
    assert m.revision == {"stdit": "v4", "vae": None, "text_encoder": None}
    m = OpenSoraModule(size="tiny", max_frames=49, revision={"vae": "abc", "text_encoder": "def"})
    assert m.revision == {"stdit": None, "vae": "abc", "text_encoder": "def"}
    with pytest.raises(ValueError, match=r"model\.revision: unknown keys \['t5'\]"):
        OpenSoraModule(size="tiny", max_frames=49, revision={"t5": "x"})

    asked = {}

    def resolve(path_or_id, what, revision=None):
        asked[what] = revision
        raise ModelNotAvailable("stop here")

    monkeypatch.setattr(opensora_vae, "resolve_weight_file", resolve)
    with pytest.raises(ModelNotAvailable):
        opensora_vae.load_vae("owner/vae", revision="abc")
    assert asked == {"Open-Sora VAE": "abc"}
