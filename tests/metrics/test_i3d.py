"""I3D architecture conformance (shared fixture), detector loading and clip-length checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import REFERENCE_OUTPUTS

from videxp.metrics.detector import Detector, fixture_weights, load_detector, random_i3d
from videxp.metrics.i3d import MIN_FRAMES, InceptionI3d, pooled_frames

DATA = REFERENCE_OUTPUTS / "i3d"


def _manifest() -> list[tuple[str, list[int]]]:
    return [(k, s) for k, s in json.loads((DATA / "state_dict_manifest.json").read_text())]


@pytest.fixture(scope="module")
def fixture_net() -> InceptionI3d:
    """The I3D with the fixture's deterministic weights, in eval mode."""
    return fixture_weights(InceptionI3d()).eval()


@pytest.fixture(scope="module")
def conformance(fixture_net: InceptionI3d) -> dict[str, np.ndarray]:
    """One full pass of the fixture input (2 × 16 × 224²), shared by the conformance tests."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand((2, 3, 16, 224, 224), generator=g) * 2 - 1  # [B, C, T, H, W] in [-1, 1]
    with torch.no_grad():
        feats = fixture_net.features(x)  # [2, 1024, 1, 1, 1]
        logits = fixture_net.logits(feats).squeeze(4).squeeze(3).mean(dim=2)  # forward() without re-running
    return {"features": feats.numpy(), "logits": logits.numpy()}


def test_state_dict_matches_manifest() -> None:
    net = InceptionI3d()
    manifest = _manifest()
    assert list(net.state_dict().keys()) == [k for k, _ in manifest]
    sd = {
        k: torch.zeros(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
        for k, s in manifest
    }
    net.load_state_dict(sd, strict=True)
    expected = json.loads((DATA / "expected.json").read_text())
    assert sum(v.numel() for v in net.state_dict().values()) == expected["num_params"] == 12_711_881
    assert sum(p.numel() for p in net.parameters()) == 12_697_264


def test_conformance_with_reference(conformance: dict[str, np.ndarray]) -> None:
    expected = json.loads((DATA / "expected.json").read_text())
    assert conformance["features"].shape == (2, 1024, 1, 1, 1)
    np.testing.assert_allclose(
        conformance["features"].reshape(2, -1), expected["features_1024"], atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(conformance["logits"], expected["logits"], atol=1e-4, rtol=0)


def test_min_frames_rule() -> None:
    assert MIN_FRAMES == 9
    assert (
        pooled_frames(8) == 0 and pooled_frames(9) == 1 and pooled_frames(16) == 1 and pooled_frames(17) == 2
    )


def test_too_short_clip_raises_clear_error() -> None:
    det = random_i3d()
    assert det.min_frames == 9 and det.feature_dim == 400 and det.file_sha256 is None
    with pytest.raises(ValueError, match=r"T=8.*at least 9"):
        det(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match="224x224"):
        det(torch.zeros(1, 3, 16, 64, 64))


def test_state_dict_file_loads_and_matches(tmp_path: Path, fixture_net: InceptionI3d) -> None:
    path = tmp_path / "i3d_pretrained_400.pt"
    # DataParallel-style prefix under "state_dict", as some checkpoints are saved
    torch.save({"state_dict": {f"module.{k}": v for k, v in fixture_net.state_dict().items()}}, path)
    det = load_detector(path, batch_size=1)
    assert isinstance(det, Detector) and det.file_sha256 is not None and len(det.file_sha256) == 64
    layouts = []  # an eager I3D on CPU gets channels-last chunks (oneDNN's NDHWC convolutions)
    det.net.register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last_3d))
    )
    x = torch.rand((2, 3, 9, 224, 224), generator=torch.Generator().manual_seed(3)) * 2 - 1  # T = min_frames
    feats = det(x)
    assert feats.dtype == torch.float32 and feats.shape == (2, 400)
    assert layouts == [True, True]
    with torch.no_grad():
        ref = fixture_net(x)
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)


def test_piergiaj_rgb_imagenet_kind_gives_its_pooled_1024_features(tmp_path: Path, fixture_net) -> None:
    """`kind="piergiaj"`: the W1 guide's detector, pytorch_i3d.py semantics: BatchNorm eps 1e-3 and
    `extract_features` (average-pooled Mixed_5c) as the 1024-d features."""
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(fixture_net.state_dict(), path)  # same key names as piergiaj's file
    det = load_detector(path, kind="piergiaj", batch_size=2)
    assert det.feature_dim == 1024 and "pool1024" in det.name
    x = torch.rand((2, 3, 16, 224, 224), generator=torch.Generator().manual_seed(5)) * 2 - 1
    feats = det(x)
    assert feats.shape == (2, 1024)
    eps3 = InceptionI3d(400)
    eps3.load_state_dict(fixture_net.state_dict())
    for m in eps3.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.eps = 1e-3  # pytorch_i3d.py's BatchNorm3d(eps=0.001)
    eps3.eval()
    with torch.no_grad():
        ref = eps3.avg_pool(eps3.trunk(x)).reshape(2, 1024)  # [B, 1024, 1, 1, 1] at 16 frames
        videogpt_eps = fixture_net.avg_pool(fixture_net.trunk(x)).reshape(2, 1024)
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)
    assert (feats - videogpt_eps).abs().max() > 1e-4  # the eps is not a detail


class _StandIn(nn.Module):
    """A tiny module with the StyleGAN-V TorchScript detector's call signature."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 400)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        if rescale or resize or not return_features:
            raise RuntimeError("called with the wrong flags")
        return self.proj(x.mean(dim=(2, 3, 4)))  # [B, 3] -> [B, 400]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_detector(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _StandIn()
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(module).save(str(path))
    det = load_detector(path, batch_size=3)
    assert "torchscript" in det.name and det.min_frames == 9 and det.file_sha256 is not None
    x = torch.rand(5, 3, 9, 224, 224) * 2 - 1
    feats = det(x)
    assert feats.shape == (5, 400) and feats.dtype == torch.float32
    with torch.no_grad():
        ref = module(x, return_features=True)
    torch.testing.assert_close(feats, ref)
    with pytest.raises(ValueError, match="T=4"):
        det(x[:, :, :4])


def test_missing_file_and_bad_kind(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_detector(tmp_path / "nope.pt")
    path = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="kind"):
        load_detector(path, kind="onnx")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="Missing key"):
        load_detector(path, kind="state_dict")
