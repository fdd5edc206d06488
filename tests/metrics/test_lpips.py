"""LPIPS metric: equals the lpips package per frame with the same (random) AlexNet backbone; offline error."""

from __future__ import annotations

import warnings

import lpips
import pytest
import torch
import torchvision

from videxp.metrics.lpips import LPIPS
from videxp.weights import registry as weights


def _reference(state: dict[str, torch.Tensor]) -> lpips.LPIPS:
    """The lpips package's own model with the same backbone, copied layer by layer from torchvision."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    tv = torchvision.models.alexnet(weights=None)
    tv.load_state_dict(state)
    for k in range(1, ref.net.N_slices + 1):
        for name, module in getattr(ref.net, f"slice{k}").named_children():
            module.load_state_dict(tv.features[int(name)].state_dict())
    return ref.eval()


def _frames(n: int, smooth: bool, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 64, 64, generator=g)
    if smooth:
        x = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect"), 9, 1)
    return x


@pytest.mark.parametrize("smooth", [False, True])
def test_matches_lpips_package_per_frame(alex_state, smooth):
    metric = LPIPS()
    ref = _reference(alex_state)
    layouts = []  # the backbone's input on CPU: channels-last (oneDNN's NHWC kernels)
    metric.model.net.slice1.register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    pred, target = _frames(5, smooth, 1), _frames(5, smooth, 2)
    ours = metric.score_frames(pred, target)
    assert ours.shape == (5,)
    assert layouts == [True, True]
    with torch.no_grad():
        expected = torch.stack(
            [ref(pred[i : i + 1] * 2 - 1, target[i : i + 1] * 2 - 1).reshape(()) for i in range(5)]
        )
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert (ours > 0).all()


def test_uint8_frames_score_as_their_float_values(alex_state):
    metric = LPIPS()
    pred, target = (_frames(3, True, s).mul(255).round().to(torch.uint8) for s in (4, 5))
    from_uint8 = metric.score_frames(pred, target)
    from_float = metric.score_frames(pred.float() / 255, target.float() / 255)
    torch.testing.assert_close(from_uint8, from_float, atol=1e-6, rtol=0)


def test_identical_frames_and_streaming(alex_state):
    metric = LPIPS()
    x = _frames(4, True, 3)
    assert metric.score_frames(x, x).abs().max() < 1e-6
    videos = x.reshape(2, 2, 3, 64, 64)
    metric.update(videos, videos.flip(1), video_index=[0, 1], sample_index=[0, 0])
    out = metric.compute()
    assert out["value"] > 0 and out["higher_is_better"] is False
    s = out["settings"]
    assert s["net"] == "alex" and s["version"] == "0.1"
    assert s["backbone_file"] == "alexnet-owt-7be5be79.pth"
    assert s["backbone_sha256"] == weights.WEIGHTS["alexnet"].sha256[:12]
    assert s["linear_head_sha256"] == "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"


def test_explicit_backbone_path(alex_state, tmp_path):
    path = weights.WEIGHTS["alexnet"].path
    moved = tmp_path / "my_alex.pth"
    path.rename(moved)
    metric = LPIPS(backbone_path=str(moved))
    assert metric.settings()["backbone_file"] == "my_alex.pth"
    x = _frames(2, False, 4)
    with torch.no_grad():
        expected = _reference(alex_state)(x * 2 - 1, x.flip(0) * 2 - 1).reshape(2)
    torch.testing.assert_close(metric.score_frames(x, x.flip(0)), expected, atol=1e-5, rtol=0)
    with pytest.raises(FileNotFoundError, match="backbone_path"):
        LPIPS(backbone_path=str(tmp_path / "nope.pth"))


def test_offline_without_backbone_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VIDEXP_OFFLINE", "1")
    with pytest.raises(weights.WeightsMissingError) as info:
        LPIPS()
    msg = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in msg
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in msg


def test_embedding_distances_are_the_lpips_distances(alex_state):
    """LPIPS.embed (FDM's LpipsEmbedder, for the adaptive schemes): squared distances = LPIPS scores."""
    metric = LPIPS()
    a, b = _frames(3, True, 6), _frames(3, False, 7)
    ea, eb = metric.embed(a * 2 - 1), metric.embed(b * 2 - 1)  # [3, D]
    torch.testing.assert_close(((ea - eb) ** 2).sum(dim=1), metric.score_frames(a, b), atol=1e-5, rtol=1e-4)
