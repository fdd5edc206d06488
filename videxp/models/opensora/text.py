"""Open-Sora's caption encoder: T5 v1.1 (DeepFloyd/t5-v1_1-xxl) through transformers, or a tiny offline T5."""

from __future__ import annotations

import torch
from torch import nn

from videxp.models.wan.components import tiny_tokenizer
from videxp.weights.files import load_component, parse_dtype

T5_ID = "DeepFloyd/t5-v1_1-xxl"  # Open-Sora v1.3's text encoder (4096 channels)
TINY_T5 = dict(d_ff=37, d_kv=8, num_heads=4, num_layers=2)  # with d_model = the STDiT3's caption_channels


class T5TextEncoder(nn.Module):
    """Prompts -> T5 token features y [B, 1, L, D] and a validity mask [B, L] (1 = token), L = max_length.

    `size="full"`: tokenizer and `T5EncoderModel` from `pretrained` (hub id or local folder; offline
    only the cache, a miss raises ModelNotAvailable). `size="tiny"`: a randomly initialised T5 encoder
    with `d_model` channels and the in-code word-level tokenizer of the Wan tests (no download).
    Frozen: its parameters never train and it stays in eval mode.
    """

    def __init__(
        self,
        size: str = "full",
        pretrained: str = T5_ID,
        revision: str | None = None,
        max_length: int = 300,
        dtype: str = "bf16",
        d_model: int = 4096,
        seed: int = 0,
    ):
        super().__init__()
        from transformers import (  # deferred: transformers is a heavy import
            AutoTokenizer,
            T5Config,
            T5EncoderModel,
        )

        self.max_length = int(max_length)
        if size == "tiny":
            self.tokenizer = tiny_tokenizer()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                cfg = T5Config(vocab_size=len(self.tokenizer), d_model=int(d_model), **TINY_T5)
                self.model = T5EncoderModel(cfg).to(parse_dtype(dtype))
        elif size == "full":
            self.tokenizer = load_component(AutoTokenizer, pretrained, None, None, revision=revision)
            self.model = load_component(T5EncoderModel, pretrained, None, dtype, revision=revision)
        else:
            raise ValueError(f"model.text_encoder.size must be 'full' or 'tiny', got {size!r}")
        if self.model.config.d_model != int(d_model):
            raise ValueError(
                f"text encoder {pretrained} has {self.model.config.d_model} channels, the STDiT3 expects "
                f"caption_channels={d_model}"
            )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> T5TextEncoder:
        return super().train(False)  # always frozen

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        tok = self.tokenizer(
            list(prompts),
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
        y = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, D]
        return y.float()[:, None], mask  # [B, 1, L, D], [B, L]
