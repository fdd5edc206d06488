"""LPIPS v0.1 per frame (lpips package heads, torchvision backbone loaded from our verified weight cache)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from videxp.metrics.base import FrameMetric
from videxp.weights import registry as weights

# LPIPS net name -> registered backbone weight (torchvision's file, see videxp.weights).
BACKBONES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
# sha256 of the v0.1 linear heads shipped in lpips 0.1.4 (lpips/weights/v0.1/<net>.pth).
HEAD_SHA256 = {
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "squeeze": "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
}

# smallest frame side each backbone accepts (measured: smaller inputs pool down to nothing)
MIN_FRAME_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}


def load_backbone(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load torchvision `features.*` weights into an lpips backbone split into slice1..sliceK.

    lpips keeps torchvision's layer indices as module names inside each slice (``slice2.3`` is
    ``features.3``), so ``slice<k>.<rest>`` maps to ``features.<rest>``. Every backbone parameter must
    be found with the same shape; classifier weights in the file are ignored.
    """
    target = net.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    problems = []
    for key, value in target.items():
        _, rest = key.split(".", 1)  # "slice1.0.weight" -> "0.weight"
        src = state.get(f"features.{rest}")
        if src is None:
            problems.append(f"missing features.{rest}")
        elif src.shape != value.shape:
            problems.append(f"features.{rest}: shape {tuple(src.shape)}, expected {tuple(value.shape)}")
        else:
            mapped[key] = src
    if problems:
        raise ValueError(f"backbone file {source} does not fit the LPIPS trunk: {'; '.join(problems[:5])}")
    net.load_state_dict(mapped, strict=True)


