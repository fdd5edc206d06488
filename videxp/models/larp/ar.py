"""LARP's autoregressive prior LARP_AR (hywang66/LARP-L-long-AR): a LlamaGen-style GPT over tokenizer ids.

Sequence: [class token, video tokens] + a learned absolute position table `abs_pe` (no RoPE), pre-norm blocks
with RMSNorm, causal attention (one `wqkv`, no bias) and a SwiGLU feed-forward, RMSNorm + `output` logits.
Class conditioning uses `cls_embedding` (num_classes + 1 rows; the last is the null class for CFG, also chosen
by negative labels). With `frame_prediction=True` (LARP-L-long-AR-FP) there is no class embedding: the
condition is `cls_token_num` token ids (the tokenizer's ids of the given frames and a separator, id
vocab_size) embedded by `tok_embeddings`, which has vocab_size + 1 rows.

`LARPAR(**config)` takes LARP's `ModelArgs` fields (a hub config.json); state_dict() equals LARP_AR's.

Sampling (`sample`) keeps its KV cache in tensors it allocates per call and drops at the end: unlike LARP,
which attaches cache modules with persistent buffers to the layers, `state_dict()` never holds cache keys, a
strict load right after sampling works, and `reset_caches()` has nothing to do (kept for LARP's call sites).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from videxp.models.larp import hub
from videxp.models.larp.layers import sincos_1d

__all__ = ["AR_PRESETS", "LARPAR", "LARPARConfig", "larp_ar_config", "top_k_top_p_filtering"]


@dataclass
class LARPARConfig:
    """LARP's `ModelArgs` (models/larp_ar.py), field for field, defaults as there."""

    dim: int = 4096
    n_layer: int = 32
    n_head: int = 32
    n_kv_head: int | None = None
    multiple_of: int = 256  # SwiGLU hidden size rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000  # unused: LARP_AR has no RoPE
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    token_dropout_p: float = 0.1
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.1
    ffn_dropout_p: float = 0.1
    drop_path_rate: float = 0.0
    num_classes: int = 101
    class_dropout_prob: float = 0.1
    model_type: str = "class_cond"
    vocab_size: int = 8192
    cls_token_num: int = 1
    max_batch_size: int = 32  # unused: caches are sized per sample() call
    max_seq_len: int = 1024
    use_fixed_pe: bool = False
    frame_prediction: bool = False

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return -(-hidden // self.multiple_of) * self.multiple_of


# LARP's llama-abs factories (n_layer, n_head, dim) with cfgs/larp_ar.yaml and the LARP-L-long tokenizer's
# codebook / token count, as LARP's AR trainer builds them
_SIZES = {
    "llama-abs-S": (12, 6, 384),
    "llama-abs-B": (12, 12, 768),
    "llama-abs-L": (24, 16, 1024),
    "llama-abs-LP": (30, 20, 1280),  # hywang66/LARP-L-long-AR (631,975,680 parameters)
    "llama-abs-XL": (36, 20, 1280),
    "llama-abs-XXL": (48, 24, 1536),
    "llama-abs-XXXL": (48, 40, 2560),
}
_UCF = dict(num_classes=101, cls_token_num=1, token_dropout_p=0.1, use_fixed_pe=False, vocab_size=8192)
AR_PRESETS: dict[str, dict[str, Any]] = {
    **{k: dict(n_layer=l, n_head=h, dim=d, max_seq_len=1024, **_UCF) for k, (l, h, d) in _SIZES.items()},
    # the conformance fixture (tests/reference_outputs/larp/ar_tiny.json; 99,840 parameters)
    "tiny": dict(dim=48, n_layer=2, n_head=3, num_classes=10, vocab_size=64, max_seq_len=16),
}


def larp_ar_config(name: str = "llama-abs-LP", **overrides: Any) -> LARPARConfig:
    """AR_PRESETS[name] with `overrides` applied."""
    if name not in AR_PRESETS:
        raise ValueError(f"unknown LARP AR preset {name!r}; use one of {sorted(AR_PRESETS)}")
    return LARPARConfig(**{**AR_PRESETS[name], **overrides})


# ----------------------------------------------------------------------------- layers
class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps), computed in float32 and cast back to x's dtype before the weight."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class KVCache:
    """Keys and values of one layer for one sample() call (a plain object: never in state_dict)."""

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, like: torch.Tensor):
        self.k = like.new_zeros(batch, heads, length, head_dim)
        self.v = like.new_zeros(batch, heads, length, head_dim)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, h, S, hd] at positions start..start+S-1; -> keys, values of positions <= that."""
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class Attention(nn.Module):
    """Causal attention: wqkv -> [q | k | v] viewed head-major, SDPA, wo (no biases)."""

    def __init__(self, cfg: LARPARConfig):
        super().__init__()
        if cfg.dim % cfg.n_head:
            raise ValueError(f"dim {cfg.dim} is not divisible by n_head {cfg.n_head}")
        self.dim, self.n_head, self.n_kv_head, self.head_dim = cfg.dim, cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.attn_dropout_p = cfg.attn_dropout_p
        self.resid_dropout = nn.Dropout(cfg.resid_dropout_p)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start: int = 0,
    ) -> torch.Tensor:  # x [B, L, dim]; with a cache, x holds positions start..start+L-1
        B, L, _ = x.shape
        kv = self.n_kv_head * self.head_dim
        q, k, v = self.wqkv(x).split([self.dim, kv, kv], dim=-1)
        q = q.view(B, L, self.n_head, self.head_dim).transpose(1, 2)  # [B, h, L, hd]
        k = k.view(B, L, self.n_kv_head, self.head_dim).transpose(1, 2)  # [B, hkv, L, hd]
        v = v.view(B, L, self.n_kv_head, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(start, k, v)  # [B, hkv, start+L, hd]
        if self.n_kv_head != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        if mask is None and start > 0 and L > 1:  # a chunk after cached positions: causal with an offset
            mask = torch.arange(L, device=x.device)[:, None] + start >= torch.arange(
                start + L, device=x.device
            )
        causal = mask is None and L > 1
        p = self.attn_dropout_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=p)
        return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(B, L, self.dim)))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: LARPARConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)
        self.ffn_dropout = nn.Dropout(cfg.ffn_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: LARPARConfig, drop_path: float):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, mask=None, cache=None, start=0) -> torch.Tensor:  # [B, L, dim]
        h = x + self.drop_path(self.attention(self.attention_norm(x), mask, cache, start))
        return h + self.drop_path(self.feed_forward(self.ffn_norm(h)))


class LabelEmbedder(nn.Module):
    """Class embedding; row num_classes is the null class (present when class_dropout_prob > 0)."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)
        self.num_classes, self.dropout_prob = num_classes, dropout_prob

    def forward(self, labels: torch.Tensor, train: bool) -> torch.Tensor:  # [B] -> [B, dim]
        if train and self.dropout_prob > 0:  # classifier-free guidance training: drop labels to null
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(torch.where(labels < 0, self.num_classes, labels))


