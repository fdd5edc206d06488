"""LARP's bottleneck: in_linear (D -> d), a vector quantiser with an l2-normalised codebook, out_linear.

The quantiser ("vq" regulariser) matches LARP's `SimpleVectorQuantizer`: with `stochastic=True` it samples
the id from softmax(cos / temperature) unless eval-deterministic (`set_eval_deterministic(True)` and eval
mode), where it takes the argmax. It always runs in float32, whatever the module's dtype. The sampling takes
an optional `torch.Generator` (or one per batch row) so a caller can seed the ids of each video on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from videxp.errors import ConfigError

__all__ = ["Bottleneck", "Generators", "VectorQuantizer", "multinomial_rows"]

Generators = torch.Generator | Sequence[torch.Generator] | None  # one for the batch, or one per row

# LARP's "vq" arguments (models/bottleneck.py); `dim` and `token_nums` are filled in by the bottleneck
VQ_ARGS = (
    "codebook_size",
    "commitment_loss_weight",
    "entropy_loss_weight",
    "entropy_loss_temperature",
    "l2_normalized",
    "same_index_shape",
    "stochastic",
    "stochastic_temperature",
    "codebook_loss_weight",
)


def multinomial_rows(probs: torch.Tensor, generator: Generators, rows: int) -> torch.Tensor:
    """One draw per row of `probs` [R, K] -> [R] int64; R = rows * k. A single generator (or None: the global
    RNG) draws all rows in one call; a sequence of `rows` generators draws row block b from generator b only,
    so a video's draws do not depend on the other videos of its batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    if len(generator) != rows:
        raise ValueError(f"got {len(generator)} generators for a batch of {rows}")
    blocks = probs.reshape(rows, -1, probs.shape[-1])  # [rows, k, K]
    return torch.cat([torch.multinomial(p, 1, generator=g).squeeze(-1) for p, g in zip(blocks, generator)])


def entropy_loss(affinity: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
    """(sample entropy - codebook entropy, sample entropy, codebook entropy) of softmax(affinity / T)."""
    logits = affinity.reshape(-1, affinity.shape[-1]) / temperature  # [R, K]
    probs = F.softmax(logits, dim=-1)
    log_probs = F.log_softmax(logits + 1e-5, dim=-1)
    avg = probs.mean(0)
    codebook_entropy = -(avg * torch.log(avg + 1e-5)).sum()
    sample_entropy = -(probs * log_probs).sum(-1).mean()
    return sample_entropy - codebook_entropy, sample_entropy, codebook_entropy


class VectorQuantizer(nn.Module):
    """LARP's "vq" regulariser: key `embedding.weight` [K, d] (+ `stochastic_temperature_inv` if learned)."""

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        commitment_loss_weight: float = 0.25,
        entropy_loss_weight: float = 0.0,
        entropy_loss_temperature: float = 0.01,
        l2_normalized: bool = False,
        same_index_shape: bool = True,
        stochastic: bool = False,
        stochastic_temperature: float = 1.0,
        codebook_loss_weight: float = 1.0,
    ):
        super().__init__()
        if stochastic and not l2_normalized:
            raise ValueError("the stochastic VQ samples softmax(cosine / T): it needs l2_normalized=True")
        self.dim, self.codebook_size = dim, codebook_size
        self.beta, self.codebook_loss_weight = commitment_loss_weight, codebook_loss_weight
        self.entropy_loss_weight, self.entropy_loss_temperature = (
            entropy_loss_weight,
            entropy_loss_temperature,
        )
        self.l2_normalized, self.same_index_shape = bool(l2_normalized), same_index_shape
        self.stochastic = stochastic
        self.eval_deterministic = False  # LARP's default: sample even in eval mode
        if stochastic and stochastic_temperature <= 0:  # LARP: a negative temperature means "learn it"
            self.stochastic_temperature_inv: float | nn.Parameter = nn.Parameter(torch.tensor(10.0))
        elif stochastic:
            self.stochastic_temperature_inv = 1.0 / stochastic_temperature
        self.embedding = nn.Embedding(codebook_size, dim)
        if not self.embedding.weight.is_meta:
            nn.init.kaiming_uniform_(self.embedding.weight)

    def set_eval_deterministic(self, deterministic: bool = True) -> None:
        """Argmax ids in eval mode (True) or LARP's default sampling (False); training always samples."""
        self.eval_deterministic = deterministic

    def get_emb(self) -> torch.Tensor:
        """The codebook as used [K, d], float32 (l2-normalised rows when l2_normalized)."""
        emb = self.embedding.weight.float()
        return F.normalize(emb, p=2, dim=-1) if self.l2_normalized else emb

    def forward(self, z: torch.Tensor, generator: Generators = None) -> dict[str, torch.Tensor]:
        """Quantise z [B, N, d]; returns LARP's dict (ids `bottleneck_rep` [B, N] int64, losses, ...)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._quantize(z, generator)

    def _quantize(self, z: torch.Tensor, generator: Generators) -> dict[str, torch.Tensor]:
        if z.ndim != 3:
            raise ValueError(f"the quantiser takes [B, N, d], got {list(z.shape)}")
        z = z.float()
        if self.l2_normalized:
            z = F.normalize(z, p=2, dim=-1)
        emb = self.get_emb()  # [K, d]
        flat = z.reshape(-1, self.dim)  # [B N, d]
        dist = None
        if self.stochastic:
            cos = flat @ emb.t()  # [B N, K]
            probs = F.softmax(cos * self.stochastic_temperature_inv, dim=-1)
            if self.eval_deterministic and not self.training:
                ids = probs.argmax(-1)
            else:
                ids = multinomial_rows(probs, generator, z.shape[0])
        else:
            dist = flat.pow(2).sum(1, keepdim=True) + emb.pow(2).sum(1) - 2 * flat @ emb.t()  # [B N, K]
            ids = dist.argmin(1)
        quantized = F.embedding(ids, emb).view(z.shape)  # [B, N, d]
        loss_commit = (quantized.detach() - z).pow(2).mean()
        loss_codebook = (quantized - z.detach()).pow(2).mean()
        if self.entropy_loss_weight > 0:
            if dist is None:  # LARP crashes here (its entropy term uses the distances of the argmin branch)
                dist = flat.pow(2).sum(1, keepdim=True) + emb.pow(2).sum(1) - 2 * flat @ emb.t()
            loss_entropy, sample_entropy, avg_entropy = entropy_loss(-dist, self.entropy_loss_temperature)
        else:
            loss_entropy = sample_entropy = avg_entropy = torch.zeros((), device=z.device)
        loss = (
            self.beta * loss_commit
            + self.codebook_loss_weight * loss_codebook
            + self.entropy_loss_weight * loss_entropy
        )
        quantized = z + (quantized - z).detach()  # straight-through
        if self.same_index_shape:
            ids = ids.reshape(z.shape[0], z.shape[1])
        return {
            "unregularized_z": z,  # l2-normalised when l2_normalized
            "emb": emb,
            "regularized_z": quantized,
            "bottleneck_rep": ids,
            "loss_q": loss,
            "loss_commit": loss_commit,
            "loss_codebook": loss_codebook,
            "loss_entropy": loss_entropy,
            "per_sample_entropy": sample_entropy,
            "codebook_entropy": avg_entropy,
        }

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Codebook rows of ids [...] -> [..., d], l2-normalised, in the module's dtype."""
        z = self.embedding(ids)
        return F.normalize(z, p=2, dim=-1) if self.l2_normalized else z


