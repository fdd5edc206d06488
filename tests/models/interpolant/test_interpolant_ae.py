"""Stage-1 autoencoder: released weight-file formats, taming's VQ-GAN loss, training via videxp-train."""

from __future__ import annotations

import csv
import sys
import types

import pytest
import torch
from conftest import compose_cfg
from hydra.utils import instantiate
from torch import nn

from videxp import train
from videxp.models.interpolant.ae_losses import (
    AutoencoderLoss,
    NLayerDiscriminator,
    adaptive_weight,
    hinge_d_loss,
    vanilla_d_loss,
)
from videxp.models.interpolant.ae_module import AutoencoderModule, pick_frames
from videxp.models.interpolant.autoencoder import LatentAutoencoder, Quantized
from videxp.models.interpolant.checkpoints import (
    build_autoencoder,
    load_autoencoder,
    load_flow_network,
    read_state_dict,
    select_prefixed,
)
from videxp.weights import registry as weights


class TinyAE(LatentAutoencoder):
    """A stand-in autoencoder: 2x down/up convolutions, 4 codes, a BatchNorm for an int64 buffer."""

    latent_channels, downsample, num_codes = 2, 2, 4

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 2, 2, stride=2), nn.BatchNorm2d(2))
        self.codebook = nn.Embedding(4, 2)
        self.decoder = nn.ConvTranspose2d(2, 3, 2, stride=2)

    def encode(self, x):
        return self.encoder(x)

    def quantize(self, z):
        flat = z.permute(0, 2, 3, 1)  # [B, h, w, C]
        idx = torch.cdist(flat.flatten(0, 2), self.codebook.weight).argmin(1).view(flat.shape[:3])
        z_q = self.codebook(idx).permute(0, 3, 1, 2)
        return Quantized(z + (z_q - z).detach(), idx, (z_q.detach() - z).square().mean())

    def decode_quantized(self, z_q):
        return self.decoder(z_q)

    def last_layer_weight(self):
        return self.decoder.weight


def _random_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: v.clone() if not v.is_floating_point() else torch.randn(v.shape, generator=g)
        for k, v in module.state_dict().items()
    }


def _assert_state_equal(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = module.state_dict()
    assert got.keys() == state.keys()
    for k, v in state.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


# ----------------------------------------------------------------------------- weight files
def test_taming_lightning_ckpt_with_loss_extras(tmp_path):
    sd = _random_state(TinyAE(), 1)
    path = tmp_path / "vqvae.ckpt"
    extras = {"loss.discriminator.main.0.weight": torch.ones(2), "loss.logvar": torch.zeros(())}
    torch.save({"state_dict": {**sd, **extras}, "global_step": 7, "epoch": 1}, path)
    assert set(read_state_dict(path)) == set(sd) | set(extras)
    ae = TinyAE()
    info = load_autoencoder(ae, path)
    _assert_state_equal(ae, sd)
    assert info["prefix"] == "" and info["num_keys"] == len(sd) and info["path"] == str(path)
    assert info["sha256"] == weights.sha256_file(path)


def test_river_vqvae_pth_with_ddp_prefix(tmp_path):
    sd = _random_state(TinyAE(), 2)
    path = tmp_path / "vqvae.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, path)
    ae = TinyAE()
    assert load_autoencoder(ae, path)["prefix"] == ""
    _assert_state_equal(ae, sd)


@pytest.mark.parametrize("ae_prefix", ["ae.", "ae.backbone."])
def test_river_full_model_holds_both_networks(tmp_path, ae_prefix):
    sd = _random_state(TinyAE(), 3)
    flow = nn.Linear(3, 2)
    flow_sd = _random_state(flow, 4)
    full = {f"module.{ae_prefix}{k}": v for k, v in sd.items()}
    full |= {f"module.vector_field_regressor.{k}": v for k, v in flow_sd.items()}
    path = tmp_path / "model.pth"
    torch.save({"model": full}, path)
    ae = TinyAE()
    assert load_autoencoder(ae, path)["prefix"] == ae_prefix
    _assert_state_equal(ae, sd)
    net = nn.Linear(3, 2)
    assert load_flow_network(net, path)["prefix"] == "vector_field_regressor."
    _assert_state_equal(net, flow_sd)


def test_pfi_checkpoint_model_and_ema(tmp_path, monkeypatch):
    """PFI pickles its Config: refused without trust_pickle; with it, a missing class becomes a stub."""
    flow = nn.Linear(3, 2)
    model_sd, ema_sd = _random_state(flow, 5), _random_state(flow, 6)
    fake = types.ModuleType("pfi_configs_not_installed")

    class Config:
        pass

    Config.__module__, Config.__qualname__ = fake.__name__, "Config"
    fake.Config = Config
    config = Config()
    config.lr = 2e-4
    path = tmp_path / "kth_model_linear.pt"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, fake.__name__, fake)
        torch.save({"model": model_sd, "ema": ema_sd, "opt": {}, "config": config, "step": 9}, path)
    with pytest.raises(ValueError, match="trust_pickle=True") as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    net = nn.Linear(3, 2)
    info = load_flow_network(net, path, trust_pickle=True)
    assert info["prefix"] == "" and info["which"] == "model"
    _assert_state_equal(net, model_sd)
    load_flow_network(net, path, which="ema", trust_pickle=True)
    _assert_state_equal(net, ema_sd)
    # a PFI-style file without pickled objects loads with weights_only alone
    plain = tmp_path / "plain.pt"
    torch.save({"model": model_sd, "ema": ema_sd, "opt": {}, "config": {"lr": 2e-4}, "step": 9}, plain)
    assert read_state_dict(plain, which="ema").keys() == ema_sd.keys()
    with pytest.raises(ValueError, match="no 'ema' entry"):
        read_state_dict(_bare(tmp_path, model_sd), which="ema")


