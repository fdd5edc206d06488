"""LARP behind the generator request: a class label (or, for a frame-prediction AR, observed frames) in."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from videxp.errors import ConfigError
from videxp.inference.generator import Capabilities, Generator, check_request
from videxp.inference.strategies import Step
from videxp.models.diffusers_common import merge_settings, resize_frames
from videxp.models.larp.ar import LARPAR
from videxp.models.larp.tokenizer import LARPTokenizer
from videxp.utils.seeding import derive_seed, row_generators
from videxp.weights.files import parse_dtype

DEFAULT_SAMPLING = {  # LARP's sample.py options (its UCF101 gFVD run: cfg_scale 1.25)
    "cfg_scale": 1.25,  # classifier-free guidance on the class; 1 = none (frame prediction: must be 1)
    "cfg_interval": -1,  # guide only the first cfg_interval + 1 decode steps; -1 = every step
    "temperature": 1.0,
    "top_k": 0,  # 0 = no top-k filter
    "top_p": 1.0,  # 1 = no nucleus filter
    "dtype": "bfloat16",  # the AR's dtype while sampling (LARP's --dtype)
}
VQ_STREAM = (
    1  # derive_seed(row seed, VQ_STREAM): a row's VQ draws when encoding observed frames stochastically
)


def rows_labels(cond: dict[str, Any], rows: int) -> torch.Tensor:
    """cond["label"] as [rows] int64; a row without a label (None or negative) gets -1: the null class."""
    given = cond.get("label")
    if given is None:
        return torch.full((rows,), -1, dtype=torch.int64)
    labels = [-1 if v is None else int(v) for v in (given.tolist() if torch.is_tensor(given) else given)]
    if len(labels) != rows:
        raise ValueError(f"cond['label'] holds {len(labels)} labels for {rows} rows")
    return torch.tensor([max(v, -1) for v in labels], dtype=torch.int64)


def sequence_nll(ar: LARPAR, seq: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cross-entropy of each sampled sequence seq [B, N] given its condition (LARP's sample.py
    records the batch mean of this loss): [B] float32 nats per token."""
    logits, _ = ar(idx=seq[:, :-1].long(), cond_idx=cond)  # [B, >=N, V]
    logits = logits[:, -seq.shape[1] :].float()  # [B, N, V]: position i predicts seq[:, i]
    return F.cross_entropy(logits.transpose(1, 2), seq.long(), reduction="none").mean(1)  # [B]


