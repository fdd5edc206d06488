"""Open-Sora v1.3 behind the generator request: observed head frames in, the following chunk out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from videxp.inference.generator import Capabilities, Generator, check_request
from videxp.inference.strategies import Step
from videxp.models.diffusers_common import merge_settings, resize_frames, row_prompts
from videxp.models.opensora import rflow
from videxp.models.opensora.conditioning import ConditionPlan, condition_tensors, plan_head_call
from videxp.models.opensora.stdit3 import STDiT3
from videxp.models.opensora.text import T5TextEncoder
from videxp.models.opensora.vae import OpenSoraVAE
from videxp.utils.seeding import randn_rows, row_generators

log = logging.getLogger(__name__)

MECHANISMS = ("mask_index", "x_mask")  # v1.3 i2v / v2v conditioning | v1.2 per-frame edit ratios
DEFAULT_SAMPLING = {
    **rflow.RFlowSettings().to_dict(),
    "mechanism": "mask_index",  # how observed frames condition: mask_index (v1.3) | x_mask (v1.2 style)
    "prompt": None,  # used for rows whose dataset prompt is empty
    "resolution": None,  # 360p | 720p (with aspect_ratio) | null: height / width, or the dataset size
    "aspect_ratio": "9:16",  # H:W key of Open-Sora's resolution tables
    "height": None,  # model frame size (multiples of 8); null = the dataset frame size
    "width": None,
}
# Open-Sora's bucket sizes (opensora/datasets/aspect.py), H x W; "9:16" is landscape
RESOLUTIONS = {
    "360p": {"9:16": (360, 640), "1:1": (480, 480)},
    "720p": {"9:16": (720, 1280), "1:1": (960, 960)},
}


def model_frame_size(
    settings: dict[str, Any], H: int, W: int, where: str = "model.sampling"
) -> tuple[int, int]:
    """The frame size the networks run at: a `resolution` preset, else `height` x `width`, else H x W.
    Sides must be multiples of 8 (the VAE; STDiT3 pads odd latent sizes to its 2 x 2 patches)."""
    res, ar = settings.get("resolution"), settings.get("aspect_ratio", "9:16")
    if res is not None:
        if settings.get("height") is not None or settings.get("width") is not None:
            raise ValueError(f"{where}: set either resolution or height/width, not both")
        if res not in RESOLUTIONS or ar not in RESOLUTIONS[res]:
            known = {k: sorted(v) for k, v in RESOLUTIONS.items()}
            raise ValueError(f"{where}: unknown resolution {res!r} / aspect_ratio {ar!r}; known: {known}")
        return RESOLUTIONS[res][ar]
    h, w = int(settings.get("height") or H), int(settings.get("width") or W)
    if h % 8 or w % 8 or h <= 0 or w <= 0:
        raise ValueError(
            f"Open-Sora needs frame sides that are multiples of 8 (VAE); got {h}x{w} "
            f"(set {where}.height/width or {where}.resolution)"
        )
    return h, w


class OpenSoraGenerator(Generator):
    """STDiT3 + the v1.3 VAE + T5: continues the observed head of a clip (cond_type v2v_head).

    Request: `observed` = [a, ..., a+n-1] (n >= 0 consecutive frames), `target` = [a+n, ..., a+n+m-1]. The
    n + m frames are padded to the next legal length (1 or 16k+1; 45 -> 49), the observed frames are
    encoded (the unobserved rest of the clip filled with the last observed frame, since a latent's value
    depends on its whole 17-frame micro-chunk), and the call is conditioned on the leading latents whose
    frame slots hold only observed frames (`mask_index`; 8 observed frames -> latents 0, 1 = frames 0..4),
    never on a latent that also stands for a frame to generate. Rectified-flow sampling with Open-Sora's
    guidance; the decoded frames after the observed ones are returned, the padding trimmed. Each call's
    plan (padding, conditioned latents and the pixel frames they cover) is in `describe()` once the
    sampling loop handed over its schedule (`accept_schedule`).

    Frames are resized to `height` x `width` for the model and back afterwards; each row's noise comes
    from its own seed. Longer videos: inference=autoreg (each call conditions on its latest frames).
    """

    def __init__(
        self,
        stdit: STDiT3,
        vae: OpenSoraVAE,
        text_encoder: T5TextEncoder,
        sampling: dict[str, Any] | None = None,
        max_frames: int = 113,
        fps: float = 24.0,
        describe_extra: dict[str, Any] | None = None,
    ):
        s = self.sampling = merge_settings(sampling, DEFAULT_SAMPLING, "sampling")
        model_frame_size(s, 8, 8)  # a bad preset or size fails here, not at the first call
        self.settings = rflow.RFlowSettings(**{k: s[k] for k in rflow.RFlowSettings().to_dict()})
        if s["mechanism"] not in MECHANISMS:
            raise ValueError(f"model.sampling.mechanism must be one of {MECHANISMS}, got {s['mechanism']!r}")
        self.stdit, self.vae, self.text_encoder = stdit, vae, text_encoder
        self.micro = vae.config.micro_frame_size
        if self.micro is None:
            raise ValueError(
                "the Open-Sora generator needs the VAE's micro-frame chunking (micro_frame_size)"
            )
        vae.check_num_frames(int(max_frames))
        self.fps = float(fps)
        self.describe_extra = dict(describe_extra or {})
        self.capabilities = Capabilities(
            max_frames=int(max_frames),
            index_patterns=("head_then_chunk",),
            strategies=("autoreg",),
            frame_rule=f"{self.micro - 1}k+1 (shorter calls are padded and trimmed)",
            fps=self.fps,
            conditioning=("prompt", "head_frames"),
        )
        self.calls: list[dict[str, Any]] | None = None  # the run's calls, from accept_schedule

    # ----------------------------------------------------------------- planning
    def plan(self, num_observed: int, num_target: int) -> ConditionPlan:
        return plan_head_call(num_observed, num_target, self.capabilities.max_frames, self.micro)

    def accept_schedule(self, steps: Sequence[Step], *, video_length: int, obs_length: int) -> None:
        """Plan every distinct call of the run (raises for one longer than max_frames) and record the
        conditioning of each for the manifest (`describe()["effective_conditioning"]`)."""
        calls: dict[tuple[int, int], dict[str, Any]] = {}
        for observed, target in steps:
            key = (len(observed), len(target))
            if key not in calls:
                calls[key] = {**self.plan(*key).to_dict(), "calls": 0}
            calls[key]["calls"] += 1
        self.calls = list(calls.values())

    # ----------------------------------------------------------------- the request
    @staticmethod
    def _check_request(frames, observed, target, seeds) -> None:
        check_request(frames, observed, target, seeds)
        start = observed[0] if observed else target[0]
        if list(observed) + list(target) != list(range(start, start + len(observed) + len(target))):
            raise ValueError(
                "Open-Sora continues a clip: observed must be consecutive frames and target the frames right "
                f"after them (inference=autoreg); got observed {observed}, target {target}"
            )

    def _text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Caption features y [B, 1, L, D], mask [B, L] and the null caption [B, 1, L, D]."""
        y, mask = self.text_encoder(prompts)
        table = self.stdit.y_embedder.y_embedding  # [L, D] learned null caption
        if table.shape[-2:] != y.shape[-2:]:
            raise ValueError(
                f"text encoder gives {tuple(y.shape[-2:])} token features, the STDiT3's null caption "
                f"is {tuple(table.shape)} (model_max_length, caption_channels)"
            )
        return y, mask, table[None, None].expand(y.shape[0], 1, -1, -1)

    def reference_latents(
        self, frames: torch.Tensor, p: ConditionPlan, size: tuple[int, int]
    ) -> torch.Tensor:
        """Latents [B, 16, t, h/8, w/8] holding the observed frames' encoding on the conditioned latents (zero
        elsewhere). Only the micro-chunks holding conditioned latents are encoded (chunks are encoded
        independently, so their latents equal those of the whole clip); the frames of those chunks after
        the observed ones repeat the last observed frame (a latent's value depends on its whole chunk)."""
        B = frames.shape[0]
        h, w = size
        f = self.vae.config.space_factor
        ref = frames.new_zeros(
            B, self.vae.config.z_channels, p.latent_frames, h // f, w // f, dtype=torch.float32
        )
        k = len(p.conditioned_latents)
        if not k:
            return ref
        per_chunk = self.vae.latent_frames(self.micro)  # 5 latents per 17-frame chunk
        n_frames = (self.micro - 1) * -(-k // per_chunk) + 1  # whole chunks up to the last conditioned latent
        head = resize_frames(frames[:, :n_frames].float(), (h, w)).expand(
            -1, -1, 3, -1, -1
        )  # [B, <=n, 3, h, w]
        fill = head[:, -1:].expand(-1, n_frames - head.shape[1], -1, -1, -1)
        clip = torch.cat([head, fill], 1).permute(0, 2, 1, 3, 4)  # [B, 3, n_frames, h, w]
        vae_dtype = next(self.vae.parameters()).dtype
        enc = self.vae.encode(clip.to(vae_dtype), sample=False).float()  # [B, 16, 5 * chunks, h/8, w/8]
        ref[:, :, :k] = enc[:, :, :k]
        return ref

    @torch.no_grad()
    def generate(self, frames, observed, target, cond, seeds):
        self._check_request(frames, observed, target, seeds)
        B, n_obs, C, H, W = frames.shape  # frames: [B, n_obs, C, H, W] in [-1, 1]
        if C not in (1, 3):
            raise ValueError(f"Open-Sora makes RGB frames; cannot work with {C} channels")
        p = self.plan(n_obs, len(target))
        h, w = model_frame_size(self.sampling, H, W)
        dev = next(self.stdit.parameters()).device

        ref = self.reference_latents(frames.to(dev), p, (h, w))  # [B, 16, t, h/8, w/8]
        index = p.conditioned_latents
        cond_lat, cond_mask = condition_tensors(ref, index)
        gens = row_generators(seeds)  # row b: its initial noise, then its SDEdit noise of every step
        noise = randn_rows(gens, ref.shape[1:], device=dev)  # [B, 16, t, h', w']

        y, y_mask, y_null = self._text(row_prompts(cond, B, self.sampling["prompt"]))
        size = dict(fps=self.fps, height=float(h), width=float(w))

        x_mask_path = self.sampling["mechanism"] == "x_mask"

        def velocity(z: torch.Tensor, t: torch.Tensor, mode: str, x_mask=None) -> torch.Tensor:
            text = y if mode == "cond" else y_null
            kw: dict[str, Any] = {"x_mask": x_mask}
            if index and not x_mask_path:  # uncond_all keeps the mask but zeroes the condition (Open-Sora)
                c = torch.zeros_like(cond_lat) if mode == "uncond_all" else cond_lat
                kw = dict(cond=c, cond_mask=cond_mask, mask_index=index, y_null=y_null)
            out = self.stdit(z, t, text, mask=y_mask, **size, **kw)  # [B, 2 * 16 (sigma), t, h', w']
            return out[:, : z.shape[1]].float()

        edit_mask = None
        if x_mask_path and index:  # edit ratio 0 on the conditioned latents, 1 elsewhere
            edit_mask = torch.ones(B, ref.shape[2], device=dev)
            edit_mask[:, index] = 0
        z = rflow.sample(
            velocity,
            noise,
            self.settings,
            h,
            w,
            p.model_frames,
            ref,
            None if x_mask_path else index,
            generators=gens,
            edit_mask=edit_mask,
        )  # [B, 16, t, h', w']
        vae_dtype = next(self.vae.parameters()).dtype
        video = self.vae.decode(z.to(vae_dtype), num_frames=p.model_frames).float()  # [B, 3, T, h, w]
        video = video.permute(0, 2, 1, 3, 4)[:, n_obs : n_obs + len(target)]  # [B, m, 3, h, w]
        video = resize_frames(video, (H, W))  # [B, m, 3, H, W]
        if C == 1:
            video = video.mean(2, keepdim=True)
        return video.clamp(-1, 1).to(frames.device)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            **self.describe_extra,
            "sampler": "rectified flow (Open-Sora v1.3), Euler, v = x0 - noise",
            "sampling": self.sampling,
            "cond_type": "v2v_head",
            "mechanism": self.sampling["mechanism"],
            "condition_fill": "unobserved frames of the conditioning chunk repeat the last observed frame",
            "effective_conditioning": self.calls,  # per distinct call: padding, conditioned latents / frames
            "fps": self.fps,
        }
