"""LARP's video discriminator (hywang66/LARP models/loss.py `TransformerDiscriminator`): one logit per clip.

clip [B, C, T, S, S] -> patch tokens [B, t*h*w, D] (Conv3d, kernel = stride = (Pt, P, P); a Conv2d per frame
when Pt == 1) + the fixed 3-D sin-cos table `encoder_pos_embed` -> a learned `cls_token` prepended ->
timm-layout ViT blocks -> LayerNorm (eps 1e-6) of the cls output -> Linear(D, 1) -> [B, 1].

Constructor keywords are LARP's; state_dict() keys are LARP's (`x_embedder.proj.*`, `cls_token`,
`encoder_pos_embed`, `transformer_encoder.blocks.<i>.*`, `norm_final.*`, `fc.*`). videxp-only: `ln_eps` of the
blocks' LayerNorms (timm's default, 1e-5 up to timm 1.0.15, as the tokenizer's).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from videxp.models.larp.layers import PatchEmbed, TransformerEncoderFused, sincos_3d, xavier_linears

__all__ = ["DISC_PRESETS", "TransformerDiscriminator"]

# model.size -> the discriminator's architecture; paper: LARP cfgs/larp_tokenizer.yaml (disc_tran_*)
DISC_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(hidden_size=384, n_heads=12, n_layers=8, temporal_patch_size=4, patch_size=8),
    "tiny": dict(hidden_size=32, n_heads=2, n_layers=2, temporal_patch_size=2, patch_size=4),
}


class TransformerDiscriminator(nn.Module):
    """LARP's transformer discriminator over whole clips (module doc)."""

    def __init__(
        self,
        hidden_size: int,
        n_heads: int,
        n_layers: int,
        input_size: int,
        temporal_patch_size: int,
        patch_size: int,
        in_channels: int = 3,
        frame_num: int = 16,
        *,
        ln_eps: float = 1e-5,
    ):
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible into {n_heads} heads")
        self.hidden_size, self.input_size, self.frame_num = hidden_size, input_size, frame_num
        self.x_embedder = PatchEmbed(
            input_size, frame_num, patch_size, temporal_patch_size, in_channels, hidden_size
        )
        self.token_t = self.x_embedder.num_temporal_patches
        self.token_h = self.token_w = input_size // patch_size
        self.video_token_num = self.token_t * self.token_h * self.token_w
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.register_buffer("encoder_pos_embed", torch.zeros(1, self.video_token_num, hidden_size))
        self.transformer_encoder = TransformerEncoderFused(hidden_size, n_layers, n_heads, ln_eps)
        self.norm_final = nn.LayerNorm(hidden_size, eps=1e-6)
        self.fc = nn.Linear(hidden_size, 1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """LARP's init: xavier-uniform Linears with zero bias, the patch Conv as a Linear, a xavier-uniform
        cls token, the sin-cos table. Skipped on the meta device."""
        if self.fc.weight.is_meta:
            return
        xavier_linears(self)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.reset_parameters()
        with torch.no_grad():
            table = sincos_3d(self.hidden_size, self.token_h, self.token_t)  # [t*h*w, D]
            self.encoder_pos_embed.copy_(table.view_as(self.encoder_pos_embed))
            w = self.x_embedder.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(self.x_embedder.proj.bias)
            nn.init.xavier_uniform_(self.cls_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T, S, S] -> [B, 1]
        h = self.x_embedder(x.to(self.fc.weight.dtype)) + self.encoder_pos_embed  # [B, N, D]
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)  # [B, 1 + N, D]
        z = self.norm_final(self.transformer_encoder(h)[:, 0])  # the cls output [B, D]
        return self.fc(z)
