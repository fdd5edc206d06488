"""FramePack (HunyuanVideoFramepackPipeline) behind the one generator request: one image in, a chunk out."""

from __future__ import annotations

import logging
import math
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
from videxp.models.framepack.components import TINY_PROMPT_TEMPLATE, tiny_components
from videxp.utils.seeding import torch_generator
from videxp.weights.files import dtype_name, load_component, parse_dtype, resolved_revision

log = logging.getLogger(__name__)

SIZES = ("full", "tiny")
VARIANTS = {  # checkpoint -> (transformer hub id, diffusers sampling_type, last image allowed)
    "inverted": ("lllyasviel/FramePackI2V_HY", "inverted_anti_drifting", True),
    "f1": ("lllyasviel/FramePack_F1_I2V_HY_20250503", "vanilla", False),
}
TINY_ID = "tiny (random weights, built offline)"
BASE_ID = "hunyuanvideo-community/HunyuanVideo"  # text encoders, tokenizers, VAE, scheduler
IMAGE_ENCODER_ID = "lllyasviel/flux_redux_bfl"  # SigLIP image_encoder + feature_extractor
DEFAULT_DTYPES = {  # the original app: transformer bf16, everything else fp16
    "transformer": "bf16",
    "vae": "fp16",
    "text_encoder": "fp16",
    "text_encoder_2": "fp16",
    "image_encoder": "fp16",
}
DEFAULT_SAMPLING = {  # the original app's UI defaults (demo_gradio.py)
    "steps": 25,
    "guidance_scale": 10.0,  # distilled guidance, embedded (x1000)
    "true_cfg_scale": 1.0,  # real CFG only when > 1 and a negative prompt is given
    "negative_prompt": None,
    "prompt": None,  # for rows whose dataset prompt is empty
    "height": None,  # null = the input frame size
    "width": None,
    "latent_window_size": 9,  # "should not change": 33-frame sections
    "prompt_template": None,  # null = diffusers' Llava-Llama template (tiny: {template: "{}", crop_start: 0})
    "max_sequence_length": 256,  # Llama tokens after the template; text is padded to this length
}


def produced_frames(num_frames: int, latent_window_size: int) -> int:
    """Frames the pipeline returns for `num_frames`: 1 + 4·lws·ceil(num_frames / window)."""
    window = (latent_window_size - 1) * 4 + 1  # pixel frames per section
    sections = max(1, math.ceil(num_frames / window))
    return 1 + 4 * latent_window_size * sections


