"""Wan2.1 I2V LoRA fine-tuning: one Lightning step on tiny components, adapter files, checkpoints, reset."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from conftest import bare_trainer, compose_cfg
from torch.utils.data import DataLoader

from videxp.models.wan.lora import ADAPTER_FILE, WanLoRAModule, shift_sigmas

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this file may reach the hub

FP32 = {k: "fp32" for k in ("transformer", "text_encoder", "image_encoder", "vae")}
TINY = {
    "size": "tiny",
    "dtypes": FP32,
    "sampling": {"steps": 2, "height": None, "width": None, "prompt": "moving shapes"},
    "optim": {"warmup_steps": 0},  # the recipe's 100 warmup steps would make the first step's lr 0
    "gradient_checkpointing": True,
}
PROMPTS = ["a red circle bouncing", "a blue square on a black background"]


class Clips(L.LightningDataModule):
    """Two seeded random 5-frame 32x32 RGB clips in [-1, 1] with prompts, one batch of 2."""

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        video = torch.rand(2, 5, 3, 32, 32, generator=g) * 2 - 1  # [N, T, C, H, W]
        items = [{"video": video[i], "prompt": PROMPTS[i]} for i in range(2)]
        return DataLoader(items, batch_size=2)


def lora_tensors(module: WanLoRAModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def probe(module: WanLoRAModule) -> torch.Tensor:
    """The transformer's output on fixed random inputs (latents 2x4x4, 512 text tokens)."""
    cfg = module.transformer.config
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return module.transformer(
            hidden_states=torch.randn(1, cfg.in_channels, 2, 4, 4, generator=g),  # [B, 36, t, h, w]
            timestep=torch.tensor([500.0]),
            encoder_hidden_states=torch.randn(1, 512, cfg.text_dim, generator=g),
            encoder_hidden_states_image=torch.randn(1, 5, cfg.image_dim, generator=g),
            return_dict=False,
        )[0]


class GradProbe(L.Callback):
    """Records which parameters hold gradients just before the optimizer step."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.with_grad = {n for n, p in pl_module.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(module after one step, full parameters before, base probe output, checkpoint path, grad names)."""
    torch.manual_seed(0)
    module = WanLoRAModule(**TINY)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    base = probe(module)
    grads = GradProbe()
    trainer = bare_trainer(1, callbacks=[grads])
    trainer.fit(module, datamodule=Clips())
    ckpt = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    return module, before, base, ckpt, grads.with_grad


def test_one_step_trains_only_the_lora(trained):
    module, before, base, _, with_grad = trained
    lora = {n for n, p in module.named_parameters() if p.requires_grad}
    assert lora and all(".lora_A." in n or ".lora_B." in n for n in lora)
    assert all(".attn" in n and any(t in n for t in ("to_q", "to_k", "to_v", "to_out.0")) for n in lora)
    assert with_grad == lora  # only LoRA tensors received gradients
    for n, p in module.named_parameters():
        if n in lora:
            continue
        assert torch.equal(p, before[n]), f"frozen {n} changed"
    changed = [n for n in lora if ".lora_B." in n and not torch.equal(module.get_parameter(n), before[n])]
    assert changed == [n for n in lora if ".lora_B." in n]  # B starts at 0, its gradient is not
    assert not torch.allclose(probe(module), base)
    assert not module.text_encoder.training and not module.vae.training  # frozen parts stay in eval


def test_checkpoint_holds_only_lora_and_reloads(trained):
    module, _, _, ckpt, _ = trained
    data = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert set(data["state_dict"]) == module.lora_names
    n_lora = len(module.lora_names)
    (opt,) = data["optimizer_states"]
    assert len(opt["state"]) == n_lora  # AdamW state over the LoRA tensors only
    assert all(len(g["params"]) == n_lora for g in opt["param_groups"])
    reloaded = WanLoRAModule.load_from_checkpoint(ckpt, map_location="cpu")
    own, got = lora_tensors(module), lora_tensors(reloaded)
    assert own.keys() == got.keys() and all(torch.equal(own[k], got[k]) for k in own)
    assert torch.equal(probe(reloaded), probe(module))
    with pytest.raises(ValueError, match="missing"):
        reloaded.load_state_dict({})


