"""LARP's LPIPS and GAN tokenizer-loss terms (model.tokenizer_loss.lpips / gan, tokenizer_loss_options): the
perceptual term is videxp's LPIPS-VGG metric with gradients, the discriminator has LARP's architecture and key
names, the GAN losses and the discriminator's schedule are LARP's, and stage=tokenizer with both terms trains,
checkpoints and resumes exactly. Random VGG / tiny networks only: nothing is downloaded."""

from __future__ import annotations

import csv
import shutil

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import bare_trainer, compose_cfg
from safetensors.torch import load_file
from torchvision.models.vgg import cfgs, make_layers

from videxp import train
from videxp.callbacks.checkpoints import PREVIOUS
from videxp.errors import ConfigError
from videxp.metrics.lpips import LPIPS
from videxp.models.larp import tokenizer_loss
from videxp.models.larp.discriminator import DISC_PRESETS, TransformerDiscriminator
from videxp.models.larp.module import LARPModule
from videxp.models.larp.tokenizer_loss import DEFAULT_OPTIONS, build_tokenizer_loss, lecam_reg, smooth_targets
from videxp.utils.seeding import seeded_rng


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """torchvision VGG16's `features.*`, seeded random weights (the layers alone: no classifier to init)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}, path)
    return path


_LPIPS_BUILT: dict = {}  # (net, backbone file) -> what lpips_network returned, across this file's tests


@pytest.fixture
def shared_lpips(monkeypatch):
    """The loss builds its frozen LPIPS network once per backbone file in this file (building one first
    initialises a whole random torchvision VGG16: seconds on 2 cores); the metric builds its own."""
    build = tokenizer_loss.lpips_network

    def cached(net, path=None, download=None):
        if (net, str(path)) not in _LPIPS_BUILT:
            _LPIPS_BUILT[net, str(path)] = build(net, path, download)
        return _LPIPS_BUILT[net, str(path)]

    monkeypatch.setattr(tokenizer_loss, "lpips_network", cached)


def _clips(seed: int, b: int = 2, t: int = 4, s: int = 16) -> torch.Tensor:
    return torch.rand(b, 3, t, s, s, generator=torch.Generator().manual_seed(seed))  # [B, 3, T, S, S]


def _gan_loss(**options):
    return build_tokenizer_loss({"lpips": 0.0, "gan": 0.3}, {**DEFAULT_OPTIONS, **options}, "tiny", 4, 16)


# ----------------------------------------------------------------------------- the terms
def test_lpips_term_is_the_lpips_metric_with_gradients(vgg_file, shared_lpips):
    loss = build_tokenizer_loss(
        {"lpips": 1.0, "gan": 0.0}, {**DEFAULT_OPTIONS, "lpips_backbone_path": vgg_file}, "tiny", 4, 16
    )
    assert loss.discriminator is None and loss.saved_keys() == []
    loss.train()
    assert not loss.perceptual.training and not any(p.requires_grad for p in loss.perceptual.parameters())
    x, x_hat = _clips(1), _clips(2).requires_grad_(True)
    term = loss.perceptual_loss(x, x_hat)
    metric = LPIPS(net="vgg", backbone_path=str(vgg_file))
    frames = [v.transpose(1, 2).flatten(0, 1) for v in (x_hat.detach(), x)]  # [(B T), 3, S, S]
    torch.testing.assert_close(term.detach(), metric.score_frames(*frames).mean(), atol=1e-5, rtol=0)
    term.backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0


def test_discriminator_is_larps_at_paper_size():
    """LARP cfgs/larp_tokenizer.yaml's discriminator (hidden 384, 12 heads, 8 layers, patches 4 x 8 x 8 of
    16 x 128^2 clips): parameter count from the architecture, LARP's state-dict names, [B, 1] logits."""
    D, L_, pt, p, c = 384, 8, 4, 8, 3
    with torch.device("meta"):
        disc = TransformerDiscriminator(**DISC_PRESETS["paper"], input_size=128, frame_num=16)
        logits = disc(torch.empty(2, 3, 16, 128, 128))
    assert logits.shape == (2, 1)
    block = 2 * D + 3 * D * D + (D * D + D) + 2 * D + (D * 4 * D + 4 * D) + (4 * D * D + D)  # timm Block
    expected = (c * pt * p * p * D + D) + D + L_ * block + 2 * D + (D + 1)  # embed, cls, blocks, norm, fc
    assert sum(t.numel() for t in disc.parameters()) == expected == 14_483_329
    names = [
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias",
        "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    ]  # fmt: skip
    blocks = [f"transformer_encoder.blocks.{i}.{n}" for i in range(L_) for n in names]
    keys = ["cls_token", "encoder_pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias", *blocks]
    assert sorted(disc.state_dict()) == sorted(
        [*keys, "norm_final.weight", "norm_final.bias", "fc.weight", "fc.bias"]
    )
    assert disc.state_dict()["encoder_pos_embed"].shape == (1, 4 * 16 * 16, D)


def test_ns_smooth_targets_stay_within_their_clamps():
    logits = torch.zeros(20_000, 1)
    real, fake = smooth_targets(logits, logits, torch.Generator().manual_seed(0))
    assert real.min() == 0.7 and real.max() <= 1 and (real < 1).all()  # 1 - |N| * 0.15, clamped >= 0.7
    assert fake.max() == 0.3 and fake.min() >= 0 and (fake > 0).all()  # |N| * 0.15, clamped <= 0.3
    again = smooth_targets(logits, logits, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], real) and torch.equal(again[1], fake)