def _bare(tmp_path, sd):
    path = tmp_path / "bare.pt"
    torch.save(sd, path)
    return path


def test_bare_state_dict_and_unreadable_files(tmp_path):
    sd = _random_state(TinyAE(), 7)
    ae = TinyAE()
    load_autoencoder(ae, _bare(tmp_path, sd))
    _assert_state_equal(ae, sd)
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        read_state_dict(missing)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.ckpt.*cannot be read"):
        read_state_dict(garbage)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match="list.pt.*holds a list"):
        read_state_dict(listed)


def test_missing_keys_error_names_file_prefixes_and_keys(tmp_path):
    sd = _random_state(TinyAE(), 8)
    del sd["decoder.weight"]
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": {"ae." + k: v for k, v in sd.items()}}, path)
    with pytest.raises(ValueError) as err:
        load_autoencoder(TinyAE(), path)
    msg = str(err.value)
    assert str(path) in msg and "'ae.'" in msg and "ae.decoder.weight" in msg and "'ae.backbone.'" in msg
    with pytest.raises(ValueError, match="lacks 1 of 2 keys"):
        select_prefixed({"a.x": torch.zeros(1)}, ["", "a."], ["x", "y"], "thing", "f.pt")
    assert select_prefixed({"module.a.x": torch.ones(1), "z": torch.zeros(1)}, ["", "a."], ["x"], "t", "f")[
        "x"
    ].item() == pytest.approx(1.0)


def test_shape_mismatch_and_sha256(tmp_path):
    sd = _random_state(TinyAE(), 9)
    path = _bare(tmp_path, sd)
    digest = weights.sha256_file(path)
    assert load_autoencoder(TinyAE(), path, sha256=digest.upper())["sha256"] == digest
    with pytest.raises(weights.ChecksumError, match="sha256 mismatch") as err:
        load_autoencoder(TinyAE(), path, sha256="0" * 64)
    assert str(path) in str(err.value) and digest in str(err.value)
    sd["codebook.weight"] = torch.zeros(5, 2)
    with pytest.raises(ValueError, match=r"codebook.weight: \(5, 2\) in the file, \(4, 2\)"):
        load_autoencoder(TinyAE(), _bare(tmp_path, sd))