def test_adapter_round_trip_and_diffusers_reads_it(trained, tmp_path):
    module, _, _, _, _ = trained
    file = module.save_adapter(tmp_path / "lora")
    assert file.name == ADAPTER_FILE
    fresh = WanLoRAModule(**TINY)
    assert not torch.equal(probe(fresh), probe(module))
    fresh.load_adapter(tmp_path / "lora")
    own, got = lora_tensors(module), lora_tensors(fresh)
    assert own.keys() == got.keys() and all(torch.equal(own[k], got[k]) for k in own)
    assert torch.equal(probe(fresh), probe(module))
    # diffusers' own loader applies the file to a plain pipeline's transformer
    plain = WanLoRAModule(**TINY)
    plain.transformer.delete_adapters("default")
    plain.pipe.load_lora_weights(str(tmp_path / "lora"), adapter_name="tuned")
    torch.testing.assert_close(probe(plain), probe(module))
    wrong = WanLoRAModule(**{**TINY, "lora": {"rank": 4, "alpha": 4}})
    with pytest.raises(ValueError, match="rank 4"):
        wrong.load_adapter(file)


def test_reset_to_base_restores_base_outputs(trained, tmp_path):
    module, _, base, _, _ = trained
    copy = WanLoRAModule(**TINY)
    copy.load_adapter(module.save_adapter(tmp_path / "lora"))
    assert not torch.allclose(probe(copy), base)
    copy.reset_to_base()
    assert torch.equal(probe(copy), base)
    assert all(torch.count_nonzero(v) == 0 for k, v in copy.state_dict().items() if ".lora_B." in k)


def test_generator_samples_with_the_tuned_transformer(trained):
    module, _, _, _, _ = trained
    gen = module.generator()
    assert gen.pipe.transformer is module.transformer
    frames = torch.rand(1, 1, 3, 32, 32) * 2 - 1  # [B, T_obs, C, H, W]
    video = gen.generate(frames, [0], [1, 2, 3, 4], {"prompt": ["a red circle"]}, [0])
    assert video.shape == (1, 4, 3, 32, 32) and torch.isfinite(video).all()


def test_sigmas_and_frame_rules():
    s = torch.linspace(0, 1, 5)
    assert torch.equal(shift_sigmas(s, 1.0), s)
    assert torch.allclose(shift_sigmas(torch.tensor([0.5]), 3.0), torch.tensor([0.75]))
    module = WanLoRAModule(**{**TINY, "flow": {"weighting": "uniform", "shift": 3.0}})
    sig = module.sample_sigmas(1000, torch.Generator().manual_seed(0))
    assert sig.min() > 0 and sig.max() < 1 and sig.mean() > 0.6  # shifted towards noise
    with pytest.raises(ValueError, match="4k\\+1"):
        module.flow_loss(torch.zeros(1, 6, 3, 32, 32), ["a"], torch.Generator())
    with pytest.raises(ValueError, match="weighting"):
        WanLoRAModule(**{**TINY, "flow": {"weighting": "cosmap"}})


WAN_LORA_TINY = [
    "model=wan_lora",
    "model.size=tiny",
    *[f"model.dtypes.{k}=fp32" for k in FP32],
    "model.height=null",  # the dataset frame size (32, a multiple of 16)
    "model.width=null",
    "model.optim.warmup_steps=0",
    "model.sampling.steps=2",
    "model.sampling.height=null",
    "model.sampling.width=null",
    "model.sampling.prompt='moving shapes'",
    "dataset.image_size=32",
    "dataset.video_length=5",
    "dataset.batch_size=1",
    "dataset.source.num_videos={train: 2, val: 1, test: 1}",
    "dataset.source.sprite_size=[4,8]",
    "inference.obs_length=1",
    "inference.step_size=4",
    "inference.max_frames=5",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "callbacks.sample_metrics.num_videos=1",
    "callbacks.sample_metrics.log_video=false",
]


def test_videxp_train_then_sample_with_the_lora(tmp_path):
    """model=wan_lora through videxp-train (moving_shapes), then videxp-sample from the run folder."""
    from videxp import sample, train

    cfg = compose_cfg("train", WAN_LORA_TINY, tmp_path / "run")
    assert cfg.model.lora.rank == 16 and cfg.model.optim.betas == [0.9, 0.99]  # the recipe's values
    trainer = train.run(cfg)
    assert trainer.global_step == 2
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert set(last["state_dict"]) == trainer.lightning_module.lora_names
    over = [*WAN_LORA_TINY, f"ckpt_path={tmp_path / 'run'}", "sample.video_format=none"]
    over += ["sample.schedule_png=false", "device=cpu"]
    summary = sample.run(compose_cfg("sample", over, tmp_path / "samples"))
    assert summary["written"] >= 1
