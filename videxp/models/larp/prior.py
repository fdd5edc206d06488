"""GPTC, the small continuous GPT that LARP's tokenizer trains as a prior over its latents (`prior_model`).

It predicts latent t+1 from latents <= t (teacher forcing, `ar_predict`); the tokenizer turns the prediction
into logits over its codebook for the prior cross-entropy loss. Only training uses it: encode / decode never
do.

Attention dropout (`attn_pdrop`): LARP passes it to SDPA unconditionally, so its prior is stochastic even in
eval mode. Here it applies in training only, unless `attn_dropout_in_eval=True` restores LARP's behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GPTC", "GPTC_SIZES", "GPTCConfig", "make_prior"]

# LARP's registered GPTC sizes (models/gptc.py): n_layer, n_head, n_embd
GPTC_SIZES: dict[str, tuple[int, int, int]] = {
    "gptc-L": (24, 16, 1024),
    "gptc-B": (12, 12, 768),
    "gptc-M": (12, 8, 512),
    "gptc-S": (12, 6, 384),  # the LARP-L-long tokenizer's prior (21.7M)
    "gptc-XS": (6, 6, 384),
    "gptc-XXS": (6, 4, 256),  # the conformance fixture's prior (5.0M)
}


@dataclass
class GPTCConfig:
    """LARP's GPTCConfig fields (defaults as there)."""

    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    max_seq_len: int = 1024
    n_ind: int = 16  # latent (bottleneck) dim
    n_embd: int = 1024
    n_head: int = 16
    n_layer: int = 24
    detach_x: bool = False
    detach_target: bool = True
    l2_normalized: bool = True
    n_classes: int = -1  # unused by the network (LARP passes the codebook size)
    fully_separated: bool = False  # unused by the network


class CausalSelfAttention(nn.Module):
    """Causal multi-head attention with separate key / query / value Linears (with bias) and `proj`."""

    def __init__(self, cfg: GPTCConfig, attn_dropout_in_eval: bool):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd {cfg.n_embd} is not divisible by n_head {cfg.n_head}")
        self.key = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.query = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.value = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_drop = nn.Dropout(cfg.resid_pdrop)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.n_head, self.attn_pdrop = cfg.n_head, cfg.attn_pdrop
        self.attn_dropout_in_eval = attn_dropout_in_eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, C]
        B, L, C = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, L, C] -> [B, nh, L, hd]
            return t.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)

        k, q, v = heads(self.key(x)), heads(self.query(x)), heads(self.value(x))
        p = self.attn_pdrop if (self.training or self.attn_dropout_in_eval) else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # [B, nh, L, hd]
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, L, C)))


class Block(nn.Module):
    """Pre-norm GPT block: x + attn(ln1(x)), then x + mlp(ln2(x)); mlp = Linear, GELU, Linear, Dropout."""

    def __init__(self, cfg: GPTCConfig, attn_dropout_in_eval: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, attn_dropout_in_eval)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd),
            nn.GELU(),
            nn.Linear(4 * cfg.n_embd, cfg.n_embd),
            nn.Dropout(cfg.resid_pdrop),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, C]
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPTC(nn.Module):
    """LARP's continuous GPT: keys pos_emb, input_proj, blocks.i.*, ln_f, head (in LARP's order)."""

    def __init__(self, config: GPTCConfig, attn_dropout_in_eval: bool = False):
        super().__init__()
        if config.detach_x and config.detach_target:
            raise ValueError("GPTC cannot detach both x and target")
        self.config = cfg = config
        self.input_proj = nn.Linear(cfg.n_ind, cfg.n_embd)
        self.pos_emb = nn.Parameter(torch.randn(1, cfg.max_seq_len, cfg.n_embd) * 0.02)
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.blocks = nn.Sequential(*[Block(cfg, attn_dropout_in_eval) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.n_ind)
        self.l2_normalized = cfg.l2_normalized
        if not self.pos_emb.is_meta:
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, n_ind] -> next-latent predictions [B, L, n_ind] (causal)."""
        if x.shape[1] > self.config.max_seq_len:
            raise ValueError(f"GPTC takes at most {self.config.max_seq_len} latents, got {x.shape[1]}")
        h = self.drop(self.input_proj(x) + self.pos_emb[:, : x.shape[1]])  # [B, L, C]
        return self.head(self.ln_f(self.blocks(h)))

    def ar_predict(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced prediction of zq [B, N, d]: row 0 is the input's first latent, row t the prediction
        of latent t from latents < t; l2-normalised rows when l2_normalized. -> [B, N, d]"""
        x = x[:, :-1]  # [B, N-1, d]
        pred = torch.cat([x[:, :1], self(x)], dim=1)  # [B, N, d]
        return F.normalize(pred, p=2, dim=-1) if self.l2_normalized else pred


def make_prior(
    spec: dict[str, Any], n_ind: int, n_classes: int, attn_dropout_in_eval: bool = False
) -> GPTC | None:
    """The GPTC named by the tokenizer's `prior_model` spec (None for name none/no/null/'')."""
    name = str(spec.get("name", "") or "")
    if name.lower() in ("", "none", "no", "null"):
        return None
    if name not in GPTC_SIZES:
        raise ValueError(f"unknown prior_model {name!r}; LARP's are {sorted(GPTC_SIZES)}")
    args = {**dict(spec.get("args") or {}), "n_ind": n_ind, "n_classes": n_classes}
    if spec.get("no_dropout", False):
        args.update(embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    known = {f.name for f in fields(GPTCConfig)} - {"n_layer", "n_head", "n_embd"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown prior_model args {unknown}; GPTC takes {sorted(known)}")
    n_layer, n_head, n_embd = GPTC_SIZES[name]
    cfg = GPTCConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, **args)
    return GPTC(cfg, attn_dropout_in_eval)