@pytest.mark.parametrize("kind", ["vqgan", "vqvae"])
def test_export_then_load_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    module = AutoencoderModule(kind=kind, preset="test", loss={"perceptual_weight": 0, "disc_num_layers": 2})
    for p in module.parameters():  # make the weights differ from any fresh init
        p.data.add_(torch.randn_like(p) * 0.01)
    path = module.export_autoencoder(tmp_path / ("vqvae.ckpt" if kind == "vqgan" else "vqvae.pth"))
    raw = torch.load(path, weights_only=True)
    ae_keys = set(module.ae.state_dict())
    if kind == "vqgan":  # taming's Lightning layout, discriminator under loss.discriminator.
        assert {k for k in raw["state_dict"] if not k.startswith("loss.discriminator.")} == ae_keys
    else:  # RIVER's vqvae.pth: DDP prefixes
        assert set(raw["model"]) == {"module." + k for k in ae_keys}
    ae = build_autoencoder(kind, "test", ckpt=path, sha256=weights.sha256_file(path))
    _assert_state_equal(ae, module.ae.state_dict())
    # a new module fine-tunes from the export: the autoencoder, and taming's discriminator when present
    other = AutoencoderModule(kind=kind, preset="test", loss={"perceptual_weight": 0, "disc_num_layers": 2})
    other.load_weights(path)
    _assert_state_equal(other.ae, module.ae.state_dict())
    disc_same = all(
        torch.equal(a, b)
        for a, b in zip(
            other.loss.discriminator.state_dict().values(),
            module.loss.discriminator.state_dict().values(),
            strict=True,
        )
    )
    assert disc_same == (kind == "vqgan")


# ----------------------------------------------------------------------------- loss
def test_hinge_and_vanilla_known_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1] -> 0.5
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.375)
    sp = torch.nn.functional.softplus
    expected = 0.5 * (sp(-real).mean() + sp(fake).mean())
    assert vanilla_d_loss(real, fake).item() == pytest.approx(expected.item())
    assert vanilla_d_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(
        torch.log(torch.tensor(2.0)).item()
    )


def test_adaptive_weight_known_values():
    w = torch.ones(2, 2, requires_grad=True)
    a = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # |grad nll| = 5
    b = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # |grad g| = 1
    weight = adaptive_weight((w * a).sum(), (w * b).sum(), w, disc_weight=0.5)
    assert weight.item() == pytest.approx(0.5 * 5 / (1 + 1e-4))
    assert not weight.requires_grad
    clamped = adaptive_weight((w * a).sum(), (w * 0 * b).sum(), w)  # 5 / 1e-4 = 5e4 -> 1e4
    assert clamped.item() == pytest.approx(1e4)


def test_discriminator_layout_and_min_size():
    d = NLayerDiscriminator(3, ndf=8, n_layers=3)
    convs = [k for k in d.state_dict() if k.endswith("weight") and d.state_dict()[k].ndim == 4]
    assert convs == ["main.0.weight", "main.2.weight", "main.5.weight", "main.8.weight", "main.11.weight"]
    assert "main.3.running_var" in d.state_dict() and "main.2.bias" not in d.state_dict()
    assert d(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 2, 2)  # 32 -> 16 -> 8 -> 4 -> 3 -> 2
    with pytest.raises(ValueError, match="at least 24px"):
        d(torch.zeros(1, 3, 16, 16))
    assert NLayerDiscriminator(3, ndf=8, n_layers=2)(torch.zeros(1, 3, 16, 16)).shape == (1, 1, 2, 2)


def test_generator_loss_before_and_after_disc_start():
    loss = AutoencoderLoss(
        disc_start=3, perceptual_weight=0, codebook_weight=2.0, disc_ndf=8, disc_num_layers=2
    )
    calls = []
    loss.discriminator.register_forward_hook(lambda *a: calls.append(1))
    ae = TinyAE()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = ae(x)
    total, logs = loss.generator_loss(
        x, out.recon, out.quantized.loss, step=2, last_layer=ae.last_layer_weight()
    )
    assert not calls and logs["g_loss"] == 0 and logs["d_weight"] == 0 and logs["disc_factor"] == 0
    expected = (x - out.recon).abs().mean() + 2.0 * out.quantized.loss
    torch.testing.assert_close(total, expected)
    d_loss, d_logs = loss.discriminator_loss(x, out.recon, step=2)
    assert not calls and d_loss == 0
    total, logs = loss.generator_loss(
        x, out.recon, out.quantized.loss, step=3, last_layer=ae.last_layer_weight()
    )
    assert calls and logs["disc_factor"] == 1 and logs["d_weight"] > 0
    torch.testing.assert_close(
        total.detach(), logs["nll_loss"] + logs["d_weight"] * logs["g_loss"] + 2.0 * logs["vq_loss"]
    )
    d_loss, d_logs = loss.discriminator_loss(x, out.recon, step=3)
    assert d_loss > 0 and d_loss.requires_grad
    assert AutoencoderLoss(rec_loss="l2", perceptual_weight=0).pixel_loss(x, 0 * x).mean() == pytest.approx(
        x.square().mean().item()
    )