def lpips_network(
    net: str = "alex", backbone_path: str | os.PathLike | None = None, download: bool | None = None
) -> tuple[torch.nn.Module, dict[str, str]]:
    """The lpips package's `lpips.LPIPS` v0.1 (its linear heads; eval mode, no parameter requires grad) with
    its torchvision backbone from `backbone_path` or videxp's verified weight cache (`weights.get_path`:
    downloaded when online, `WeightsMissingError` offline), and the identity of both weight files
    (backbone_file, backbone_sha256, head_file, head_sha256). The LPIPS metric scores with it; training
    losses call it with gradients through the inputs (`model(x, y, normalize=True)` for x, y in [0, 1])."""
    if net not in BACKBONES:
        raise ValueError(f"net must be one of {sorted(BACKBONES)}, got {net!r}")
    import lpips as lpips_pkg  # deferred: importing lpips pulls in torchvision

    if backbone_path is None:
        path = weights.get_path(BACKBONES[net], download=download)
    else:
        path = Path(backbone_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS backbone_path {path} does not exist (net={net!r})")
    head = Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    identity = {
        "backbone_file": path.name,
        "backbone_sha256": str(weights.file_digests(path)["sha256"]),
        "head_file": f"lpips/weights/v0.1/{net}.pth",
        "head_sha256": weights.sha256_file(head),
    }
    if identity["head_sha256"] != HEAD_SHA256[net]:
        warnings.warn(
            f"LPIPS linear head {head} has sha256 {identity['head_sha256']}, expected {HEAD_SHA256[net]} "
            "(lpips 0.1.4); scores may not be comparable with published values",
            stacklevel=2,
        )
    with warnings.catch_warnings():  # torchvision's deprecation note for pretrained=False
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_pkg.LPIPS(pretrained=True, net=net, version="0.1", pnet_rand=True, verbose=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"backbone file {path} holds a {type(state).__name__}, expected a state dict")
    load_backbone(model.net, state, str(path))
    model.eval().requires_grad_(False)
    return model, identity


class LPIPS(FrameMetric):
    """LPIPS v0.1 distance per frame, lower is better (Zhang et al. 2018, the `lpips` package).

    Frames in [0, 1] are mapped to [−1, 1] (2x − 1) and scored in float32 with `lpips.LPIPS` itself:
    scaling layer → backbone → channel unit-normalisation → squared difference → the package's v0.1
    linear heads → spatial mean per layer (``spatial=False``) → sum over layers, batched over frames.
    The backbone comes from torchvision's file via `videxp.weights.get_path` (``$TORCH_HOME/hub/
    checkpoints``, downloaded when online) or `backbone_path`; torchvision itself downloads nothing, so
    offline runs fail with `videxp.weights.WeightsMissingError` naming where to place the file.
    Single-channel frames are repeated to three channels.
    """

    name = "lpips"
    higher_is_better = False
    takes_uint8 = True  # uint8 pairs: mapped to [-1, 1] as x / 127.5 - 1 in one step
    slice_bytes = 16 * 2**20  # CPU: 16 MB of float64-sized input per call (10 frames at 256², 170 at 64²)

    def __init__(
        self,
        *,
        net: str = "alex",
        backbone_path: str | os.PathLike | None = None,
        download: bool | None = None,
        reduction: str = "mean",
        chunk_frames: int = 256,
        name: str | None = None,
    ) -> None:
        super().__init__(reduction=reduction, chunk_frames=chunk_frames, name=name)
        self.net = net
        self.model, identity = lpips_network(net, backbone_path, download)
        self.backbone_file, self.backbone_sha256 = identity["backbone_file"], identity["backbone_sha256"]
        self.head_file, self.head_sha256 = identity["head_file"], identity["head_sha256"]

    def settings(self) -> dict[str, Any]:
        """LPIPS conventions (version, trunk, weight identities) plus the reduction."""
        return {
            "version": "0.1",
            "net": self.net,
            "backbone_file": self.backbone_file,
            "backbone_sha256": self.backbone_sha256[:12],
            "linear_head_file": self.head_file,
            "linear_head_sha256": self.head_sha256,
            "value_range": "[0, 1] inputs mapped to [-1, 1] by 2x - 1",
            "spatial": "mean over H, W per layer (lpips spatial=False), summed over layers",
            "dtype": "float32",
            **super().settings(),
        }

    @torch.no_grad()
    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """Vectors [N, D] of frames [N, C, H, W] in [-1, 1] whose squared distances are the LPIPS distances
        (FDM's `LpipsEmbedder`, for its adaptive sampling schemes): per layer the unit-normalised features
        times the square root of the linear head's weights, flattened and divided by sqrt(H·W)."""
        import lpips as lpips_pkg  # deferred: importing lpips pulls in torchvision

        if frames.shape[1] == 1:
            frames = frames.expand(-1, 3, -1, -1)
        model = self.model
        if next(model.parameters()).device != frames.device:
            model.to(frames.device)
        feats = model.net.forward(model.scaling_layer(frames.to(torch.float32)))
        parts = []
        for layer, lin in zip(feats, model.lins, strict=True):
            f = lpips_pkg.normalize_tensor(layer) * lin.model[-1].weight.sqrt()  # [N, C, h, w]
            parts.append(f.flatten(1) / (f.shape[-2] * f.shape[-1]) ** 0.5)
        return torch.cat(parts, dim=1)  # [N, D]

    @torch.no_grad()
    def score_frames(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS distance [N] of pred vs target [N, C, H, W], in [0, 1] or both uint8 (C = 3 or 1)."""
        if pred.shape[1] == 1:
            pred, target = pred.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
        if pred.shape[1] != 3:
            raise ValueError(f"LPIPS needs RGB (or single-channel) frames, got {pred.shape[1]} channels")
        smallest = MIN_FRAME_SIZE[self.net]
        if min(pred.shape[-2:]) < smallest:
            raise ValueError(
                f"LPIPS-{self.net} needs frames of at least {smallest}x{smallest} pixels (its backbone pools "
                f"them away below that); got {pred.shape[-2]}x{pred.shape[-1]}"
            )
        device = pred.device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        # CPU: channels-last frames take oneDNN's NHWC convolutions and max pools (AlexNet at 256²: ~20%
        # faster per frame, its max pools ~15x; values agree to 1e-7); other devices keep the input layout
        layout = torch.channels_last if device.type == "cpu" else torch.preserve_format
        x, y = (v.to(torch.float32, memory_format=layout) for v in (pred, target))
        if pred.dtype == torch.uint8:  # both uint8 (FrameMetric passes uint8 only in pairs)
            x, y = x / 127.5 - 1, y / 127.5 - 1
        else:
            x, y = x * 2 - 1, y * 2 - 1
        return self.model(x, y).reshape(pred.shape[0])  # [N]