class FramePackGenerator(Generator):
    """FramePack image-to-video: each call conditions on one observed frame and generates the frames after it.

    Request (`first_image_chunk`): `observed` = [i] (the last done frame), `target` = [i+1, ..., i+n].
    With the inverted (anti-drifting) checkpoint `observed` = [i, j], `target` = [i+1, ..., j-1] also
    conditions on a last image; F1 raises. Longer videos: the `autoreg` strategy with
    `inference.max_frames = inference.step_size + 1` (one observed frame per call).

    Frames: a call makes sections = ceil(n / (4·latent_window_size)) sections (as the original app
    counts them), i.e. 1 + 4·latent_window_size·sections frames; frame 0 (the start image's
    reconstruction) and the surplus are dropped, so exactly the n targets come back. The plan of each
    call length of the sampling run is in `describe()["frames"]` once the sampling loop handed over its
    schedule (`accept_schedule`). A last image follows the final generated frame, so then n must be a
    multiple of 4·latent_window_size (no trimming).

    The pipeline (the weights) loads on first use of `pipe` (the first `generate` call), so a schedule
    FramePack cannot run fails in `accept_schedule` before any weights load.

    Frames are resized to `height` x `width` (multiples of 16; null = the input size) for the model and
    the output is resized back to the input size (bilinear, antialiased). Each row is its own pipeline
    call with a CPU `torch.Generator` seeded from `seeds[b]`, so a row does not depend on the batch.
    """

    @staticmethod
    def config_weights(cfg: dict[str, Any]) -> str | None:
        """Where a model config's weights come from without a checkpoint (None: random, size=tiny)."""
        if cfg.get("size", "full") == "tiny":
            return None
        variant = cfg.get("variant", "inverted")
        transformer = cfg.get("transformer_id") or VARIANTS.get(variant, (variant,))[0]
        return f"pretrained {cfg.get('pretrained') or transformer}"

    def __init__(
        self,
        size: str = "full",
        variant: str = "inverted",
        pretrained: str | None = None,
        transformer_id: str | None = None,
        base_id: str = BASE_ID,
        image_encoder_id: str = IMAGE_ENCODER_ID,
        revision: str | None = None,
        dtypes: dict[str, str] | None = None,
        cpu_offload: str = "none",
        vae_tiling: bool = False,
        vae_slicing: bool = False,
        device: str | None = "auto",
        sampling: dict[str, Any] | None = None,
        max_frames: int = 1801,
        fps: float = 30.0,
        tiny_seed: int = 0,
    ):
        if size not in SIZES:
            raise ValueError(f"model.size must be one of {SIZES}, got {size!r}")
        if variant not in VARIANTS:
            raise ValueError(f"model.variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        if cpu_offload == "sequential":
            raise ValueError(
                "model.cpu_offload=sequential: FramePack's SigLIP image encoder does not support sequential "
                "offload (diffusers skips it too); use cpu_offload=model with vae_tiling=true"
            )
        dtypes = merge_settings(dtypes, DEFAULT_DTYPES, "dtypes")
        s = self.sampling = merge_settings(sampling, DEFAULT_SAMPLING, "sampling")
        check_frame_size(s)
        if int(s["latent_window_size"]) < 2:
            raise ValueError(f"model.sampling.latent_window_size must be >= 2, got {s['latent_window_size']}")
        self.size, self.variant, self.revision = size, variant, revision
        default_id, self.sampling_type, self.supports_last_image = VARIANTS[variant]
        self.transformer_id = transformer_id or default_id
        self.pretrained, self.base_id, self.image_encoder_id = pretrained, base_id, image_encoder_id
        if size == "tiny":
            s["prompt_template"] = s["prompt_template"] or TINY_PROMPT_TEMPLATE
            self.dtypes = {k: torch.float32 for k in DEFAULT_DTYPES}  # random tiny weights: CPU float32
        else:
            self.dtypes = {k: parse_dtype(v) for k, v in dtypes.items()}
        self.device = resolve_device(device)
        self.cpu_offload, self.vae_tiling, self.vae_slicing = cpu_offload, bool(vae_tiling), bool(vae_slicing)
        self.fps, self.tiny_seed = float(fps), int(tiny_seed)
        self.calls: list[dict[str, int]] | None = None  # the run's call lengths, from accept_schedule
        self._pipe = None  # built on first use (see `pipe`)
        self.capabilities = Capabilities(
            max_frames=int(max_frames),
            index_patterns=("first_image_chunk",),
            strategies=("autoreg",),
            frame_rule=f"1+4*{self.latent_window_size}*sections, trimmed to the request",
            fps=self.fps,
            conditioning=("first_image", "prompt") + (("last_image",) if self.supports_last_image else ()),
        )

    @property
    def latent_window_size(self) -> int:
        return int(self.sampling["latent_window_size"])

    # ----------------------------------------------------------------- building
    @property
    def pipe(self):
        """The `HunyuanVideoFramepackPipeline`, built (weights loaded) on first use."""
        if self._pipe is None:
            pipe = self._build_pipeline()
            apply_memory_options(
                pipe,
                cpu_offload=self.cpu_offload,
                vae_tiling=self.vae_tiling,
                vae_slicing=self.vae_slicing,
                device=self.device,
            )
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe
        return self._pipe

    def _build_pipeline(self):
        from diffusers import HunyuanVideoFramepackPipeline  # deferred: diffusers is a heavy import

        if self.size == "tiny":
            return HunyuanVideoFramepackPipeline(**tiny_components(seed=self.tiny_seed))
        return HunyuanVideoFramepackPipeline(**self._load_components())

    def _load_components(self) -> dict[str, Any]:
        """Each component from its repository, or all from `pretrained` (a saved pipeline's folders)."""
        from diffusers import (  # deferred: diffusers / transformers are heavy imports
            AutoencoderKLHunyuanVideo,
            FlowMatchEulerDiscreteScheduler,
            HunyuanVideoFramepackTransformer3DModel,
        )
        from transformers import (  # deferred: heavy import
            AutoTokenizer,
            CLIPTextModel,
            LlamaModel,
            SiglipImageProcessor,
            SiglipVisionModel,
        )

        one, rev = self.pretrained, self.revision
        base, image = one or self.base_id, one or self.image_encoder_id
        base_rev = rev if one else None  # `revision` pins `pretrained` or the transformer repository
        sources = {  # name -> (class, repository, subfolder, revision)
            "transformer": (
                HunyuanVideoFramepackTransformer3DModel,
                one or self.transformer_id,
                "transformer" if one else None,  # the FramePack repos hold the transformer at their root
                rev,
            ),
            "vae": (AutoencoderKLHunyuanVideo, base, "vae", base_rev),
            "scheduler": (FlowMatchEulerDiscreteScheduler, base, "scheduler", base_rev),
            "text_encoder": (LlamaModel, base, "text_encoder", base_rev),
            "tokenizer": (AutoTokenizer, base, "tokenizer", base_rev),  # the class its config names
            "text_encoder_2": (CLIPTextModel, base, "text_encoder_2", base_rev),
            "tokenizer_2": (AutoTokenizer, base, "tokenizer_2", base_rev),
            "image_encoder": (SiglipVisionModel, image, "image_encoder", base_rev),
            "feature_extractor": (SiglipImageProcessor, image, "feature_extractor", base_rev),
        }
        return {
            name: load_component(cls, repo, sub, self.dtypes.get(name), revision=r)
            for name, (cls, repo, sub, r) in sources.items()
        }

    # ----------------------------------------------------------------- frame arithmetic
    def frame_plan(self, num_targets: int) -> dict[str, int]:
        """Sections for `num_targets` new frames (4·lws each), the `num_frames` passed to the pipeline,
        the frames it returns (frame 0 = the start image) and those dropped."""
        lws = self.latent_window_size
        sections = max(1, math.ceil(num_targets / (4 * lws)))
        num_frames = sections * ((lws - 1) * 4 + 1)  # whole windows: exactly `sections` sections
        produced = produced_frames(num_frames, lws)  # 1 + 4·lws·sections
        return {
            "targets": num_targets,
            "sections": sections,
            "num_frames": num_frames,
            "produced": produced,
            "dropped": produced - 1 - num_targets,
        }

    def accept_schedule(self, steps: Sequence[Step], *, video_length: int, obs_length: int) -> None:
        """Check that every call of the run observes one frame and record the frame plan of each distinct
        call length for the manifest (`describe()["frames"]["effective_frames"]`). Loads no weights."""
        many = [observed for observed, _ in steps if len(observed) != 1]
        if many:
            raise ValueError(
                f"FramePack conditions each call on one frame; the inference schedule would observe "
                f"{many[0]}. Set inference.max_frames = inference.step_size + 1 (and inference.obs_length <= "
                "max_frames - step_size)"
            )
        self.calls = [self.frame_plan(n) for n in sorted({len(target) for _, target in steps})]

    def describe(self) -> dict[str, Any]:
        tiny = self.size == "tiny"
        return {
            **super().describe(),
            "model_id": TINY_ID if tiny else (self.pretrained or self.transformer_id),
            "size": self.size,
            "variant": self.variant,
            "sampling_type": self.sampling_type,
            "base_id": None if tiny or self.pretrained else self.base_id,
            "image_encoder_id": None if tiny or self.pretrained else self.image_encoder_id,
            "revision": self.revision,
            "resolved_revision": None  # the commit of `pretrained` (or the transformer repo), when known
            if tiny
            else resolved_revision(self.pretrained or self.transformer_id, self.revision),
            "dtypes": {k: dtype_name(v) for k, v in self.dtypes.items()},
            "cpu_offload": self.cpu_offload,
            "vae_tiling": self.vae_tiling,
            "vae_slicing": self.vae_slicing,
            **{k: v for k, v in self.sampling.items() if k not in ("prompt", "height", "width")},
            "default_prompt": self.sampling["prompt"],
            "model_size_hw": [self.sampling["height"], self.sampling["width"]],  # null = input frame size
            "fps": self.fps,
            "frames": {
                "rule": "sections = ceil(targets / (4*latent_window_size)); the pipeline returns "
                "1 + 4*latent_window_size*sections frames; frame 0 (the start image) and the surplus "
                "are dropped (trimmed to the requested targets)",
                "window": (self.latent_window_size - 1) * 4 + 1,
                "effective_frames": self.calls,  # per distinct call length of the inference run
            },
        }

    # ----------------------------------------------------------------- the request
    def _check_request(self, frames, observed, target, seeds) -> bool:
        """Validate a request; True when it carries a last image (observed = [i, j])."""
        check_request(frames, observed, target, seeds)
        if frames.shape[2] not in (1, 3):
            raise ValueError(f"FramePack takes RGB (or grey) frames; got {frames.shape[2]} channels")
        if len(observed) == 2 and observed[1] > observed[0] + 1:
            i, j = observed
            if list(target) != list(range(i + 1, j)):
                raise ValueError(f"with a last image the targets must be {i + 1}..{j - 1}; got {target}")
            if not self.supports_last_image:
                raise ValueError(
                    f"last-image conditioning (observed {observed}) needs the inverted anti-drifting "
                    f"checkpoint; model.variant={self.variant!r} samples {self.sampling_type!r}"
                )
            return True
        if len(observed) != 1:
            raise ValueError(
                f"FramePack conditions each call on one frame (the last done one); got observed {observed}. "
                "Use inference=autoreg with inference.max_frames = inference.step_size + 1"
            )
        first = observed[0] + 1
        if not target or list(target) != list(range(first, first + len(target))):
            raise ValueError(
                f"FramePack generates the frames right after observed frame {observed[0]}; got {target}"
            )
        return False

    @torch.no_grad()
    def generate(self, frames, observed, target, cond, seeds):
        B, _, C, H, W = frames.shape  # [B, T_obs, C, H, W] in [-1, 1]
        has_last = self._check_request(frames, list(observed), list(target), seeds)
        s = self.sampling
        height, width = int(s["height"] or H), int(s["width"] or W)
        if height % 16 or width % 16:
            raise ValueError(
                f"FramePack needs height and width that are multiples of 16; the frames are {H}x{W}: set "
                "model.sampling.height / width (frames are resized to them and back)"
            )
        plan = self.frame_plan(len(target))
        if has_last and plan["dropped"]:
            raise ValueError(
                f"a last image follows the final generated frame, so nothing may be trimmed: FramePack "
                f"makes {plan['produced'] - 1} new frames, not the {len(target)} requested; request a "
                f"multiple of 4*latent_window_size = {4 * self.latent_window_size} frames"
            )
        model_frames = resize_frames(frames, (height, width))  # [B, T_obs, C, h, w]
        prompts = row_prompts(cond, B, self.sampling["prompt"])
        template = s["prompt_template"] or _default_template()
        rows = []
        for b in range(B):
            images = frames_to_pil(model_frames[b])  # the start image (and the last image)
            video = self.pipe(
                image=images[0],
                last_image=images[1] if has_last else None,
                prompt=prompts[b],
                negative_prompt=s["negative_prompt"],
                height=height,
                width=width,
                num_frames=plan["num_frames"],
                latent_window_size=self.latent_window_size,
                num_inference_steps=int(s["steps"]),
                guidance_scale=float(s["guidance_scale"]),
                true_cfg_scale=float(s["true_cfg_scale"]),
                generator=torch_generator(seeds[b], "cpu"),
                output_type="pt",
                prompt_template=dict(template),
                max_sequence_length=int(s["max_sequence_length"]),
                sampling_type=self.sampling_type,
            ).frames
            video = pipeline_video_to_tensor(video)  # [1, produced, 3, h, w] in [-1, 1]
            if video.shape[1] != plan["produced"]:
                raise ValueError(f"FramePack returned {video.shape[1]} frames; the plan was {plan}")
            rows.append(video[:, 1 : 1 + len(target)])  # drop the start image and the surplus
        out = resize_frames(torch.cat(rows), (H, W))  # [B, T_target, 3, H, W] at the input size
        if C == 1:
            out = out.mean(2, keepdim=True)  # grey input: the RGB output's channel mean
        return out.to(frames.dtype)


def _default_template() -> dict[str, Any]:
    """diffusers' Llava-Llama prompt template (crop_start 95) for the released text encoder."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import (  # deferred: heavy
        DEFAULT_PROMPT_TEMPLATE,
    )

    return DEFAULT_PROMPT_TEMPLATE
