"""One batch through the tokenizer: clips -> token ids -> reconstructed clips, as LARP's eval/ does."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from videxp.errors import ConfigError
from videxp.models.larp.tokenizer import LARPTokenizer
from videxp.utils.seeding import derive_seed, row_generators

VQ_STREAM = 7  # derive_seed(seed, video, VQ_STREAM): the stochastic VQ's draws for one video


def check_clip_size(tokenizer: LARPTokenizer, clips: torch.Tensor) -> None:
    """Refuse clips [B, T, C, H, W] that are not the tokenizer's input (frame_num x input_size²)."""
    t, h, w = clips.shape[1], clips.shape[3], clips.shape[4]
    want = (tokenizer.frame_num, tokenizer.input_size, tokenizer.input_size)
    if (t, h, w) != want:
        raise ConfigError(
            f"the dataset clips are {t}x{h}x{w} (frames x height x width) but the tokenizer takes "
            f"{want[0]}x{want[1]}x{want[2]}; set dataset.video_length={want[0]} dataset.image_size={want[1]}"
        )


def vq_generators(seed: int, videos: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """One VQ sampling generator per video, seeded from (seed, video): independent of batching and resume."""
    return row_generators([derive_seed(seed, int(v), VQ_STREAM) for v in videos], device)


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)  # LARP's --use_amp (the VQ stays fp32)


@torch.inference_mode()
def reconstruct(
    tokenizer: LARPTokenizer,
    clips: torch.Tensor,
    generators: list[torch.Generator] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """clips [B, T, C, H, W] in [0, 1] -> (reconstructions [B, T, C, H, W] float32 clamped to [0, 1], token
    ids [B, N]). Decoded from the ids (`decode_from_bottleneck`); `generators` drive a sampling VQ."""
    check_clip_size(tokenizer, clips)
    video = clips.permute(0, 2, 1, 3, 4).to(tokenizer.device)  # [B, C, T, H, W]
    with _autocast(video.device, dtype):
        ids = tokenizer.encode(video, generators)["bottleneck_rep"]  # [B, N]
        recon = tokenizer.decode_from_bottleneck(ids)  # [B, C, T, H, W], unclamped
    return recon.float().clamp(0.0, 1.0).permute(0, 2, 1, 3, 4).contiguous(), ids  # [B, T, C, H, W]
