"""model=larp with a frame-prediction AR: its training loss, the stage-1 tokenizer checkpoint, sampling."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import bare_trainer

from videxp.errors import ConfigError
from videxp.models.larp.module import LARPModule

FP = {"frame_prediction": True, "cond_frames": 2}
SAMPLING = {"cfg_scale": 1.0, "top_k": 1, "dtype": "float32"}


def _batches(n: int):
    g = torch.Generator().manual_seed(0)
    video = torch.rand(8, 4, 3, 16, 16, generator=g) * 2 - 1  # [B, T, C, H, W]
    return torch.utils.data.DataLoader([{"video": video}] * n, batch_size=None)


def _fit(module: LARPModule, steps: int, root) -> list[float]:
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = bare_trainer(steps, default_root_dir=root, callbacks=[Record()])
    torch.manual_seed(0)
    trainer.fit(module, train_dataloaders=_batches(steps))
    return losses


def test_frame_prediction_ar_is_sized_from_the_tokenizer_and_conditions_on_observed_ids():
    module = LARPModule(size="tiny", ar=FP, sampling=SAMPLING)
    t, ar = module.tokenizer, module.ar
    assert ar.frame_prediction and ar.cls_token_num == t.bottleneck_token_num + 1
    clip = module.clip(next(iter(_batches(1)))["video"])  # [B, 3, 4, 16, 16]
    cond = module.condition(clip)  # [B, N + 1]
    assert cond.shape == (8, t.bottleneck_token_num + 1) and (cond[:, -1] == t.codebook_size).all()
    padded = torch.cat([clip[:, :, :2], clip[:, :, 1:2], clip[:, :, 1:2]], 2)  # frames 0, 1, 1, 1
    assert torch.equal(cond[:, :-1], module.tokens(padded))


def test_frame_prediction_training_lowers_the_loss(tmp_path):
    module = LARPModule(size="tiny", ar=FP, sampling=SAMPLING, optim={"lr": 3e-3, "warmup_epochs": 0})
    losses = _fit(module, 12, tmp_path)
    assert losses[-1] < losses[0], losses


def test_cond_frames_must_leave_frames_to_predict():
    with pytest.raises(ConfigError, match="cond_frames"):
        LARPModule(size="tiny", ar={"frame_prediction": True, "cond_frames": 4})


def test_stage_1_checkpoint_gives_stage_2_its_tokenizer(tmp_path):
    stage1 = LARPModule(size="tiny", stage="tokenizer", tiny_seed=1)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": stage1.state_dict()}, ckpt)  # SavesTrainedOnly: tokenizer.* (with the prior)
    stage2 = LARPModule(size="tiny", ar=FP, tokenizer={"ckpt": str(ckpt)}, sampling=SAMPLING)
    assert stage2.tokenizer.prior_model is None
    for k, v in stage2.tokenizer.state_dict().items():
        assert torch.equal(v, stage1.tokenizer.state_dict()[k]), k
    gen = stage2.eval().generator()
    frames = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    out = gen.generate(frames, [0, 1], [2, 3], {}, [0, 1])  # [B, 2, 3, 16, 16]
    assert out.shape == (2, 2, 3, 16, 16) and out.abs().max() <= 1


def test_tokenizer_ckpt_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no file"):
        LARPModule(size="tiny", tokenizer={"ckpt": str(tmp_path / "missing.ckpt")})
    torch.save({"state_dict": LARPModule(size="tiny").state_dict()}, tmp_path / "ar.ckpt")  # ar.* only
    with pytest.raises(ConfigError, match="no tokenizer"):
        LARPModule(size="tiny", tokenizer={"ckpt": str(tmp_path / "ar.ckpt")})


def test_ar_preset_sizes_a_random_ar_and_is_refused_for_a_pretrained_one():
    module = LARPModule(size="tiny", ar={**FP, "preset": {"dim": 64, "n_layer": 3, "n_head": 4}})
    cfg, t = module.ar.config, module.tokenizer
    assert (cfg.dim, cfg.n_layer, cfg.n_head) == (64, 3, 4)
    assert cfg.vocab_size == t.codebook_size and cfg.cls_token_num == t.bottleneck_token_num + 1
    with pytest.raises(ConfigError, match="model.ar.preset"):
        LARPModule(size="paper", ar={"pretrained": "some/ar", "preset": {"dim": 64}})
