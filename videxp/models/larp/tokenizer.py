"""LARP video tokenizer (hywang66/LARP-L-long-tokenizer): holistic latent queries, VQ, patch-query decoder.

encode: video [B, 3, T, S, S] in [0, 1] -> Conv3d patch tokens + `encoder_patch_pe` -> ViT encoder over
[patches, N latent queries] -> the N query outputs -> bottleneck (in_linear, l2-normalised VQ, out_linear).
decode: latents + `decoder_latent_pe` -> ViT decoder over [latents, patch queries] -> the patch-query
outputs -> LayerNorm + Linear -> unpatchify [B, 3, T, S, S] (not clamped). The GPTC `prior_model` is a
training-only prior.

Constructor keywords are those of LARP's `LARPTokenizer.__init__` (what a hub config.json holds), so
`LARPTokenizer(**config)` builds it; state_dict() keys, shapes and order equal LARP's. videxp-only options
(keyword-only, with defaults; `save_pretrained` writes them to config.json only when not the default):

- `ln_eps` = 1e-5: LayerNorm eps of the encoder / decoder blocks. LARP builds them with timm's default,
  which is 1e-5 up to timm 1.0.15 (what the released checkpoints were trained with), 1e-6 from 1.0.16.
- `prior_attn_dropout_in_eval` = False: LARP's prior applies attention dropout in eval mode too; here only in
  training unless this is True (see prior.py).
- `build_prior` = True: False leaves `prior_model` out (None), e.g. for checkpoints saved without it.

Position tables (`encoder_patch_pe`, `decoder_latent_pe`, `decoder_patch_query_embed`) are persistent buffers:
checkpoints overwrite them; the sin-cos tables of `initialize_weights` only matter for fresh training.
The VQ samples its ids in eval mode unless `set_vq_eval_deterministic(True)` (LARP's default is to sample).
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from videxp.errors import ConfigError
from videxp.models.larp import hub
from videxp.models.larp.layers import (
    OutputLayer,
    PatchEmbed,
    TransformerEncoderParallel,
    sincos_1d,
    sincos_3d,
    xavier_linears,
)
from videxp.models.larp.prior import make_prior
from videxp.models.larp.quantizer import Bottleneck, Generators, multinomial_rows

__all__ = ["TOKENIZER_PRESETS", "LARPTokenizer", "larp_tokenizer_config"]

TRANSFORMER = "transformer_encoder_parallel"  # the only encoder / decoder LARP's released models use
VIDEXP_OPTIONS = {"ln_eps": 1e-5, "prior_attn_dropout_in_eval": False, "build_prior": True}


# ----------------------------------------------------------------------------- presets
def _vq_bottleneck(dim: int, codebook: int) -> dict[str, Any]:
    vq = dict(
        codebook_size=codebook,
        commitment_loss_weight=0.25,
        codebook_loss_weight=1.0,
        entropy_loss_weight=0.0,
        entropy_loss_temperature=0.01,
        l2_normalized=True,
        stochastic=True,
        stochastic_temperature=0.03,
    )
    return {
        "name": "bottleneck",
        "args": {"bottleneck_dim": dim, "norm": "none", "regularizer": {"name": "vq", "args": vq}},
    }


def _prior(name: str, no_dropout: bool) -> dict[str, Any]:
    return dict(
        name=name,
        use_mix_ss=True,
        mix_ss_max_ratio=0.5,
        mix_ss_peak_steps_ratio=0.3,
        n_rounds=2,
        avg_loss_over_rounds=True,
        no_grad_before_last_round=False,
        no_dropout=no_dropout,
        latent_ce_temperature=1.0,
        args={"l2_normalized": True},
    )


def _preset(bottleneck, prior, n, size, frames, pt, p, hidden, heads, depth) -> dict[str, Any]:
    return dict(
        bottleneck=bottleneck,
        prior_model=prior,
        bottleneck_token_num=n,
        input_size=size,
        frame_num=frames,
        temporal_patch_size=pt,
        patch_size=p,
        decoder_temporal_patch_size=pt,
        decoder_patch_size=p,
        in_channels=3,
        transformer_name=TRANSFORMER,
        encoder_name="none",
        decoder_name="none",
        latent_pe_scale_factor=10000,
        query_init_std=0.02,
        encoder_hidden_size=hidden,
        decoder_hidden_size=hidden,
        encoder_num_heads=heads,
        decoder_num_heads=heads,
        encoder_depth=depth,
        decoder_depth=depth,
        learned_encoder_patch_pe=False,
        learned_encoder_latent_query_embed=True,
        learned_decoder_latent_pe=False,
        learned_decoder_patch_query_embed=False,
        use_encoder_patch_token_type_embed=False,
        use_encoder_latent_query_token_type_embed=False,
        use_decoder_latent_token_type_embed=False,
        use_decoder_patch_query_token_type_embed=True,
        encoder_query_gaussian_init=True,
    )


TOKENIZER_PRESETS: dict[str, dict[str, Any]] = {
    # hywang66/LARP-L-long-tokenizer: cfgs/larp_tokenizer.yaml + scripts/train_larp_tokenizer_reproduce.sh
    # (193,880,224 parameters; 172,179,984 without the gptc-S prior)
    "larp_l_long": _preset(
        _vq_bottleneck(16, 8192), _prior("gptc-S", False), 1024, 128, 16, 4, 8, 768, 12, 12
    ),
    # the conformance fixture (tests/reference_outputs/larp/tokenizer_tiny.json; 5,063,952 parameters)
    "tiny": _preset(_vq_bottleneck(8, 64), _prior("gptc-XXS", True), 16, 16, 4, 2, 4, 32, 2, 2),
}


def larp_tokenizer_config(name: str = "larp_l_long", **overrides: Any) -> dict[str, Any]:
    """A copy of TOKENIZER_PRESETS[name] with `overrides` applied: LARPTokenizer(**config) builds it."""
    if name not in TOKENIZER_PRESETS:
        raise ValueError(f"unknown LARP tokenizer preset {name!r}; use one of {sorted(TOKENIZER_PRESETS)}")
    return {**copy.deepcopy(TOKENIZER_PRESETS[name]), **overrides}


# ----------------------------------------------------------------------------- the tokenizer
def _is_none(name: str | None) -> bool:
    return name is None or str(name).lower() in ("none", "no", "null", "")


class LARPTokenizer(nn.Module):
    """LARP's video tokenizer: `LARPTokenizer(**config)` with LARP's constructor keywords (module doc)."""

    output_format = "bcthw"

    def __init__(
        self,
        bottleneck: dict[str, Any],
        prior_model: dict[str, Any],
        bottleneck_token_num: int = 1024,
        input_size: int = 128,
        frame_num: int = 16,
        temporal_patch_size: int = 4,
        patch_size: int = 8,
        decoder_temporal_patch_size: int = 4,
        decoder_patch_size: int = 8,
        in_channels: int = 3,
        transformer_name: str = TRANSFORMER,
        encoder_name: str | None = None,
        decoder_name: str | None = None,
        latent_pe_scale_factor: float = 10000,
        query_init_std: float = 0.02,
        encoder_hidden_size: int = 768,
        decoder_hidden_size: int = 768,
        encoder_num_heads: int = 12,
        decoder_num_heads: int = 12,
        encoder_depth: int = 6,
        decoder_depth: int = 6,
        learned_encoder_patch_pe: bool = False,
        learned_encoder_latent_query_embed: bool = True,
        learned_decoder_latent_pe: bool = False,
        learned_decoder_patch_query_embed: bool = False,
        use_encoder_patch_token_type_embed: bool = False,
        use_encoder_latent_query_token_type_embed: bool = False,
        use_decoder_latent_token_type_embed: bool = False,
        use_decoder_patch_query_token_type_embed: bool = False,
        encoder_query_gaussian_init: bool = True,
        *,
        ln_eps: float = VIDEXP_OPTIONS["ln_eps"],
        prior_attn_dropout_in_eval: bool = VIDEXP_OPTIONS["prior_attn_dropout_in_eval"],
        build_prior: bool = VIDEXP_OPTIONS["build_prior"],
    ):
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.config = copy.deepcopy(
            {k: v for k, v in args.items() if k not in VIDEXP_OPTIONS}
        )  # LARP's kwargs
        self.options = {k: args[k] for k in VIDEXP_OPTIONS}
        for name in (transformer_name, encoder_name, decoder_name):
            if not _is_none(name) and name != TRANSFORMER:
                raise ConfigError(f"transformer {name!r}: videxp's LARP has {TRANSFORMER!r} only")
        if not learned_encoder_latent_query_embed and encoder_query_gaussian_init:
            raise ValueError("encoder_query_gaussian_init needs learned_encoder_latent_query_embed")
        if input_size % decoder_patch_size or frame_num % decoder_temporal_patch_size:
            raise ValueError("input_size / frame_num must be divisible by the decoder patch sizes")
        self.in_channels = self.out_channels = in_channels
        self.input_size, self.frame_num = input_size, frame_num
        self.bottleneck_token_num = N = bottleneck_token_num
        self.temporal_patch_size, self.patch_size = temporal_patch_size, patch_size
        self.decoder_temporal_patch_size, self.decoder_patch_size = (
            decoder_temporal_patch_size,
            decoder_patch_size,
        )
        self.encoder_hidden_size = De = int(encoder_hidden_size)
        self.decoder_hidden_size = Dd = int(decoder_hidden_size)
        self.latent_pe_scale_factor, self.query_init_std = latent_pe_scale_factor, query_init_std
        self.flags = dict(
            learned_encoder_patch_pe=learned_encoder_patch_pe,
            learned_encoder_latent_query_embed=learned_encoder_latent_query_embed,
            learned_decoder_latent_pe=learned_decoder_latent_pe,
            learned_decoder_patch_query_embed=learned_decoder_patch_query_embed,
            encoder_query_gaussian_init=encoder_query_gaussian_init,
        )

        self.x_embedder = PatchEmbed(input_size, frame_num, patch_size, temporal_patch_size, in_channels, De)
        self.token_t = tt = self.x_embedder.num_temporal_patches
        self.token_h = self.token_w = th = input_size // patch_size
        self.video_token_num = Nv = tt * th * th
        self.decoder_token_t = dt = frame_num // decoder_temporal_patch_size
        self.decoder_token_h = self.decoder_token_w = dh = input_size // decoder_patch_size
        self.recon_video_token_num = Nr = dt * dh * dh

        def param(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(*shape))

        if learned_encoder_patch_pe:  # LARP's names, `encode_w_embed` included
            self.encoder_h_embed, self.encode_w_embed = param(1, 1, th, 1, De), param(1, 1, 1, th, De)
            self.encoder_t_embed = param(1, tt, 1, 1, De)
        else:
            self.register_buffer("encoder_patch_pe", torch.zeros(1, Nv, De))
        if use_encoder_patch_token_type_embed:
            self.encoder_patch_token_type_embed = param(1, 1, De)
        if learned_encoder_latent_query_embed:
            self.encoder_latent_query_embed = param(N, De)
        else:
            self.register_buffer("encoder_latent_query_embed", torch.zeros(N, De))
        if use_encoder_latent_query_token_type_embed:
            self.encoder_latent_query_token_type_embed = param(1, 1, De)
        if learned_decoder_latent_pe:
            self.decoder_latent_pe = param(1, N, Dd)
        else:
            self.register_buffer("decoder_latent_pe", torch.zeros(1, N, Dd))
        if use_decoder_latent_token_type_embed:
            self.decoder_latent_token_type_embed = param(1, 1, Dd)
        if learned_decoder_patch_query_embed:
            self.decoder_h_embed, self.decoder_w_embed = param(1, 1, dh, 1, Dd), param(1, 1, 1, dh, Dd)
            self.decoder_t_embed = param(1, dt, 1, 1, Dd)
        else:
            self.register_buffer("decoder_patch_query_embed", torch.zeros(1, Nr, Dd))
        if use_decoder_patch_query_token_type_embed:
            self.decoder_patch_query_token_type_embed = param(1, 1, Dd)

        self.encoder = TransformerEncoderParallel(De, encoder_depth, int(encoder_num_heads), ln_eps)
        self.decoder = TransformerEncoderParallel(Dd, decoder_depth, int(decoder_num_heads), ln_eps)
        if bottleneck.get("name", "bottleneck") != "bottleneck":
            raise ConfigError(f"bottleneck {bottleneck.get('name')!r}: videxp's LARP has 'bottleneck' only")
        bargs = copy.deepcopy(dict(bottleneck["args"]))
        self.bottleneck_dim = bargs["bottleneck_dim"]
        self.bottleneck = Bottleneck(**{**bargs, "token_nums": N, "input_dim": De, "output_dim": Dd})
        self.codebook_size = self.bottleneck.regularizer.codebook_size
        self.final_layer = OutputLayer(Dd, decoder_temporal_patch_size, decoder_patch_size, self.out_channels)

        spec = dict(prior_model or {})
        self.prior_model = (
            make_prior(spec, self.bottleneck_dim, self.codebook_size, prior_attn_dropout_in_eval)
            if build_prior
            else None
        )
        self.prior_n_rounds = spec.get("n_rounds", 1)
        self.prior_no_grad_before_last_round = spec.get("no_grad_before_last_round", False)
        self.prior_avg_loss_over_rounds = spec.get("avg_loss_over_rounds", True)
        self.use_mix_ss = spec.get("use_mix_ss", False)
        self.mix_ss_max_ratio = spec.get("mix_ss_max_ratio", 0.5)
        self.mix_ss_peak_steps_ratio = spec.get("mix_ss_peak_steps_ratio", 0.3)
        self.prior_latent_ce_temperature = spec.get("latent_ce_temperature", 1.0)
        self.initialize_weights()

    # --------------------------------------------------------------- setup
    def initialize_weights(self) -> None:
        """Fresh-training init as LARP's: xavier Linears (the prior's too), sin-cos position tables, gaussian
        latent queries, zero output layer. Checkpoints overwrite all of it. Skipped on the meta device."""
        if self.final_layer.linear.weight.is_meta:
            return
        xavier_linears(self)
        f, De, Dd, N = (
            self.flags,
            self.encoder_hidden_size,
            self.decoder_hidden_size,
            self.bottleneck_token_num,
        )
        scale = self.latent_pe_scale_factor
        with torch.no_grad():
            if f["learned_encoder_patch_pe"]:
                for p, n in ((self.encoder_h_embed, self.token_h), (self.encode_w_embed, self.token_w)):
                    p.copy_(sincos_1d(De, torch.arange(n)).reshape_as(p))
                self.encoder_t_embed.copy_(
                    sincos_1d(De, torch.arange(self.token_t)).reshape_as(self.encoder_t_embed)
                )
            else:
                self.encoder_patch_pe.copy_(
                    sincos_3d(De, self.token_h, self.token_t).view_as(self.encoder_patch_pe)
                )
            if f["learned_encoder_latent_query_embed"] and f["encoder_query_gaussian_init"]:
                query = torch.randn(N, De) * self.query_init_std
            elif f["learned_encoder_latent_query_embed"]:
                query = sincos_1d(De, torch.arange(N))
            else:
                query = sincos_1d(De, torch.arange(N), scale)
            self.encoder_latent_query_embed.copy_(query)
            if f["learned_decoder_latent_pe"]:
                self.decoder_latent_pe.copy_(torch.randn(1, N, Dd) * 0.02)
            else:
                self.decoder_latent_pe.copy_(sincos_1d(Dd, torch.arange(N), scale).view(1, N, Dd))
            if f["learned_decoder_patch_query_embed"]:
                for p, n in (
                    (self.decoder_h_embed, self.decoder_token_h),
                    (self.decoder_w_embed, self.decoder_token_w),
                ):
                    p.copy_(sincos_1d(Dd, torch.arange(n)).reshape_as(p))
                self.decoder_t_embed.copy_(
                    sincos_1d(Dd, torch.arange(self.decoder_token_t)).reshape_as(self.decoder_t_embed)
                )
            else:
                table = sincos_3d(Dd, self.decoder_token_h, self.decoder_token_t)
                self.decoder_patch_query_embed.copy_(table.view_as(self.decoder_patch_query_embed))
            for name in (
                "encoder_patch_token_type_embed",
                "encoder_latent_query_token_type_embed",
                "decoder_latent_token_type_embed",
                "decoder_patch_query_token_type_embed",
            ):
                if hasattr(self, name):
                    getattr(self, name).copy_(torch.randn(1, 1, getattr(self, name).shape[-1]) * 0.02)
            w = self.x_embedder.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(self.x_embedder.proj.bias)
            nn.init.zeros_(self.final_layer.linear.weight)
            nn.init.zeros_(self.final_layer.linear.bias)

    def set_vq_eval_deterministic(self, deterministic: bool = True) -> None:
        """Argmax token ids in eval mode (True); False restores LARP's default of sampling them."""
        self.bottleneck.regularizer.set_eval_deterministic(deterministic)

    @property
    def ids_deterministic(self) -> bool:
        """Whether encoding in eval mode gives the same ids every call: an argmin VQ, or a stochastic one set
        eval-deterministic."""
        vq = self.bottleneck.regularizer
        return not vq.stochastic or bool(vq.eval_deterministic)

    @property
    def device(self) -> torch.device:
        return self.final_layer.linear.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.final_layer.linear.weight.dtype

    def get_last_layer(self) -> torch.Tensor:
        return self.final_layer.linear.weight

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The decoder side (decoder, final layer, learned decoder tables), as LARP groups them."""
        params = [*self.decoder.parameters(), *self.final_layer.parameters()]
        if self.flags["learned_decoder_patch_query_embed"]:
            params += [self.decoder_h_embed, self.decoder_w_embed, self.decoder_t_embed]
        if self.flags["learned_decoder_latent_pe"]:
            params.append(self.decoder_latent_pe)
        return params

    def others_parameters(self) -> list[nn.Parameter]:
        dec = {id(p) for p in self.decoder_parameters()}
        return [p for p in self.parameters() if id(p) not in dec]

    # --------------------------------------------------------------- tables
    def _with_type(self, table: torch.Tensor, name: str) -> torch.Tensor:
        return table + getattr(self, name) if hasattr(self, name) else table

    def encoder_patch_pe_table(self) -> torch.Tensor:  # [1, Nv, De]
        if self.flags["learned_encoder_patch_pe"]:
            pe = self.encoder_h_embed + self.encode_w_embed + self.encoder_t_embed  # [1, t, h, w, De]
            pe = pe.reshape(1, self.video_token_num, self.encoder_hidden_size)
        else:
            pe = self.encoder_patch_pe
        return self._with_type(pe, "encoder_patch_token_type_embed")

    def latent_queries(self) -> torch.Tensor:  # [1, N, De]
        return self._with_type(
            self.encoder_latent_query_embed.unsqueeze(0), "encoder_latent_query_token_type_embed"
        )

    def decoder_latent_pe_table(self) -> torch.Tensor:  # [1, N, Dd]
        return self._with_type(self.decoder_latent_pe, "decoder_latent_token_type_embed")

    def decoder_patch_queries(self) -> torch.Tensor:  # [1, Nr, Dd]
        if self.flags["learned_decoder_patch_query_embed"]:
            q = self.decoder_h_embed + self.decoder_w_embed + self.decoder_t_embed  # [1, t, h, w, Dd]
            q = q.reshape(1, self.recon_video_token_num, self.decoder_hidden_size)
        else:
            q = self.decoder_patch_query_embed
        return self._with_type(q, "decoder_patch_query_token_type_embed")

    # --------------------------------------------------------------- encode / decode
    def encode(self, video: torch.Tensor, generator: Generators = None) -> dict[str, Any]:
        """video [B, 3, frame_num, input_size, input_size] in [0, 1] -> LARP's dict: `encoded` [B, N, Dd]
        (what decode takes), `bottleneck_rep` [B, N] int64 ids, projected / unregularized / regularized z
        [B, N, d], `emb` [K, d], the VQ losses, input norms. `generator`: the VQ's sampling RNG (one, or one
        per video); unused when the VQ is eval-deterministic."""
        return self._encode(video, generator, eval_slice=False)

    def encode_eval(self, video: torch.Tensor, generator: Generators = None) -> dict[str, Any]:
        """encode, plus `num_x_tokens` (LARP slices the patch PE to the tokens present)."""
        return self._encode(video, generator, eval_slice=True)

    def _encode(self, video: torch.Tensor, generator: Generators, eval_slice: bool) -> dict[str, Any]:
        x = self.x_embedder(video.to(self.x_embedder.proj.weight.dtype))  # [B, Nv, De]
        n = x.shape[1]
        x = x + self.encoder_patch_pe_table()[:, :n]
        q = self.latent_queries().expand(x.shape[0], -1, -1)  # [B, N, De]
        out = self.bottleneck(self.encoder(x, q), generator)  # encoder -> [B, N, De]
        result = {"encoded": out.pop("output"), **out}
        if eval_slice:
            result["num_x_tokens"] = n
        return result

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder input z [B, N, Dd] -> video [B, 3, T, S, S] (unclamped; LARP's pixels are in [0, 1])."""
        return self.decode_eval(z)

    def decode_eval(self, z: torch.Tensor, num_x_tokens: int | None = None) -> torch.Tensor:
        """decode; with `num_x_tokens` only the first num_x_tokens patch queries (whole frames) decode."""
        z = z + self.decoder_latent_pe_table()  # [B, N, Dd]
        q = self.decoder_patch_queries().expand(z.shape[0], -1, -1)  # [B, Nr, Dd]
        if num_x_tokens is not None:
            q = q[:, :num_x_tokens]
        return self.unpatchify(self.final_layer(self.decoder(z, q)))  # decoder -> [B, Nr, Dd]

    def decode_from_bottleneck(self, bottleneck_rep: torch.Tensor) -> torch.Tensor:
        """Token ids [B, N] -> video [B, 3, T, S, S] (what LARP's sample.py decodes AR samples with)."""
        return self.decode(self.bottleneck.decode(bottleneck_rep))

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, t*h*w, Pt*P*P*C] (channel ((pt*P + p1)*P + p2)*C + c) -> [B, C, t*Pt, h*P, w*P], with the
        decoder's patch sizes (LARP uses the encoder's here; every LARP config has them equal)."""
        pt, p, h, c = (
            self.decoder_temporal_patch_size,
            self.decoder_patch_size,
            self.decoder_token_h,
            self.out_channels,
        )
        B, n = x.shape[:2]
        t = n // (h * h)
        x = x.reshape(B, t, h, h, pt, p, p, c).permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, c, t, pt, h, p1, w, p2]
        return x.reshape(B, c, t * pt, h * p, h * p)

    # --------------------------------------------------------------- training: reconstruction + prior loss
    def get_emb(self) -> torch.Tensor:
        """The l2-normalised codebook [K, d], float32, detached."""
        return self.bottleneck.regularizer.get_emb().detach()

    def calculate_logits_and_ar_pred_cont(
        self, prior_model_output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior prediction [B, N, d] -> (logits [B, N-1, K] = pred . codebook / latent_ce_temperature for
        positions 1.., the prediction itself)."""
        logits = F.linear(prior_model_output.float(), self.get_emb())[:, 1:]  # [B, N-1, K]
        return (logits / self.prior_latent_ce_temperature).contiguous(), prior_model_output

    def forward(
        self,
        video: torch.Tensor,
        global_step: int | None = None,
        max_steps: int | None = None,
        generator: Generators = None,
    ) -> dict[str, Any]:
        """Training pass: `pred_frames` [B, 3, T, S, S], encode's dict and, with a prior, `loss_latent_ce` and
        `prior_top1_acc` / `prior_top5_acc`. Scheduled sampling (use_mix_ss) needs global_step / max_steps."""
        enc = self.encode(video, generator)
        out = {"pred_frames": self.decode(enc["encoded"]).contiguous(), **enc}
        if self.prior_model is not None:
            out.update(self.prior_loss(enc, global_step, max_steps))
        return out

    def prior_loss(
        self, enc: dict[str, Any], global_step: int | None = None, max_steps: int | None = None
    ) -> dict:
        """Prior cross-entropy of the ids given the quantised latents, over the scheduled-sampling rounds."""
        labels = enc["bottleneck_rep"][:, 1:]  # [B, N-1]
        logits = self._prior_rounds(enc["regularized_z"], global_step, max_steps)  # [R, B, N-1, K]
        targets = labels.unsqueeze(0).expand(logits.shape[0], -1, -1)
        loss = F.cross_entropy(logits.reshape(-1, self.codebook_size), targets.reshape(-1))
        top5 = logits[0].topk(min(5, self.codebook_size), dim=-1).indices  # [B, N-1, 5]
        hits = top5 == labels.unsqueeze(-1)
        return {
            "loss_latent_ce": loss,
            "prior_top1_acc": hits[..., 0].float().mean(),
            "prior_top5_acc": hits.any(-1).float().mean(),
        }

    def _prior_rounds(self, zq: torch.Tensor, global_step: int | None, max_steps: int | None) -> torch.Tensor:
        B, N, d = zq.shape
        if self.use_mix_ss:
            if global_step is None or max_steps is None:
                raise ValueError(
                    "the prior's scheduled sampling (use_mix_ss) needs global_step and max_steps"
                )
            ratio = min(
                global_step / (max_steps * self.mix_ss_peak_steps_ratio) * self.mix_ss_max_ratio,
                self.mix_ss_max_ratio,
            )
        else:
            ratio = 1.0
        mask = (torch.rand(B, N - 1, 1, device=zq.device) < ratio).expand(-1, -1, d)  # [B, N-1, d]
        rounds, inp = [], zq
        for i in range(self.prior_n_rounds):
            last = i == self.prior_n_rounds - 1
            if self.prior_no_grad_before_last_round and not last:
                self.prior_model.requires_grad_(False)  # as LARP (not torch.no_grad, pytorch#112583)
                try:
                    logits, _ = self.calculate_logits_and_ar_pred_cont(
                        self.prior_model.ar_predict(inp.detach())
                    )
                finally:
                    self.prior_model.requires_grad_(True)
            else:
                logits, _ = self.calculate_logits_and_ar_pred_cont(self.prior_model.ar_predict(inp))
                rounds.append(logits)
            if not last:  # feed sampled codebook entries where the mask says so
                probs = F.softmax(logits.float(), dim=-1).reshape(-1, self.codebook_size)
                ids = multinomial_rows(probs, None, B).view(B, N - 1)
                inp = torch.cat(
                    [zq[:, :1], torch.where(mask, F.embedding(ids, self.get_emb()), zq[:, 1:])], dim=1
                )
        return torch.stack(rounds if self.prior_avg_loss_over_rounds else rounds[-1:])  # [R, B, N-1, K]

    # --------------------------------------------------------------- files
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path = "hywang66/LARP-L-long-tokenizer",
        revision: str | None = None,
        *,
        with_prior: bool | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        config: dict[str, Any] | None = None,
    ) -> LARPTokenizer:
        """A tokenizer from a hub id (config.json + model.safetensors, downloaded or read from the cache;
        offline: the cache only), a local folder holding both, or a weight file (`config`, else a config.json
        beside it). Strict load; eval mode; the VQ keeps LARP's default (sampling) until
        `set_vq_eval_deterministic(True)`. `with_prior`: None builds the prior exactly when the file has
        `prior_model.*` keys; False drops them; True requires them."""
        cfg, sd, source = hub.read_checkpoint(path_or_id, "LARP tokenizer", revision, config)
        hub.check_config(cfg, inspect.signature(cls).parameters, source, "LARPTokenizer")
        has_prior = any(k.startswith("prior_model.") for k in sd)
        if with_prior is None:
            with_prior = has_prior
        elif not with_prior:
            sd = {k: v for k, v in sd.items() if not k.startswith("prior_model.")}
        cfg["build_prior"] = bool(with_prior) and not _is_none(dict(cfg.get("prior_model") or {}).get("name"))
        return hub.build_strict(lambda: cls(**cfg), sd, source, "the LARP tokenizer", device, dtype)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write config.json (LARP's constructor keywords; videxp options only when not the default) and
        model.safetensors (no prior keys when built without the prior) to `folder`; returns the folder."""
        extra = {k: v for k, v in self.options.items() if k != "build_prior" and v != VIDEXP_OPTIONS[k]}
        return hub.write_checkpoint(folder, {**self.config, **extra}, self.state_dict())