@pytest.mark.parametrize("kind", ["ns_smooth", "ns", "hinge"])
def test_gan_losses_and_lecam_are_larps(kind):
    loss = _gan_loss(disc_loss=kind, lecam=0.5)
    real, fake = _clips(3), _clips(4)
    with torch.no_grad():
        lr, lf = loss.discriminator(real), loss.discriminator(fake)  # [B, 1]
    out = loss.discriminator_loss(real, fake, torch.Generator().manual_seed(5))
    if kind == "hinge":
        d = 0.5 * (F.relu(1 - lr).mean() + F.relu(1 + lf).mean())
        g = -lf.mean()
    else:
        t_real, t_fake = (
            smooth_targets(lr, lf, torch.Generator().manual_seed(5))
            if kind == "ns_smooth"
            else (torch.ones_like(lr), torch.zeros_like(lf))
        )
        d = F.binary_cross_entropy_with_logits(lr, t_real) + F.binary_cross_entropy_with_logits(lf, t_fake)
        g = -F.logsigmoid(lf).mean()
    reg = F.relu(lr.mean()).square() + F.relu(-lf.mean()).square()  # the EMA buffers start at 0
    torch.testing.assert_close(out["gan_d"], d)
    torch.testing.assert_close(out["lecam"], reg)
    torch.testing.assert_close(out["loss"], d + 0.5 * reg)
    torch.testing.assert_close(loss.lecam_ema_real, 0.001 * lr.mean())  # EMA decay 0.999
    torch.testing.assert_close(loss.lecam_ema_fake, 0.001 * lf.mean())
    torch.testing.assert_close(loss.generator_loss(fake), g)
    torch.testing.assert_close(
        lecam_reg(torch.tensor(1.0), torch.tensor(-2.0), torch.tensor(0.5), torch.tensor(0.25)),
        torch.tensor(0.75**2 + 2.5**2),
    )


def test_bad_options_are_config_errors_naming_the_key():
    for options, key in [
        ({"disc_loss": "wgan"}, "disc_loss"),
        ({"r1": 1.0}, "r1"),
        ({"disc": {"depth": 2}}, "disc"),
        ({"d_update_freq": 0}, "d_update_freq"),
        ({"disc": {"patch_size": 5}}, "disc"),  # 16 px frames do not split into 5 px patches
    ]:
        with pytest.raises(ConfigError, match=f"tokenizer_loss_options.*{key}"):
            _gan_loss(**options)
    with pytest.raises(ConfigError, match="tokenizer_loss_options.disc_loss"):  # checked at any stage
        LARPModule(size="tiny", stage="ar", tokenizer_loss_options={"disc_loss": "wgan"})
    with pytest.raises(ConfigError, match="model.tokenizer_loss"):
        LARPModule(size="tiny", stage="tokenizer", tokenizer_loss={"gan": -1.0})


