"""Wan2.1 image-to-video through diffusers' `WanImageToVideoPipeline`, as a videxp `Generator`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from videxp.inference.generator import Capabilities, Generator, check_request
from videxp.inference.strategies import Step
from videxp.models.diffusers_common import (
    apply_memory_options,
    check_frame_size,
    frames_to_pil,
    merge_settings,
    pipeline_video_to_tensor,
    resize_frames,
    resolve_device,
    row_prompts,
)
from videxp.models.wan.components import TEXT_LEN, tiny_components
from videxp.weights.files import dtype_name, load_component, parse_dtype, resolved_revision

log = logging.getLogger(__name__)

DEFAULT_PRETRAINED = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
SIZES = ("full", "tiny")
FRAME_RULES = ("error", "round_up")  # what to do when a call's frame count is not 4k+1
CONDITIONS = ("first", "first_last")  # first_last needs the FLF2V checkpoint
DEFAULT_DTYPES = {"transformer": "bf16", "text_encoder": "bf16", "image_encoder": "fp32", "vae": "fp32"}
DEFAULT_SAMPLING = {
    "steps": 40,
    "guidance_scale": 5.0,
    "flow_shift": 3.0,
    "negative_prompt": "",
    "prompt": None,
    "height": 480,
    "width": 832,
    "frame_rule": "error",
}


def next_4k1(n: int) -> int:
    """The smallest count 4k+1 >= n."""
    return n if n % 4 == 1 else n + (1 - n) % 4


class WanGenerator(Generator):
    """Wan2.1 I2V: each call conditions on one observed frame and generates the frames right after it.

    Request: `observed` = [i] (the last done frame), `target` = [i+1, ..., i+n]; the pipeline makes
    1 + n frames whose frame 0 re-creates the condition image, and frames 1..n are returned. Counts
    1 + n that are not 4k+1 raise (`frame_rule=error`) or generate the next 4k+1 count and trim
    (`frame_rule=round_up`; the run's calls are in `describe()["effective_frames"]` once the sampling loop
    handed over its schedule, see `accept_schedule`). With `condition=first_last` (FLF2V checkpoint
    only) the request is `observed` = [i, j], `target` = [i+1, ..., j-1]. Longer videos: the `autoreg`
    strategy with `inference.max_frames = inference.step_size + 1` (one observed frame per call).

    Frames are resized to `height` x `width` (multiples of 16; null = the input frame size) for the model
    and the output is resized back to the input frame size (bilinear, antialiased). Each row is its own
    pipeline call with its own `torch.Generator` seeded from `seeds[b]` (the pipeline encodes one
    condition image per call), so a row's result does not depend on the batch.
    """

    @staticmethod
    def config_weights(cfg: dict[str, Any]) -> str | None:
        """Where a model config's weights come from without a checkpoint (None: random, size=tiny)."""
        if cfg.get("size", "full") == "tiny":
            return None
        return f"pretrained {cfg.get('pretrained') or DEFAULT_PRETRAINED}"

    def __init__(
        self,
        size: str = "full",
        pretrained: str = DEFAULT_PRETRAINED,
        revision: str | None = None,
        condition: str = "first",
        dtypes: dict[str, str] | None = None,
        cpu_offload: str = "none",
        vae_tiling: bool = False,
        vae_slicing: bool = False,
        device: str | None = "auto",
        sampling: dict[str, Any] | None = None,
        max_frames: int = 81,
        fps: float = 16.0,
        tiny_seed: int = 0,
    ):
        if size not in SIZES:
            raise ValueError(f"model.size must be one of {SIZES}, got {size!r}")
        if condition not in CONDITIONS:
            raise ValueError(f"model.condition must be one of {CONDITIONS}, got {condition!r}")
        dtypes = merge_settings(dtypes, DEFAULT_DTYPES, "dtypes")
        s = self.sampling = merge_settings(sampling, DEFAULT_SAMPLING, "sampling")
        if s["frame_rule"] not in FRAME_RULES:
            raise ValueError(
                f"model.sampling.frame_rule must be one of {FRAME_RULES}, got {s['frame_rule']!r}"
            )
        check_frame_size(s)
        if max_frames % 4 != 1:
            raise ValueError(
                f"model.max_frames={max_frames} must be 4k+1 (Wan generates 4k+1 frames per call)"
            )
        self.size, self.revision, self.condition = size, revision, condition
        self.pretrained = "tiny (random weights, built offline)" if size == "tiny" else pretrained
        self.dtypes = {k: parse_dtype(v) for k, v in dtypes.items()}
        self.device = resolve_device(device)
        self.cpu_offload, self.vae_tiling, self.vae_slicing = cpu_offload, bool(vae_tiling), bool(vae_slicing)
        self.fps, self.tiny_seed = float(fps), int(tiny_seed)
        self.pipe = self._build_pipeline(pretrained)
        flf2v = self.pipe.transformer.config.get("pos_embed_seq_len") is not None
        if condition == "first_last" and not flf2v:
            raise ValueError(
                f"model.condition=first_last needs an FLF2V checkpoint (transformer with pos_embed_seq_len, "
                f"e.g. Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers); {self.pretrained} is a first-frame I2V model"
            )
        apply_memory_options(
            self.pipe,
            cpu_offload=cpu_offload,
            vae_tiling=self.vae_tiling,
            vae_slicing=self.vae_slicing,
            device=self.device,
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.capabilities = Capabilities(
            max_frames=int(max_frames),
            index_patterns=("first_image_chunk",),
            strategies=("autoreg",) if condition == "first" else None,
            frame_rule="4k+1",
            fps=self.fps,
            conditioning=("first_image", "prompt") + (("last_image",) if condition == "first_last" else ()),
        )
        self.calls: list[dict[str, int]] | None = None  # the run's calls, from accept_schedule

    def generator(self) -> WanGenerator:
        """Itself: the object is already the sampling generator (for callers that ask modules for one)."""
        return self

    # ----------------------------------------------------------------- building
    def _build_pipeline(self, pretrained: str):
        """The pipeline from tiny random components or from `pretrained` (hub id or local folder)."""
        from diffusers import WanImageToVideoPipeline  # deferred: diffusers is a heavy import

        if self.size == "tiny":
            parts = tiny_components(self.tiny_seed)
            for name in ("transformer", "text_encoder", "image_encoder", "vae"):
                if self.dtypes[name] != torch.float32:  # built in float32
                    parts[name] = parts[name].to(self.dtypes[name])
        else:
            from diffusers import (  # deferred: diffusers is a heavy import
                AutoencoderKLWan,
                UniPCMultistepScheduler,
                WanTransformer3DModel,
            )
            from transformers import (  # deferred: heavy import
                AutoTokenizer,
                CLIPImageProcessor,
                CLIPVisionModel,
                UMT5EncoderModel,
            )

            load = {
                "tokenizer": (AutoTokenizer, None),
                "text_encoder": (UMT5EncoderModel, self.dtypes["text_encoder"]),
                "image_processor": (CLIPImageProcessor, None),
                "image_encoder": (CLIPVisionModel, self.dtypes["image_encoder"]),
                "transformer": (WanTransformer3DModel, self.dtypes["transformer"]),
                "vae": (AutoencoderKLWan, self.dtypes["vae"]),
                "scheduler": (UniPCMultistepScheduler, None),
            }
            parts = {
                name: load_component(cls, pretrained, name, dtype, revision=self.revision)
                for name, (cls, dtype) in load.items()
            }
        shift = self.sampling["flow_shift"]
        if shift is not None:
            if "flow_shift" not in parts["scheduler"].config:
                raise ValueError(
                    f"{type(parts['scheduler']).__name__} has no flow_shift; set sampling.flow_shift=null"
                )
            parts["scheduler"] = type(parts["scheduler"]).from_config(
                parts["scheduler"].config, flow_shift=shift
            )
        return WanImageToVideoPipeline(**parts)

    # ----------------------------------------------------------------- frame counts
    def frames_for(self, n_target: int, *, last: bool = False) -> tuple[int, int]:
        """(requested, generated) frames of a call producing `n_target` new frames (+1 or +2 condition
        frames); generated is 4k+1 (equal to requested, or rounded up under frame_rule=round_up)."""
        requested = n_target + (2 if last else 1)
        if requested % 4 == 1:
            return requested, requested
        if last or self.sampling["frame_rule"] == "error":
            why = "first+last calls cannot be trimmed" if last else "model.sampling.frame_rule=error"
            raise ValueError(
                f"Wan generates 4k+1 frames per call; this call needs {requested} ({n_target} targets + "
                f"{requested - n_target} condition) and {why}. Choose inference.step_size so that "
                f"step_size + 1 is 4k+1 (e.g. 4, 8, 16, 80), or set model.sampling.frame_rule=round_up"
            )
        generated = next_4k1(requested)
        if generated > self.capabilities.max_frames:
            raise ValueError(
                f"{requested} frames round up to {generated} > max_frames {self.capabilities.max_frames}"
            )
        return requested, generated

    def accept_schedule(self, steps: Sequence[Step], *, video_length: int, obs_length: int) -> None:
        """Check the frame count of every call of the run (4k+1, or rounded up under frame_rule=round_up)
        and record the distinct calls for the manifest (`describe()["effective_frames"]`)."""
        if obs_length < 1:
            raise ValueError("Wan is image-to-video: inference.obs_length must be >= 1 (the condition frame)")
        calls: dict[int, dict[str, int]] = {}
        for _, target in steps:
            requested, generated = self.frames_for(len(target))
            entry = calls.setdefault(
                len(target),
                {"targets": len(target), "requested": requested, "generated": generated, "calls": 0},
            )
            entry["trimmed"] = generated - requested
            entry["calls"] += 1
        self.calls = sorted(calls.values(), key=lambda e: -e["targets"])

    # ----------------------------------------------------------------- the request
    def _check_request(self, frames, observed, target, seeds) -> bool:
        """Validate the index pattern; True for a first+last request."""
        check_request(frames, observed, target, seeds)
        if self.condition == "first_last" and len(observed) == 2:
            a, b = observed
            if list(target) != list(range(a + 1, b)):
                raise ValueError(f"first+last: targets must be the frames between {a} and {b}, got {target}")
            return True
        if len(observed) != 1:
            raise ValueError(
                f"Wan conditions each call on one frame (the last done one); got observed {observed}. "
                "Use inference=autoreg, inference.max_frames = inference.step_size + 1, obs_length >= 1"
            )
        first = observed[0] + 1
        if list(target) != list(range(first, first + len(target))):
            raise ValueError(
                f"Wan generates the frames right after the observed frame {observed[0]}; got {target}"
            )
        return False

    @torch.no_grad()
    def generate(self, frames, observed, target, cond, seeds):
        last = self._check_request(frames, observed, target, seeds)
        B, _, C, H, W = frames.shape  # frames: [B, T_obs, C, H, W] in [-1, 1]
        h = int(self.sampling["height"] or H)
        w = int(self.sampling["width"] or W)
        if h % 16 or w % 16:
            raise ValueError(
                f"Wan needs height and width multiples of 16; got {h}x{w} (set model.sampling.height/width)"
            )
        requested, generated = self.frames_for(len(target), last=last)
        if generated != requested:
            log.info("Wan: %d frames requested, generating %d (4k+1) and trimming", requested, generated)
        model_frames = resize_frames(frames, (h, w))  # [B, T_obs, C, h, w]
        prompts = row_prompts(cond, B, self.sampling["prompt"])
        s = self.sampling
        outs = []
        for b in range(B):
            images = frames_to_pil(model_frames[b])  # the observed frame(s) of row b
            video = self.pipe(
                image=images[0],
                last_image=images[1] if last else None,
                prompt=prompts[b],  # the pipeline cleans (ftfy), tokenises and pads it to TEXT_LEN tokens
                negative_prompt=s["negative_prompt"] or "",
                height=h,
                width=w,
                num_frames=generated,
                num_inference_steps=int(s["steps"]),
                guidance_scale=float(s["guidance_scale"]),
                generator=torch.Generator(device="cpu").manual_seed(int(seeds[b])),
                output_type="pt",
                max_sequence_length=TEXT_LEN,
            ).frames
            outs.append(pipeline_video_to_tensor(video))  # [1, generated, 3, h, w]
        video = torch.cat(outs)[:, 1 : 1 + len(target)]  # [B, n_target, 3, h, w]: drop the condition frame
        video = resize_frames(video, (H, W))  # [B, n_target, 3, H, W]
        if C == 1:
            video = video.mean(2, keepdim=True)  # [B, n_target, 1, H, W]
        elif C != 3:
            raise ValueError(f"Wan makes RGB frames; cannot return {C} channels")
        return video.clamp(-1, 1).to(frames.device)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model_id": self.pretrained,
            "size": self.size,
            "revision": self.revision,
            "resolved_revision": resolved_revision(self.pretrained, self.revision),  # commit used, when known
            "condition": self.condition,
            "dtypes": {k: dtype_name(v) for k, v in self.dtypes.items()},
            "cpu_offload": self.cpu_offload,
            "vae_tiling": self.vae_tiling,
            "vae_slicing": self.vae_slicing,
            "steps": int(self.sampling["steps"]),
            "guidance_scale": float(self.sampling["guidance_scale"]),
            "flow_shift": self.sampling["flow_shift"],
            "scheduler": type(self.pipe.scheduler).__name__,
            "negative_prompt": self.sampling["negative_prompt"],
            "default_prompt": self.sampling["prompt"],
            "text_len": TEXT_LEN,
            "model_size_hw": [self.sampling["height"], self.sampling["width"]],  # null = input frame size
            "frame_rule": self.sampling["frame_rule"],
            "effective_frames": self.calls,  # per distinct call: targets, requested, generated, trimmed
            "fps": self.fps,
        }