def top_k_top_p_filtering(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """logits [B, V] with all but the top_k largest, then those outside the top_p nucleus, set to -inf."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]))[0][..., -1, None]
        logits[logits < kth] = -float("inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        drop = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1) > top_p
        drop[..., 1:] = drop[..., :-1].clone()  # keep the first token above the threshold
        drop[..., 0] = False
        logits[drop.scatter(1, order, drop)] = -float("inf")
    return logits


# ----------------------------------------------------------------------------- the model
class LARPAR(nn.Module):
    """LARP_AR; `LARPAR(**model_args)` or `LARPAR(LARPARConfig(...))` (module doc)."""

    def __init__(self, config: LARPARConfig | None = None, **kwargs: Any):
        super().__init__()
        if config is None:
            config = LARPARConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = cfg = config
        self.vocab_size, self.n_layer = cfg.vocab_size, cfg.n_layer
        self.max_seq_length, self.num_classes = cfg.max_seq_len, cfg.num_classes
        self.model_type, self.cls_token_num = cfg.model_type, cfg.cls_token_num
        self.frame_prediction = cfg.frame_prediction
        if cfg.frame_prediction:
            self.cls_embedding = None
        elif cfg.model_type == "class_cond":
            self.cls_embedding = LabelEmbedder(cfg.num_classes, cfg.dim, cfg.class_dropout_prob)
        else:
            raise ValueError(f"model_type {cfg.model_type!r}: LARP_AR is 'class_cond' (or frame_prediction)")
        self.tok_embeddings = nn.Embedding(
            cfg.vocab_size + int(cfg.frame_prediction), cfg.dim
        )  # +1: separator
        self.tok_dropout = nn.Dropout(cfg.token_dropout_p)
        dpr = [cfg.drop_path_rate * i / max(cfg.n_layer - 1, 1) for i in range(cfg.n_layer)]
        self.layers = nn.ModuleList(TransformerBlock(cfg, dpr[i]) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        n_pos = cfg.max_seq_len + cfg.cls_token_num - 1
        if cfg.use_fixed_pe:  # a persistent buffer, like LARP's
            self.register_buffer("abs_pe", torch.zeros(1, n_pos, cfg.dim))
        else:
            self.abs_pe = nn.Parameter(torch.randn(1, n_pos, cfg.dim) * 0.02)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Fresh-training init as LARP's: normal(initializer_range) Linears / embeddings, zero `output`, the
        sin-cos table for a fixed abs_pe. Checkpoints overwrite it. Skipped on the meta device."""
        if self.output.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=self.config.initializer_range)
        nn.init.zeros_(self.output.weight)
        if self.config.use_fixed_pe:
            table = sincos_1d(self.config.dim, torch.arange(self.abs_pe.shape[1]))
            with torch.no_grad():
                self.abs_pe.copy_(table.view_as(self.abs_pe))

    @property
    def device(self) -> torch.device:
        return self.output.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.output.weight.dtype

    def reset_caches(self) -> None:
        """Nothing to reset: sample() keeps its KV cache out of the module (kept for LARP's call sites)."""

    # --------------------------------------------------------------- teacher forcing
    def _cond_embeddings(self, cond_idx: torch.Tensor) -> torch.Tensor:  # -> [B, T, dim]
        if self.frame_prediction:
            if cond_idx.ndim != 2 or cond_idx.shape[1] != self.cls_token_num:
                raise ValueError(f"frame prediction takes cond_idx [B, {self.cls_token_num}] token ids")
            return self.tok_embeddings(cond_idx)
        if cond_idx.ndim != 1:
            raise ValueError(f"cond_idx must be class labels [B], got {list(cond_idx.shape)}")
        return self.cls_embedding(cond_idx, train=self.training).unsqueeze(1)[:, : self.cls_token_num]

    def _blocks(self, h: torch.Tensor, mask=None, caches=None, start: int = 0) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(h, mask, None if caches is None else caches[i], start)
        return self.output(self.norm(h))  # [B, L, V]

    def forward(
        self,
        idx: torch.Tensor | None,
        cond_idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced logits of [condition, idx [B, n]]: [B, T + n, V] (T = cls_token_num; position T-1
        predicts idx[:, 0]); in training and frame-prediction models sliced to the last n + 1 positions.
        `loss`: mean cross-entropy against targets (matching logits' positions); with `valid` [B] each
        sample's terms are weighted by valid[b] and divided by max(sum of the weights, 1). `mask`: an SDPA
        attention mask that replaces the causal one. `input_pos` (LARP's KV-cache argument) is unused."""
        if cond_idx is None:
            raise ValueError("LARPAR.forward needs cond_idx (token-by-token decoding is sample()'s job)")
        h = self._cond_embeddings(cond_idx)
        if idx is not None:
            h = torch.cat([h, self.tok_embeddings(idx)], dim=1)  # [B, T + n, dim]
        if h.shape[1] > self.abs_pe.shape[1]:
            raise ValueError(f"sequence of {h.shape[1]} positions; abs_pe holds {self.abs_pe.shape[1]}")
        h = self.tok_dropout(h) + self.abs_pe[:, : h.shape[1]]
        logits = self._blocks(h, mask)
        if self.training or self.frame_prediction:
            logits = logits[:, self.cls_token_num - 1 :].contiguous()
        loss = None
        if targets is not None:
            flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
            if valid is None:
                loss = F.cross_entropy(flat_logits, flat_targets)
            else:
                per_token = F.cross_entropy(flat_logits, flat_targets, reduction="none")  # [B L]
                weights = valid[:, None].expand(-1, targets.shape[1]).reshape(-1).to(per_token.dtype)
                loss = (per_token * weights).sum() / weights.sum().clamp_min(1)
        return logits, loss

    # --------------------------------------------------------------- sampling
    def _draw(self, logits, temperature, top_k, top_p, generators) -> torch.Tensor:  # [B, V] -> [B, 1]
        logits = logits / max(temperature, 1e-5)
        if top_k > 0 or top_p < 1.0:
            logits = top_k_top_p_filtering(logits, top_k=top_k, top_p=top_p)
        probs = F.softmax(logits.float(), dim=-1)
        if generators is None:  # the global RNG, one call per position (LARP's draws)
            return torch.multinomial(probs, num_samples=1)
        return torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])

    @torch.no_grad()  # not inference_mode (LARP): the ids stay usable in autograd code
    def sample(
        self,
        c: torch.Tensor,
        cfg_scale: float = 2.0,
        cfg_interval: int = -1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seq_length: int | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """max_seq_len token ids [B, max_seq_len] int32 for classes c [B] (negative: the null class) or, with
        frame_prediction, condition tokens c [B, cls_token_num]. cfg_scale > 1: classifier-free guidance with
        the batch doubled as [c, null], logits = l_u + (l_c - l_u) * cfg_scale; decode step i (position i+1)
        uses l_c alone once cfg_interval > -1 and i > cfg_interval. Then temperature, top-k, top-p, softmax
        and one multinomial draw per position: from the global RNG when `generators` is None (LARP's draws),
        else row b from generators[b] only (a row's tokens do not depend on its batch). Runs the module in
        its current mode and dtype (call .eval(); bf16 works)."""
        n_new = self.max_seq_length if seq_length is None else seq_length
        if n_new != self.max_seq_length:
            raise ValueError(f"LARP_AR samples exactly max_seq_len={self.max_seq_length} tokens, not {n_new}")
        B = c.shape[0]
        if generators is not None and len(generators) != B:
            raise ValueError(f"got {len(generators)} generators for a batch of {B}")
        guided = cfg_scale > 1.0
        if self.frame_prediction and guided:
            raise ValueError("frame prediction samples without classifier-free guidance (cfg_scale=1.0)")
        cond = torch.cat([c, torch.full_like(c, self.num_classes)]) if guided else c  # [B', ...]
        h = self._cond_embeddings(cond)  # [B', T, dim]
        T = h.shape[1]
        like = self.tok_embeddings.weight
        caches = [
            KVCache(h.shape[0], self.config.kv_heads, T + n_new - 1, self.config.head_dim, like)
            for _ in self.layers
        ]
        seq = torch.empty(B, n_new, dtype=torch.int, device=c.device)

        def step(h: torch.Tensor, start: int, use_cfg: bool) -> torch.Tensor:  # h [B', L, dim] -> [B, 1]
            logits = self._blocks(
                self.tok_dropout(h) + self.abs_pe[:, start : start + h.shape[1]], None, caches, start
            )
            logits = logits[:, -1]  # [B', V]
            if guided:
                cond_l, uncond_l = logits.split(B)
                logits = uncond_l + (cond_l - uncond_l) * cfg_scale if use_cfg else cond_l
            return self._draw(logits, temperature, top_k, top_p, generators)

        tok = step(h, 0, True)  # prefill: the condition predicts token 0 (always guided)
        seq[:, :1] = tok
        for i in range(n_new - 1):  # decode step i feeds token i at position T + i
            x = torch.cat([tok, tok]) if guided else tok  # [B', 1]
            tok = step(self.tok_embeddings(x), T + i, not (cfg_interval > -1 and i > cfg_interval))
            seq[:, i + 1 : i + 2] = tok
        return seq

    # --------------------------------------------------------------- files
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path = "hywang66/LARP-L-long-AR",
        revision: str | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        config: dict[str, Any] | None = None,
    ) -> LARPAR:
        """An AR model from a hub id (config.json + model.safetensors; offline: the cache only), a local
        folder holding both, or a weight file (`config`, else a config.json beside it); strict load, eval."""
        cfg, sd, source = hub.read_checkpoint(path_or_id, "LARP AR model", revision, config)
        fields = [f.name for f in dataclasses.fields(LARPARConfig)]
        hub.check_config(cfg, fields, source, "LARP_AR's ModelArgs")
        return hub.build_strict(lambda: cls(**cfg), sd, source, "the LARP AR model", device, dtype)

    def save_pretrained(self, folder: str | Path) -> Path:
        """config.json (every ModelArgs field) + model.safetensors in `folder`, LARP's released layout."""
        return hub.write_checkpoint(folder, dataclasses.asdict(self.config), self.state_dict())
