"""FDMUNet: FDM checkpoint key compatibility, relative-position invariance, attention groups, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from conftest import REFERENCE_OUTPUTS

from videxp.models.fdm import unet as fdm_unet
from videxp.models.fdm.checkpoint import load_fdm_checkpoint, read_fdm_file, save_fdm_checkpoint
from videxp.models.fdm.unet import FDMUNet

MANIFEST = REFERENCE_OUTPUTS / "fdm_unet_keys_carla.json"

PAPER64 = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "attention_resolutions": "16,8",
    "dropout": 0.0,
    "learn_sigma": False,
    "use_scale_shift_norm": True,
    "use_rpe_net": True,
    "use_checkpoint": False,
}
CARLA = {**PAPER64, "image_size": 128, "num_res_blocks": 1}


# ----------------------------------------------------------------------------- independent key enumeration
def fdm_key_manifest(config: dict) -> list[tuple[str, list[int]]]:
    """FDM-new `UNetVideoModel` parameter names and shapes, in state_dict order, enumerated by hand from
    the ORIGINAL constructor (improved_diffusion/unet.py, rpe.py, script_util.py) -- not from FDMUNet.

    Sub-module indices follow the original nn.Sequential layouts: time_embed = [Linear, SiLU, Linear];
    ResBlock.in_layers = [GN, SiLU, conv3x3], emb_layers = [SiLU, Linear], out_layers = [GN, SiLU,
    Dropout, conv3x3], skip_connection = 1x1 conv iff channels change; FactorizedAttentionBlock =
    spatial_attention then temporal_attention, each RPEAttention = qkv, proj_out, norm (+ rpe_q, rpe_k,
    rpe_v, each `.rpe_net` = embed_distances Linear(3, C), embed_diffusion_time Linear(E, C), out
    Linear(C, C), temporal only); out = [GN, SiLU, conv3x3].
    """
    size, mc, nrb = config["image_size"], config["num_channels"], config["num_res_blocks"]
    mult = {32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4)}[size]
    attn_ds = {size // int(r) for r in config["attention_resolutions"].split(",")}
    E = 4 * mc
    out_ch = 6 if config["learn_sigma"] else 3
    keys: list[tuple[str, list[int]]] = []

    def linear(name: str, n_out: int, n_in: int) -> None:
        keys.extend([(f"{name}.weight", [n_out, n_in]), (f"{name}.bias", [n_out])])

    def conv(name: str, n_out: int, n_in: int, k: int) -> None:
        keys.extend([(f"{name}.weight", [n_out, n_in, k, k]), (f"{name}.bias", [n_out])])

    def norm(name: str, c: int) -> None:
        keys.extend([(f"{name}.weight", [c]), (f"{name}.bias", [c])])

    def resblock(p: str, c_in: int, c_out: int) -> None:
        norm(f"{p}.in_layers.0", c_in)
        conv(f"{p}.in_layers.2", c_out, c_in, 3)
        linear(f"{p}.emb_layers.1", 2 * c_out if config["use_scale_shift_norm"] else c_out, E)
        norm(f"{p}.out_layers.0", c_out)
        conv(f"{p}.out_layers.3", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{p}.skip_connection", c_out, c_in, 1)

    def attention(p: str, c: int) -> None:
        for kind in ("spatial_attention", "temporal_attention"):
            linear(f"{p}.{kind}.qkv", 3 * c, c)
            linear(f"{p}.{kind}.proj_out", c, c)
            norm(f"{p}.{kind}.norm", c)
            if kind == "temporal_attention":
                for rpe in ("rpe_q", "rpe_k", "rpe_v"):
                    linear(f"{p}.{kind}.{rpe}.rpe_net.embed_distances", c, 3)
                    linear(f"{p}.{kind}.{rpe}.rpe_net.embed_diffusion_time", c, E)
                    linear(f"{p}.{kind}.{rpe}.rpe_net.out", c, c)

    linear("time_embed.0", E, mc)
    linear("time_embed.2", E, E)
    conv("input_blocks.0.0", mc, 3 + 1, 3)
    skips, ch, ds, block = [mc], mc, 1, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            resblock(f"input_blocks.{block}.0", ch, m * mc)
            ch = m * mc
            if ds in attn_ds:
                attention(f"input_blocks.{block}.1", ch)
            skips.append(ch)
            block += 1
        if level != len(mult) - 1:
            conv(f"input_blocks.{block}.0.op", ch, ch, 3)
            skips.append(ch)
            block += 1
            ds *= 2
    resblock("middle_block.0", ch, ch)
    attention("middle_block.1", ch)
    resblock("middle_block.2", ch, ch)
    block = 0
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(nrb + 1):
            resblock(f"output_blocks.{block}.0", ch + skips.pop(), m * mc)
            ch = m * mc
            sub = 1
            if ds in attn_ds:
                attention(f"output_blocks.{block}.1", ch)
                sub = 2
            if level and i == nrb:
                conv(f"output_blocks.{block}.{sub}.conv", ch, ch, 3)
                ds //= 2
            block += 1
    norm("out.0", ch)
    conv("out.2", out_ch, mc, 3)
    return keys


def _meta_model(config: dict) -> FDMUNet:
    with torch.device("meta"):
        return FDMUNet.from_fdm_config(config)


def test_manifest_file_matches_enumeration():
    data = json.loads(MANIFEST.read_text())
    assert data["config"] == CARLA
    assert [tuple(k) for k in data["keys"]] == fdm_key_manifest(CARLA)


@pytest.mark.parametrize(
    "config",
    [
        PAPER64,
        CARLA,
        {**PAPER64, "image_size": 32, "learn_sigma": True},
        {**CARLA, "attention_resolutions": "32,16,8", "num_channels": 64},
    ],
    ids=["paper64", "carla128", "32px-learn-sigma", "carla-3-attn"],
)
def test_state_dict_keys_and_shapes_equal_fdm(config):
    ours = [(k, list(v.shape)) for k, v in _meta_model(config).state_dict().items()]
    assert ours == fdm_key_manifest(config)  # same names, shapes AND order


def test_released_format_zero_checkpoint_loads_strictly(tmp_path):
    data = json.loads(MANIFEST.read_text())
    # zeros as stride-0 views of one-element storages: the real shapes, but a tiny file (80M parameters)
    state = {name: torch.zeros(1).expand(shape) for name, shape in data["keys"]}
    assert list(state["input_blocks.0.0.weight"].shape) == [128, 4, 3, 3]
    path = tmp_path / "ema_0.9999_550000.pt"
    torch.save(
        {
            "state_dict": state,
            "config": {**data["config"], "dataset": "carla_no_traffic", "T": 1000, "max_frames": 20},
            "step": 550000,
        },
        path,
    )
    model, config, step = load_fdm_checkpoint(path)
    assert step == 550000 and config["max_frames"] == 20
    assert model.input_blocks[0][0].weight.shape == (128, 4, 3, 3)
    assert all(p.requires_grad and p.device.type == "cpu" and not p.any() for p in model.parameters())

    # a wrong key: the error names the file and the keys
    state["input_blocks.0.0.wieght"] = state.pop("input_blocks.0.0.weight")
    torch.save({"state_dict": state, "config": CARLA, "step": 1}, tmp_path / "bad.pt")
    with pytest.raises(
        ValueError,
        match=r"bad\.pt.*1 missing: \['input_blocks\.0\.0\.weight'\].*"
        r"1 unexpected: \['input_blocks\.0\.0\.wieght'\]",
    ):
        load_fdm_checkpoint(tmp_path / "bad.pt")


def test_from_fdm_config_rules():
    assert _meta_model(PAPER64).channel_mult == (1, 2, 3, 4)
    assert _meta_model(PAPER64).attention_resolutions == (4, 8)
    assert _meta_model(CARLA).attention_resolutions == (8, 16)
    assert _meta_model({**PAPER64, "learn_sigma": True}).out.__getitem__(2).out_channels == 6
    with pytest.raises(ValueError, match="no channel_mult for image_size 48"):
        _meta_model({**PAPER64, "image_size": 48})
    m = _meta_model({**PAPER64, "image_size": 48, "channel_mult": "1,2", "attention_resolutions": "24"})
    assert m.channel_mult == (1, 2) and m.attention_resolutions == (2,)
    with pytest.raises(NotImplementedError):
        _meta_model({**PAPER64, "use_rpe_net": False})


# ----------------------------------------------------------------------------- behaviour on a tiny net
TINY = dict(
    model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(1, 2), num_heads=2
)


def _tiny(seed: int = 0, **kw) -> FDMUNet:
    """Tiny FDMUNet with the zero-initialised layers re-drawn, so every path (RPE included) is live."""
    torch.manual_seed(seed)
    net = FDMUNet(**{**TINY, **kw}).eval()
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return net


def _inputs(B: int = 2, T: int = 5, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 3, size, size, generator=g)
    x0 = torch.randn(B, T, 3, size, size, generator=g)
    obs = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]], dtype=torch.float32)[:B, :T]
    lat = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 1, 0, 0]], dtype=torch.float32)[:B, :T]  # padding: 0:4, 1:3-4
    idx = torch.tensor([[0, 3, 7, 20, 2], [5, 1, 9, 4, 100]])[:B, :T]
    t = torch.tensor([10.0, 870.5])[:B]
    return x, x0, t, idx, obs, lat


def _run(net, x, x0, t, idx, obs, lat):
    with torch.no_grad():
        return net(x, x0=x0, timesteps=t, frame_indices=idx, obs_mask=obs, latent_mask=lat)


def test_output_shape_and_fdm_mask_shape():
    net = _tiny()
    x, x0, t, idx, obs, lat = _inputs()
    out = _run(net, x, x0, t, idx, obs, lat)
    assert out.shape == (2, 5, 3, 16, 16)
    out5 = _run(net, x, x0, t, idx, obs[..., None, None, None], lat[..., None, None, None])
    torch.testing.assert_close(out5, out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="obs_mask"):
        _run(net, x, x0, t, idx, obs[:, :3], lat)


def test_observed_frames_enter_clean():
    net = _tiny()
    x, x0, t, idx, obs, lat = _inputs()
    x_changed = torch.where(obs[..., None, None, None] > 0, torch.randn_like(x), x)  # observed frames only
    ref = _run(net, x, x0, t, idx, obs, lat)
    torch.testing.assert_close(_run(net, x_changed, x0, t, idx, obs, lat), ref, rtol=0, atol=0)


def test_invariant_to_global_shift_of_frame_indices():
    net = _tiny()
    x, x0, t, idx, obs, lat = _inputs()
    ref = _run(net, x, x0, t, idx, obs, lat)
    shifted = _run(net, x, x0, t, idx + torch.tensor([[37], [1000]]), obs, lat)
    torch.testing.assert_close(shifted, ref, rtol=0, atol=1e-5)
    # control: a non-uniform change of indices changes the output
    stretched = _run(net, x, x0, t, idx * 3, obs, lat)
    assert (stretched - ref).abs().max() > 1e-3


class _PerFrameGroupNorm(nn.Module):
    """Test-only stand-in for the temporal GroupNorm, with statistics per frame instead of over all T."""

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.gn = gn

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, T]
        N, C, T = x.shape
        y = self.gn(x.permute(0, 2, 1).reshape(N * T, C, 1))
        return y.reshape(N, T, C).permute(0, 2, 1)


@pytest.mark.parametrize("change", ["content", "indices"])
def test_attention_groups_isolate_padding_frames(change):
    """Flag-1 frames never attend to padding (flag-0) frames. The only path by which padding frames reach
    them is FDM's temporal GroupNorm (statistics over all T frames per pixel): with per-frame statistics
    the flag-1 outputs are unaffected by the padding frames' content or indices; with FDM's norm they are
    affected (quirk of the original, pinned here)."""
    net = _tiny()
    x, x0, t, idx, obs, lat = _inputs()
    flagged = (obs + lat) > 0  # [B, T]; row 0: frame 4 is padding, row 1: frames 3, 4
    x2, idx2 = x.clone(), idx.clone()
    if change == "content":
        x2[~flagged] = 3.0 * torch.randn_like(x2[~flagged])
    else:
        idx2[1, 4] = -30  # changes the distance between row 1's two padding frames
    ref, out = _run(net, x, x0, t, idx, obs, lat), _run(net, x2, x0, t, idx2, obs, lat)
    assert (out[flagged] - ref[flagged]).abs().max() > 1e-4  # FDM quirk: leak through GroupNorm statistics

    for m in net.modules():
        if isinstance(m, fdm_unet.TemporalRPEAttention):
            m.norm = _PerFrameGroupNorm(m.norm)
    ref, out = _run(net, x, x0, t, idx, obs, lat), _run(net, x2, x0, t, idx2, obs, lat)
    torch.testing.assert_close(out[flagged], ref[flagged], rtol=0, atol=1e-6)
    assert (out[~flagged] - ref[~flagged]).abs().max() > 1e-3


def test_temporal_attention_core_masks_groups():
    torch.manual_seed(0)
    att = fdm_unet.TemporalRPEAttention(32, 2, time_embed_dim=64, use_checkpoint=False)
    with torch.no_grad():
        for p in att.parameters():
            if not p.any():
                p.normal_(0.0, 0.1)
    B, D, T = 2, 3, 5
    h = torch.randn(B, D, T, 32)
    temb = torch.randn(B * T, 64)
    idx = torch.tensor([[0, 3, 7, 20, 2], [5, 1, 9, 4, 100]])
    group = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 0, 1]], dtype=torch.bool)
    h2 = torch.where(group[:, None, :, None], h, torch.randn_like(h))  # change every flag-0 frame
    with torch.no_grad():
        a, b = att.attend(h, temb, idx, group), att.attend(h2, temb, idx, group)
    sel = group[:, None, :, None].expand_as(a)
    torch.testing.assert_close(a[sel], b[sel], rtol=0, atol=1e-6)
    # and symmetrically flag-0 frames ignore flag-1 frames
    h3 = torch.where(group[:, None, :, None], torch.randn_like(h), h)
    with torch.no_grad():
        c = att.attend(h3, temb, idx, group)
    torch.testing.assert_close(a[~sel], c[~sel], rtol=0, atol=1e-6)


def test_rows_are_independent():
    net = _tiny()
    x, x0, t, idx, obs, lat = _inputs()
    both = _run(net, x, x0, t, idx, obs, lat)
    alone = _run(net, x[:1], x0[:1], t[:1], idx[:1], obs[:1], lat[:1])
    torch.testing.assert_close(alone[0], both[0], rtol=0, atol=1e-5)  # batch-size-dependent kernels


def test_gradient_checkpointing_gives_same_gradients():
    x, x0, t, idx, obs, lat = _inputs(B=1, T=4, size=8)
    grads = []
    for use_ckpt in (False, True):
        net = _tiny(use_checkpoint=use_ckpt).train()
        out = net(x, x0=x0, timesteps=t, frame_indices=idx, obs_mask=obs, latent_mask=lat)
        out.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_save_and_load_round_trip(tmp_path):
    net = _tiny()
    config = {
        "image_size": 16,
        "num_channels": 32,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "attention_resolutions": "16,8",
        "num_heads": 2,
        "max_frames": 5,
    }
    path = tmp_path / "ckpt" / "model000123.pt"
    save_fdm_checkpoint(path, net, config, 123)
    state, file_config, step = read_fdm_file(path)
    assert step == 123 and file_config == config and set(state) == set(net.state_dict())
    loaded, _, _ = load_fdm_checkpoint(path)
    x, x0, t, idx, obs, lat = _inputs()
    ref = _run(net, x, x0, t, idx, obs, lat)
    torch.testing.assert_close(_run(loaded.eval(), x, x0, t, idx, obs, lat), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="shape mismatch"):
        save_fdm_checkpoint(tmp_path / "wrong.pt", net, {**config, "num_channels": 64}, 1)
    assert not (tmp_path / "wrong.pt").exists()

    # a DDP-prefixed bare state dict loads with an explicit config
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "bare.pt")
    loaded, _, step = load_fdm_checkpoint(tmp_path / "bare.pt", config=config)
    assert step is None
    torch.testing.assert_close(_run(loaded.eval(), x, x0, t, idx, obs, lat), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="bare state dict has no config"):
        load_fdm_checkpoint(tmp_path / "bare.pt")


if __name__ == "__main__":  # regenerate the manifest (from the enumeration above, not from FDMUNet)
    rows = ",\n".join(json.dumps(list(k)) for k in fdm_key_manifest(CARLA))
    MANIFEST.write_text(f'{{"config": {json.dumps(CARLA)},\n"keys": [\n{rows}\n]}}\n')