class Bottleneck(nn.Module):
    """LARP's "bottleneck" with norm "none" and the "vq" regulariser: in_linear, out_linear, regularizer."""

    def __init__(
        self,
        bottleneck_dim: int,
        input_dim: int,
        output_dim: int,
        token_nums: int,
        norm: str | None = None,
        regularizer: Mapping[str, Any] | None = None,
        **_: Any,  # LARP's `param_names` and other unused arguments
    ):
        super().__init__()
        if norm is not None and str(norm).lower() not in ("no", "none"):
            raise ConfigError(
                f"bottleneck norm {norm!r}: videxp's LARP has norm 'none' only (every released LARP config)"
            )
        if regularizer is None or str(regularizer.get("name", "")).lower() != "vq":
            raise ConfigError(
                f"bottleneck regularizer {regularizer!r}: videxp's LARP has the 'vq' regularizer only"
            )
        if bottleneck_dim <= 0:
            raise ConfigError("bottleneck_dim must be > 0: videxp's LARP always projects to the bottleneck")
        self.bottleneck_dim, self.token_nums = bottleneck_dim, token_nums
        self.in_linear = nn.Linear(input_dim, bottleneck_dim)
        self.out_linear = nn.Linear(bottleneck_dim, output_dim)
        args = dict(regularizer.get("args", {}))
        unknown = sorted(set(args) - set(VQ_ARGS) - {"dim", "token_nums"})
        if unknown:
            raise ValueError(f"unknown vq arguments {unknown}; LARP's are {list(VQ_ARGS)}")
        self.regularizer = VectorQuantizer(bottleneck_dim, **{k: v for k, v in args.items() if k in VQ_ARGS})

    def project_out(self, z: torch.Tensor) -> torch.Tensor:  # [B, N, d] -> [B, N, D]
        return self.out_linear(z.to(self.out_linear.weight.dtype))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, N] -> decoder input [B, N, D] (out_linear of the l2-normalised codebook rows)."""
        return self.project_out(self.regularizer.decode(ids))

    def forward(self, x: torch.Tensor, generator: Generators = None) -> dict[str, Any]:
        """Encoder output x [B, N, D] -> LARP's dict: `output` [B, N, D_dec], ids, projected_z, losses, ..."""
        if x.ndim != 3:
            raise ValueError(f"the bottleneck takes [B, N, D], got {list(x.shape)}")
        input_norm_first = x[:, 0].norm(dim=-1).mean().item()
        input_norm_last = x[:, -1].norm(dim=-1).mean().item()
        z = self.in_linear(x)  # [B, N, d]
        out = self.regularizer(z, generator)
        return {
            "output": self.project_out(out["regularized_z"]),
            "bottleneck_rep": out.pop("bottleneck_rep"),
            "projected_z": z,
            "input_norm_first": input_norm_first,
            "input_norm_last": input_norm_last,
            **out,
        }
