"""Class-conditional FDM: label embedding, classifier-free guidance, label dropout, labelled sampling."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REFERENCE_OUTPUTS, TINY, compose_cfg
from hydra.utils import instantiate

from videxp.models.fdm.checkpoint import load_fdm_checkpoint, read_fdm_file
from videxp.models.fdm.diffusion import GaussianDiffusion
from videxp.models.fdm.generator import FDMGenerator
from videxp.models.fdm.module import FDMModule
from videxp.models.fdm.unet import FDMUNet
from videxp.utils.seeding import derive_seed, torch_generator

MANIFEST = REFERENCE_OUTPUTS / "fdm_unet_keys_carla.json"
NET = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,), num_heads=2)
TINY_NET = {"attention_resolutions": "8", "num_heads": 4}  # size tiny with attention at 2x2 and 4 heads
K = 5  # classes of the tiny conditional nets


def _live(net: FDMUNet, seed: int = 0) -> FDMUNet:
    """Re-draw the zero-initialised layers (output convs, ...) so labels reach the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


def _net(seed: int = 0, **kw) -> FDMUNet:
    torch.manual_seed(seed)
    return _live(FDMUNet(**{**NET, "num_classes": K, **kw}), seed)


def _inputs(B: int = 3, T: int = 4, size: int = 8, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    obs = torch.zeros(B, T)
    obs[:, 0] = 1
    return dict(
        x=torch.randn(B, T, 3, size, size, generator=g),
        x0=torch.randn(B, T, 3, size, size, generator=g),
        timesteps=torch.linspace(10.0, 900.0, B),
        frame_indices=torch.arange(T).repeat(B, 1) * 2,
        obs_mask=obs,
        latent_mask=1 - obs,
    )


def _run(net: FDMUNet, inp: dict, **kw) -> torch.Tensor:
    with torch.no_grad():
        return net(inp["x"], **{k: v for k, v in inp.items() if k != "x"}, **kw)


def _guided(net: FDMUNet, inp: dict, **kw) -> torch.Tensor:
    with torch.no_grad():
        return net.guided_forward(inp["x"], **{k: v for k, v in inp.items() if k != "x"}, **kw)


# ----------------------------------------------------------------------------- the network
def test_state_dict_keys():
    data = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        plain = FDMUNet.from_fdm_config({**data["config"], "num_classes": None})
        cond = FDMUNet.from_fdm_config({**data["config"], "num_classes": 101})
    assert [[k, list(v.shape)] for k, v in plain.state_dict().items()] == data["keys"]
    assert plain.num_classes is None and not hasattr(plain, "label_emb")
    extra = {k: list(v.shape) for k, v in cond.state_dict().items() if k not in plain.state_dict()}
    assert extra == {"label_emb.weight": [102, 4 * 128]}  # 101 classes + the null label


def test_labels_change_the_output_and_none_is_the_null_label():
    net, inp = _net(), _inputs()
    a = _run(net, inp, y=torch.tensor([0, 1, 2]))
    b = _run(net, inp, y=torch.tensor([0, 4, 2]))
    assert torch.equal(a[[0, 2]], b[[0, 2]])  # rows whose label did not change
    assert (a[1] - b[1]).abs().max() > 1e-3
    null = _run(net, inp, y=torch.full((3,), K))
    assert torch.equal(_run(net, inp), null)
    assert (null - a).abs().max() > 1e-3


def test_label_errors():
    net, inp = _net(), _inputs()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\]"):
        _run(net, inp, y=torch.tensor([0, 6, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in"):
        _run(net, inp, y=torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match=r"integer labels \[B\]"):
        _run(net, inp, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"integer labels"):
        _run(net, inp, y=torch.tensor([0.0, 1.0, 2.0]))
    plain = _live(FDMUNet(**NET))
    _run(plain, inp)
    with pytest.raises(ValueError, match="unconditional FDMUNet"):
        _run(plain, inp, y=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="needs a class-conditional FDMUNet"):
        _guided(plain, inp, guidance_scale=1.25)
    with pytest.raises(ValueError, match="needs labels y"):
        _guided(net, inp, guidance_scale=1.25)


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_guidance_is_the_linear_combination(learn_sigma):
    net, inp = _net(out_channels=6 if learn_sigma else 3), _inputs()
    y = torch.tensor([3, 0, 1])
    cond, uncond = _run(net, inp, y=y), _run(net, inp)  # two separate forward calls
    assert torch.equal(_guided(net, inp, y=y, guidance_scale=1.0), cond)
    for s in (0.0, 1.25, 3.0):
        out = _guided(net, inp, y=y, guidance_scale=s)
        expected = uncond[:, :, :3] + s * (cond[:, :, :3] - uncond[:, :, :3])
        # one doubled batch vs two calls: equal up to batch-size-dependent float32 kernels
        torch.testing.assert_close(out[:, :, :3], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(out[:, :, 3:], cond[:, :, 3:], rtol=0, atol=1e-5)  # variance: unguided
    assert (_guided(net, inp, y=y, guidance_scale=3.0) - cond).abs().max() > 1e-3


# ----------------------------------------------------------------------------- training
def _module(**kw) -> FDMModule:
    torch.manual_seed(0)
    return FDMModule("tiny", image_size=16, max_frames=4, net=TINY_NET, seed=3, **{"num_classes": K, **kw})


def _batch(B: int = 2, labels: list[int] | None = None) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {"video": torch.rand(B, 5, 3, 16, 16, generator=g) * 2 - 1}
    if labels is not None:
        batch["label"] = torch.tensor(labels)
    return batch


def test_training_step_with_labels():
    module = _module()
    module.log = lambda *a, **k: None  # no trainer attached
    _live(module.net)
    batch = _batch(labels=[0, 4])
    loss = module.training_step(batch, 0)
    assert loss.isfinite()
    loss.backward()
    assert module.net.label_emb.weight.grad.abs().sum() > 0
    module.zero_grad()
    assert torch.equal(module.training_step(batch, 0), loss.detach())  # (seed, step) fixes all draws
    with pytest.raises(KeyError, match=r"batch\['label'\]"):
        module.training_step(_batch(), 0)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        module.training_step(_batch(labels=[0, 5]), 0)


def test_label_dropout_is_deterministic_given_the_seed():
    module = _module()
    labels = torch.arange(64) % K

    def drop(seed: int, p: float = 0.5) -> torch.Tensor:
        return module.drop_labels(labels, torch_generator(derive_seed(seed, 0)), p)

    a = drop(1)
    assert torch.equal(a, drop(1)) and not torch.equal(a, drop(2))
    dropped = a == K
    assert 0 < dropped.sum() < 64 and torch.equal(a[~dropped], labels[~dropped])
    assert torch.equal(drop(1, 0.0), labels) and (drop(1, 1.0) == K).all()
    with pytest.raises(ValueError, match="p_uncond"):
        _module(p_uncond=1.5)


def test_unconditional_module_ignores_labels():
    module = _module(num_classes=None)
    module.log = lambda *a, **k: None
    assert module.num_classes is None and "num_classes" not in module.fdm_config
    assert module.batch_labels(_batch(labels=[0, 1])) is None
    with_labels = module.training_step(_batch(labels=[0, 1]), 0)
    assert torch.equal(with_labels, module.training_step(_batch(), 0))


def test_fdm_file_round_trip_keeps_num_classes(tmp_path):
    module = _module()
    _live(module.ema_net)
    module.export_fdm(tmp_path / "ema.pt")
    _, config, _ = read_fdm_file(tmp_path / "ema.pt")
    assert config["num_classes"] == K
    net, _, _ = load_fdm_checkpoint(tmp_path / "ema.pt")
    assert net.num_classes == K
    inp, y = _inputs(size=16), torch.tensor([1, 2, 3])
    torch.testing.assert_close(_run(net.eval(), inp, y=y), _run(module.ema_net, inp, y=y), rtol=0, atol=0)
    other = _module(num_classes=None)
    other.load_weights(tmp_path / "ema.pt")
    assert other.num_classes == K and other.generator().capabilities.conditioning == ("class_label",)
    with pytest.raises(ValueError, match="num_classes=5.*model.num_classes=7"):
        _module(num_classes=7).load_weights(tmp_path / "ema.pt")


# ----------------------------------------------------------------------------- sampling
def _generator(net: FDMUNet, **kw) -> FDMGenerator:
    return FDMGenerator(net, GaussianDiffusion(1000), max_frames=4, timestep_respacing="4", **kw)


def _request(B: int = 3, seed: int = 0) -> tuple[torch.Tensor, list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 2, 3, 8, 8, generator=g) * 2 - 1, [0, 2], [4, 6]  # [B, T_obs, C, H, W]


@pytest.mark.parametrize("scale", [1.0, 1.25])
def test_generator_rows_are_independent_with_labels(scale):
    gen = _generator(_net(), guidance_scale=scale)
    frames, observed, target = _request()
    seeds = [11, 12, 13]
    both = gen.generate(frames, observed, target, {"label": [0, 3, 4]}, seeds)
    assert both.shape == (3, 2, 3, 8, 8) and both.isfinite().all()
    alone = gen.generate(frames[1:2], observed, target, {"label": torch.tensor([3])}, seeds[1:2])
    # equal up to float32 kernels that depend on the batch size (amplified by 1/sqrt(abar) at high noise)
    torch.testing.assert_close(alone[0], both[1], rtol=0, atol=1e-4)
    relabelled = gen.generate(frames, observed, target, {"label": [0, 1, 4]}, seeds)
    assert (relabelled[1] - both[1]).abs().max() > 1e-3


def test_guidance_changes_samples_and_is_described():
    net = _net()
    frames, observed, target = _request()
    cond, seeds = {"label": [0, 3, 4]}, [1, 2, 3]
    plain = _generator(net).generate(frames, observed, target, cond, seeds)
    guided_gen = _generator(net, guidance_scale=1.25)
    guided = guided_gen.generate(frames, observed, target, cond, seeds)
    assert (guided - plain).abs().max() > 1e-3
    info = guided_gen.describe()
    assert info["num_classes"] == K and info["guidance_scale"] == 1.25
    assert info["capabilities"]["conditioning"] == ("class_label",)


def test_generator_label_errors():
    frames, observed, target = _request()
    gen = _generator(_net())
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=5\): cond\['label'\]"):
        gen.generate(frames, observed, target, {}, [1, 2, 3])
    with pytest.raises(ValueError, match=r"3 rows"):
        gen.generate(frames, observed, target, {"label": [1, 2]}, [1, 2, 3])
    with pytest.raises(ValueError, match=r"no label for some rows"):
        gen.generate(frames, observed, target, {"label": [1, None, 2]}, [1, 2, 3])
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        gen.generate(frames, observed, target, {"label": [1, 5, 2]}, [1, 2, 3])
    # an unconditional net ignores dataset labels, refuses guidance, and claims no conditioning
    plain_net = _live(FDMUNet(**NET))
    plain = _generator(plain_net)
    assert plain.capabilities.conditioning == () and plain.describe()["num_classes"] is None
    a = plain.generate(frames, observed, target, {"label": [1, 2, 3]}, [1, 2, 3])
    assert torch.equal(a, plain.generate(frames, observed, target, {}, [1, 2, 3]))
    with pytest.raises(ValueError, match="needs a class-conditional net"):
        _generator(plain_net, guidance_scale=1.25)


def test_config_keys(tmp_path):
    cfg = compose_cfg("train", [*TINY, "model.num_classes=7", "model.sampling.guidance_scale=1.25"], tmp_path)
    assert cfg.model.p_uncond == 0.1
    module = instantiate(cfg.model)
    assert module.num_classes == 7 and module.fdm_config["num_classes"] == 7
    assert module.net.label_emb.weight.shape == (8, 4 * 32)
    assert module.generator().guidance_scale == 1.25
    default = instantiate(compose_cfg("train", TINY, tmp_path).model)
    assert default.num_classes is None and default.generator().guidance_scale == 1.0