def test_nonzero_weights_build_and_only_gan_is_manual(vgg_file, shared_lpips):
    gan = LARPModule(size="tiny", stage="tokenizer", tokenizer_loss={"gan": 0.3})
    assert not gan.automatic_optimization and gan.loss.perceptual is None
    saved = {k for k in gan.state_dict() if k.startswith("loss.")}
    assert saved == {f"loss.discriminator.{k}" for k in gan.loss.discriminator.state_dict()} | {
        "loss.lecam_ema_real",
        "loss.lecam_ema_fake",
    }
    options = {"lpips_backbone_path": str(vgg_file)}
    lpips = LARPModule(
        size="tiny", stage="tokenizer", tokenizer_loss={"lpips": 1.0}, tokenizer_loss_options=options
    )
    assert lpips.automatic_optimization and lpips.loss.discriminator is None
    assert not any(k.startswith("loss.") for k in lpips.state_dict())  # the LPIPS network is never saved
    ar = LARPModule(size="tiny", stage="ar", tokenizer_loss={"gan": 0.3, "lpips": 1.0})
    assert ar.automatic_optimization and ar.loss is None  # the tokenizer's terms do not apply to stage=ar


# ----------------------------------------------------------------------------- the schedule, in Lightning
class _Record(L.Callback):
    """The discriminator's weights before training and after every batch, and each batch's logged gan_g."""

    def __init__(self):
        self.disc, self.gan_g = [], []

    def _snap(self, module) -> None:
        self.disc.append(torch.cat([p.detach().flatten() for p in module.loss.discriminator.parameters()]))

    def on_train_start(self, trainer, module) -> None:
        self._snap(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._snap(module)
        self.gan_g.append(float(trainer.callback_metrics["train/gan_g"]))


def _fit(module: LARPModule, steps: int, **trainer_kw) -> _Record:
    videos = torch.rand(2 * steps, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    loader = torch.utils.data.DataLoader([{"video": v} for v in videos], batch_size=2)
    record = _Record()
    trainer = bare_trainer(steps, callbacks=[record], **trainer_kw)
    trainer.fit(module, loader)
    assert trainer.global_step == steps  # one step per batch: the discriminator's steps do not count
    return record


def _changed(record: _Record) -> list[bool]:
    return [not torch.equal(a, b) for a, b in zip(record.disc, record.disc[1:], strict=False)]


def test_discriminator_steps_every_d_update_freq_batches_from_disc_start(monkeypatch):
    module = LARPModule(
        size="tiny",
        stage="tokenizer",
        tokenizer_loss={"gan": 0.3},
        tokenizer_loss_options={"d_update_freq": 2},
    )
    clipped = []
    monkeypatch.setattr(
        module, "clip_gradients", lambda opt, val, algo: clipped.append((type(opt), val, algo))
    )
    record = _fit(module, 4, gradient_clip_val=0.5)
    assert _changed(record) == [False, True, False, True]  # batches 2 and 4 (LARP's global_step from 1)
    assert all(g > 0 for g in record.gan_g)
    assert module.trainer_clip == (0.5, None)  # taken over from the Trainer, which refuses it when manual
    assert (
        clipped.count((torch.optim.Adam, 0.5, None)) == 2
        and clipped.count((torch.optim.AdamW, 0.5, None)) == 4
    )

    late = LARPModule(
        size="tiny",
        stage="tokenizer",
        tokenizer_loss={"gan": 0.3},
        tokenizer_loss_options={"d_update_freq": 1, "disc_start": 2},
    )
    record = _fit(late, 4)
    assert _changed(record) == [False, False, True, True]
    assert record.gan_g[:2] == [0.0, 0.0] and all(g > 0 for g in record.gan_g[2:])
    with pytest.raises(ConfigError, match="accumulate_grad_batches"):
        _fit(late, 1, accumulate_grad_batches=2)


# ----------------------------------------------------------------------------- videxp-train, resume
def test_seeded_rng_draws_the_same_and_leaves_the_global_state_alone():
    """What makes a resumed tokenizer step draw what the uninterrupted one did (LARPModule.reconstruct)."""
    torch.manual_seed(1)
    before = torch.get_rng_state()
    with seeded_rng(7):
        a = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)
    with seeded_rng(7):
        assert torch.equal(torch.rand(3), a)
    with seeded_rng(7, enabled=False):
        torch.rand(3)
    assert not torch.equal(torch.get_rng_state(), before)


def _rows(run) -> dict[int, dict[str, float]]:
    with open(run / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return {int(r["step"]): {k: float(v) for k, v in r.items() if k.startswith("train/") and v} for r in rows}


def test_trains_checkpoints_and_resumes_exactly_with_lpips_and_gan(tmp_path, vgg_file, shared_lpips):
    """The demo tokenizer experiment with both terms for 4 steps (the discriminator on batches 2 and 4),
    then a run resumed from its step-2 checkpoint logs the same losses for steps 2 and 3."""
    over = [
        "experiment=demo_larp_tokenizer",
        "dataset.batch_size=1",
        "dataset.source.num_videos={train: 64, val: 4, test: 4}",
        "model.tokenizer_loss.lpips=1.0",
        "model.tokenizer_loss.gan=0.3",
        f"model.tokenizer_loss_options.lpips_backbone_path={vgg_file}",
        "model.tokenizer_loss_options.d_update_freq=2",
        "model.tokenizer_loss_options.lecam=0.001",
        "trainer.max_steps=4",
        "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        "callbacks.learning_curves=null",
        "logger=csv",
    ]
    first = train.run(compose_cfg("train", over, tmp_path / "a"))
    assert first.global_step == 4
    ckpts = tmp_path / "a" / "checkpoints"
    ckpt = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    assert {k for k in state if k.startswith("loss.")} == {
        f"loss.discriminator.{k}" for k in first.lightning_module.loss.discriminator.state_dict()
    } | {"loss.lecam_ema_real", "loss.lecam_ema_fake"}
    assert state["loss.lecam_ema_real"] != 0
    assert len(ckpt["optimizer_states"]) == 2
    assert int(ckpt["optimizer_states"][1]["state"][0]["step"]) == 2  # the discriminator's Adam: batches 2, 4
    assert len(ckpt["lr_schedulers"]) == 1
    rows = _rows(tmp_path / "a")
    assert sorted(rows) == [0, 1, 2, 3]
    assert all(rows[s]["train/lpips"] > 0 and rows[s]["train/gan_g"] > 0 for s in rows)
    assert "train/gan_d" not in rows[0] and rows[3]["train/lecam"] >= 0  # logged from batch 2 (then repeated)

    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpts / PREVIOUS, tmp_path / "b" / "checkpoints" / "last.ckpt")  # written after step 2
    assert torch.load(ckpts / PREVIOUS, map_location="cpu", weights_only=True)["global_step"] == 2
    second = train.run(compose_cfg("train", over, tmp_path / "b"))
    assert second.global_step == 4
    resumed = _rows(tmp_path / "b")
    assert sorted(resumed) == [2, 3]
    assert "train/gan_d" in resumed[3]  # the discriminator's step after the resume
    for step in (2, 3):
        assert {"train/loss", "train/lpips", "train/gan_g"} <= resumed[step].keys() <= rows[step].keys()
        for key, value in resumed[step].items():
            assert value == pytest.approx(rows[step][key], rel=1e-5, abs=1e-6), (step, key)

    saved = second.lightning_module.save_pretrained(tmp_path / "pretrained")
    for folder in saved.values():
        keys = load_file(folder / "model.safetensors").keys()
        banned = ("loss.", "discriminator", "perceptual", "lpips", "scaling_layer", "lecam")
        assert keys and not any(b in k for k in keys for b in banned)


def test_saturate_lets_the_reconstruction_overshoot_black_and_full_channels():
    """tokenizer_loss.saturate: a target at 0 or 1 is met by any value beyond it (decoding clamps)."""
    torch.manual_seed(0)
    plain = LARPModule(size="tiny", stage="tokenizer", tokenizer_loss={"l1": 0.0, "l2": 1.0})
    for p in plain.tokenizer.final_layer.parameters():  # LARP zero-initialises it: decode to black
        torch.nn.init.normal_(p, std=1.0)
    sat = LARPModule(size="tiny", stage="tokenizer", tokenizer_loss={"l1": 0.0, "l2": 1.0, "saturate": True})
    sat.load_state_dict(plain.state_dict())
    video = torch.full((2, 4, 3, 16, 16), -1.0)  # black clips in [-1, 1] ...
    video[:, :, 0, 4:8, 4:8] = 1.0  # ... with a full-red square
    x = plain.clip(video)  # [B, 3, T, S, S] in [0, 1]
    torch.manual_seed(1)
    out = plain.tokenizer(x, global_step=0, max_steps=1)["pred_frames"]
    inside = ((x <= 0) & (out > 0)) | ((x >= 1) & (out < 1)) | ((x > 0) & (x < 1))
    expected = ((x - out) ** 2 * inside).mean()
    torch.manual_seed(1)
    got = sat.tokenizer_loss({"video": video})["l2"]
    torch.testing.assert_close(got, expected)
    torch.manual_seed(1)
    assert ((x <= 0) & (out < 0)).any() and ((x >= 1) & (out > 1)).any()  # overshoots both ways ...
    torch.manual_seed(1)
    assert plain.tokenizer_loss({"video": video})["l2"] > got  # ... which no longer count