def test_saturate_counts_only_the_side_of_a_range_end_inside_the_range():
    x = torch.tensor([-1.0, -1.0, 1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 6)  # targets: black, white, mid-grey
    y = torch.tensor([-1.5, -0.5, 1.5, 0.5, -1.5, 0.5]).reshape(1, 1, 1, 6)  # beyond, inside, ..., any side
    plain = AutoencoderLoss(rec_loss="l2", perceptual_weight=0).pixel_loss(x, y).flatten()
    torch.testing.assert_close(plain, torch.tensor([0.25, 0.25, 0.25, 0.25, 2.25, 0.25]))
    saturated = AutoencoderLoss(rec_loss="l2", saturate=True, perceptual_weight=0).pixel_loss(x, y).flatten()
    torch.testing.assert_close(saturated, torch.tensor([0.0, 0.25, 0.0, 0.25, 2.25, 0.25]))


def test_learning_rate_schedule_is_constant_unless_asked():
    def rates(**kw) -> list[float]:
        optim = {"lr": 1e-3, "scale_lr": False}
        module = AutoencoderModule(preset="test", loss={"perceptual_weight": 0}, optim=optim, **kw)
        (opt_g, _), (entry,) = module.configure_optimizers()
        out = []
        for _ in range(4):
            out.append(opt_g.param_groups[0]["lr"])
            opt_g.step()
            entry["scheduler"].step()
        return out

    assert rates() == [1e-3] * 4  # taming: constant
    cosine = rates(schedule={"name": "cosine", "total_steps": 4})
    assert cosine[0] == pytest.approx(1e-3) and cosine[1] > cosine[2] > cosine[3] > 0


def test_perceptual_term_uses_the_cached_lpips_and_stays_out_of_checkpoints(alex_state):
    from videxp.metrics.lpips import LPIPS

    loss = AutoencoderLoss(perceptual_net="alex", perceptual_weight=1.0, disc_ndf=8)
    assert not any("perceptual" in k or "lin0" in k for k in loss.state_dict())
    loss.train()
    assert not loss._perceptual.training  # eval always: no dropout in the linear heads
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y.requires_grad_(True)
    p = loss.perceptual_loss(x, y)  # [B, 1, 1, 1]
    assert p.shape == (2, 1, 1, 1)
    p.sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    expected = LPIPS(net="alex").score_frames((x + 1) / 2, (y.detach() + 1) / 2)
    torch.testing.assert_close(p.detach().flatten(), expected, atol=1e-5, rtol=0)


def test_pick_frames_distinct_and_seeded():
    videos = torch.arange(2 * 5).float().view(2, 5, 1, 1, 1).expand(2, 5, 3, 2, 2)
    a = pick_frames(videos, 3, torch.Generator().manual_seed(1))
    b = pick_frames(videos, 3, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 2, 2) and torch.equal(a, b)
    ids = a[:, 0, 0, 0].view(2, 3)
    assert len(set(ids[0].tolist())) == 3 and all(0 <= v < 5 for v in ids[0].tolist())
    assert all(5 <= v < 10 for v in ids[1].tolist())


# ----------------------------------------------------------------------------- training through videxp-train
TRAIN = [
    "model=interpolant/autoencoder",
    "model.preset=test",
    "model.frames_per_clip=2",
    "model.loss.disc_ndf=8",
    "dataset=moving_shapes",
    "dataset.image_size=16",
    "dataset.video_length=4",
    "dataset.batch_size=2",
    "dataset.source.num_videos={train: 16, val: 2, test: 2}",
    "dataset.source.sprite_size=[3,6]",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "callbacks.last_checkpoint.every_n_train_steps=1",
    "logger=csv",
]


def _rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_end_to_end_from_a_released_file(in_tmp, alex_state):
    """Fine-tune from a taming-format file with LPIPS (random alex backbone), discriminator from step 1."""
    init = in_tmp / "init.ckpt"
    torch.manual_seed(3)
    AutoencoderModule(
        kind="vqgan", preset="test", loss={"perceptual_weight": 0, "disc_ndf": 8}
    ).export_autoencoder(init)
    start = read_state_dict(init)
    overrides = [
        *TRAIN,
        "dataset.image_size=32",
        "model.frames_per_clip=1",
        "model.loss.perceptual_net=alex",
        f"model.ckpt={init}",
        "trainer.max_steps=5",
        "trainer.val_check_interval=2",
    ]
    cfg = compose_cfg("train", overrides, in_tmp / "run")
    trainer = train.run(cfg)
    assert trainer.global_step == 5  # batches: 1 autoencoder step, then 2 x (autoencoder + discriminator)
    module = trainer.lightning_module
    drift = max(
        (p - start[k]).abs().max().item() for k, p in module.ae.state_dict().items() if p.is_floating_point()
    )
    assert 0 < drift < 1e-2  # started from the file, moved by a few tiny Adam steps
    opt_d = trainer.optimizers[1]
    assert len(opt_d.state) > 0
    rows = _rows(in_tmp / "run" / "csv" / "version_0" / "metrics.csv")
    train_rows = [r for r in rows if r.get("train/rec_loss")]
    assert len(train_rows) == 3
    for key in ("rec_loss", "vq_loss", "p_loss", "g_loss", "d_loss"):
        assert all(r[f"train/{key}"] for r in train_rows), key
    assert float(train_rows[0]["train/d_loss"]) == 0 and float(train_rows[1]["train/d_loss"]) > 0
    assert float(train_rows[0]["train/p_loss"]) > 0
    val = [r for r in rows if r.get("val/rec_loss")]
    assert val and all(float(r["val/psnr"]) > 0 for r in val)
    assert (in_tmp / "run" / "checkpoints" / "best.ckpt").is_file()


def test_no_discriminator_before_disc_start_and_resume(in_tmp):
    base = [
        *TRAIN,
        "model.loss.perceptual_weight=0",
        "model.loss.disc_start=3",
        "trainer.val_check_interval=100",
    ]
    init = in_tmp / "vqvae.pth"
    AutoencoderModule(kind="vqvae", preset="test", loss={"perceptual_weight": 0}).export_autoencoder(init)
    base += ["model.kind=vqvae", f"model.ckpt={init}"]
    first = train.run(compose_cfg("train", [*base, "trainer.max_steps=2"], in_tmp / "run"))
    assert first.global_step == 2  # only the autoencoder stepped: one optimizer step per batch
    assert len(first.optimizers[1].state) == 0  # the discriminator's Adam never stepped
    init.unlink()  # a resumed run restores its own checkpoint and does not read model.ckpt again
    second = train.run(compose_cfg("train", [*base, "trainer.max_steps=5"], in_tmp / "run"))
    # resumed at step 2: the next batch steps the autoencoder only (-> 3), the one after both (-> 5)
    assert second.global_step == 5 and len(second.optimizers[1].state) > 0
    rows = _rows(in_tmp / "run" / "csv" / "version_1" / "metrics.csv")
    d = [float(r["train/d_loss"]) for r in rows if r.get("train/d_loss")]
    assert d[0] == 0 and all(v > 0 for v in d[1:])


def test_config_composes_for_kth():
    cfg = compose_cfg("train", ["model=interpolant/autoencoder", "dataset=kth"], "/tmp/unused")
    assert cfg.model._target_ == "videxp.models.interpolant.ae_module.AutoencoderModule"
    assert cfg.model.kind == "vqgan" and cfg.model.preset == "f8_small" and cfg.model.ckpt is None
    assert cfg.model.batch_size == cfg.dataset.batch_size
    cfg = compose_cfg(
        "train",
        [
            "model=interpolant/autoencoder",
            "model.kind=vqvae",
            "model.preset=test",
            "model.loss.perceptual_weight=0",
        ],
        "/tmp/unused",
    )
    module = instantiate(cfg.model)
    assert type(module.ae).__name__ == "RiverVQVAE"
    assert module.learning_rate() == pytest.approx(4.5e-6 * cfg.dataset.batch_size * 4)  # x frames_per_clip