class LARPGenerator(Generator):
    """LARP_AR samples tokenizer ids, the tokenizer decodes them to a frame_num x S x S clip (LARP: 16 x 128).

    Class-conditional (the default AR): `observed` is empty, `target` the first m <= frame_num frames of a
    clip; the class comes from cond["label"] (rows without one sample the null class), guided with
    `cfg_scale`. Frame prediction (an AR with `frame_prediction=True`): the n observed frames, padded to
    frame_num with the last one (LARP's repeat_to_m_frames), are encoded to ids; [ids, separator] condition
    the AR, and the frames after the observed ones of the decoded clip are returned. Frames are resized to
    and from S x S.

    Each row draws from its own seed (torch.Generator per row), so a sample does not depend on its batch or
    shard. The teacher-forced NLL of each sampled sequence is kept per row (`pop_stats`).
    """

    def __init__(
        self,
        tokenizer: LARPTokenizer,
        ar: LARPAR,
        sampling: dict[str, Any] | None = None,
        tokenizer_dtype: torch.dtype | str = torch.float32,
        describe_extra: dict[str, Any] | None = None,
    ):
        self.sampling = s = merge_settings(sampling, DEFAULT_SAMPLING, "sampling")
        self.ar_dtype, self.tokenizer_dtype = parse_dtype(s["dtype"]), parse_dtype(tokenizer_dtype)
        if s["temperature"] <= 0 or not 0 < s["top_p"] <= 1 or s["top_k"] < 0:
            raise ConfigError(f"model.sampling: need temperature > 0, 0 < top_p <= 1, top_k >= 0; got {s}")
        self.frame_prediction = bool(ar.frame_prediction)
        if self.frame_prediction and float(s["cfg_scale"]) != 1.0:
            raise ConfigError(
                "this LARP AR is a frame-prediction model: it samples without classifier-free guidance; "
                f"set model.sampling.cfg_scale=1.0 (got {s['cfg_scale']})"
            )
        if ar.vocab_size != tokenizer.codebook_size or ar.max_seq_length != tokenizer.bottleneck_token_num:
            raise ConfigError(
                f"the AR (vocab {ar.vocab_size}, {ar.max_seq_length} tokens) does not fit the tokenizer "
                f"(codebook {tokenizer.codebook_size}, {tokenizer.bottleneck_token_num} tokens)"
            )
        # sampling copies in the sampling dtypes; the module's (trainable) networks stay as they are
        self.ar = ar if ar.dtype == self.ar_dtype else copy.deepcopy(ar).to(self.ar_dtype)
        self.tokenizer = tokenizer if tokenizer.dtype == self.tokenizer_dtype else copy.deepcopy(tokenizer)
        self.tokenizer.to(self.tokenizer_dtype)
        self.frames, self.size = tokenizer.frame_num, tokenizer.input_size
        self.describe_extra = dict(describe_extra or {})
        self.capabilities = Capabilities(
            max_frames=self.frames,
            index_patterns=("head_then_chunk",),
            strategies=("autoreg",),
            conditioning=("head_frames",) if self.frame_prediction else ("class_label",),
        )
        self._stats: list[list[float]] = []  # per call since the last pop_stats: each row's NLL

    # ----------------------------------------------------------------- the request
    def check_call(self, num_observed: int, num_target: int) -> None:
        """ValueError for a call LARP cannot make: observed frames without a frame-prediction AR, none with
        one, or more than frame_num frames in all."""
        if num_observed and not self.frame_prediction:
            raise ValueError(
                f"this LARP AR is class-conditional: it generates whole clips from a label, without observed "
                f"frames (got {num_observed}); use inference.obs_length=0, or a frame-prediction AR "
                "(frame_prediction=True, e.g. LARP-L-long-AR-FP)"
            )
        if self.frame_prediction and not num_observed:
            raise ValueError(
                "this LARP AR is a frame-prediction model: it needs observed frames (obs_length > 0)"
            )
        if num_observed + num_target > self.frames:
            raise ValueError(
                f"{num_observed} observed + {num_target} target frames exceed LARP's clip of "
                f"{self.frames} frames"
            )

    def accept_schedule(self, steps: Sequence[Step], *, video_length: int, obs_length: int) -> None:
        for observed, target in steps:
            self.check_call(len(observed), len(target))

    @torch.no_grad()
    def generate(self, frames, observed, target, cond, seeds):
        check_request(frames, observed, target, seeds)
        B, n_obs, C, H, W = frames.shape  # frames: [B, n_obs, C, H, W] in [-1, 1]
        self.check_call(n_obs, len(target))
        start = observed[0] if observed else target[0]
        if list(observed) + list(target) != list(range(start, start + n_obs + len(target))):
            raise ValueError(
                "LARP continues a clip: observed must be consecutive frames and target the frames right "
                f"after them (inference=autoreg); got observed {observed}, target {target}"
            )
        dev = self.ar.device
        gens = row_generators(seeds, dev)
        if self.frame_prediction:
            c = self.condition_tokens(frames.to(dev), seeds)  # [B, N + 1]
        else:
            c = rows_labels(cond, B).to(dev)  # [B]
        s = self.sampling
        seq = self.ar.sample(
            c,
            cfg_scale=float(s["cfg_scale"]),
            cfg_interval=int(s["cfg_interval"]),
            temperature=float(s["temperature"]),
            top_k=int(s["top_k"]),
            top_p=float(s["top_p"]),
            generators=gens,
        )  # [B, N] int32
        self._stats.append(sequence_nll(self.ar, seq, c).tolist())
        video = self.tokenizer.decode_from_bottleneck(seq.long()).float().clamp(0, 1)  # [B, 3, T, S, S]
        video = video.permute(0, 2, 1, 3, 4)[:, n_obs : n_obs + len(target)]  # [B, m, 3, S, S]
        video = resize_frames(video, (H, W)) * 2 - 1  # [B, m, 3, H, W] in [-1, 1]
        if C == 1:
            video = video.mean(2, keepdim=True)
        elif C != 3:
            raise ValueError(f"LARP makes RGB frames; cannot work with {C} channels")
        return video.clamp(-1, 1).to(frames.device)

    def condition_tokens(self, frames: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Observed frames [B, n, C, H, W] in [-1, 1] -> [ids of the clip padded with its last frame,
        separator] [B, N + 1] (LARP's predict_frames)."""
        B, n = frames.shape[:2]
        x = resize_frames(frames.float(), (self.size, self.size)).expand(-1, -1, 3, -1, -1)  # [B, n, 3, S, S]
        x = torch.cat([x, x[:, -1:].expand(-1, self.frames - n, -1, -1, -1)], 1)  # [B, T, 3, S, S]
        x = ((x + 1) / 2).permute(0, 2, 1, 3, 4).to(self.tokenizer_dtype)  # [B, 3, T, S, S] in [0, 1]
        vq = row_generators([derive_seed(s, VQ_STREAM) for s in seeds], frames.device)
        ids = self.tokenizer.encode(x, vq)["bottleneck_rep"].long()  # [B, N]
        sep = ids.new_full((B, 1), self.tokenizer.codebook_size)
        return torch.cat([ids, sep], 1)

    def pop_stats(self) -> dict[str, list[float]]:
        """{"nll": per row, the mean NLL of its sampled sequences over the calls since the last pop} (then
        cleared); the calls are the steps of one batch, so each holds the same rows."""
        calls, self._stats = self._stats, []
        if not calls:
            return {}
        return {"nll": [sum(row) / len(row) for row in zip(*calls, strict=True)]}

    def describe(self) -> dict[str, Any]:
        s = self.sampling
        report = {k: self.describe_extra.get(k) for k in ("ar_model", "tokenizer")}
        report.update({k: s[k] for k in ("cfg_scale", "temperature", "top_k", "top_p", "dtype")})
        return {
            **super().describe(),
            **self.describe_extra,
            # fvd_report.csv columns after videxp's, as LARP's sample.py reports a run (scoring/finalise.py)
            "report_columns": ["ar_model", "tokenizer", "num_samples", *list(report)[2:], "nll", "fvd"],
            "report": report,
            "sampler": "LARP_AR token sampling (LARP sample.py), tokenizer decode_from_bottleneck",
            "sampling": self.sampling,
            "mode": "frame_prediction" if self.frame_prediction else "class_conditional",
            "tokenizer_dtype": str(self.tokenizer_dtype).removeprefix("torch."),
            "clip": {"frames": self.frames, "size": self.size},
        }
