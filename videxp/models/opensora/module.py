"""Open-Sora v1.3 as a LightningModule: full or LoRA fine-tuning of STDiT3 with a rectified-flow loss."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import lightning as L
import torch

from videxp.models.diffusers_common import merge_settings, resize_frames
from videxp.models.opensora import rflow
from videxp.models.opensora.conditioning import (
    COND_TYPES,
    condition_tensors,
    head_latents,
    legal_frames,
    mask_index,
)
from videxp.models.opensora.generator import OpenSoraGenerator, model_frame_size
from videxp.models.opensora.stdit3 import HUB_ID as STDIT_ID
from videxp.models.opensora.stdit3 import STDiT3, check_state_dict, load_stdit3, stdit3_config
from videxp.models.opensora.text import T5_ID, T5TextEncoder
from videxp.models.opensora.vae import HUB_ID as VAE_ID
from videxp.models.opensora.vae import OpenSoraVAE, load_vae
from videxp.models.partial_training import ClipsToMaxNorm, SavesTrainedOnly, adamw_with_warmup
from videxp.utils.seeding import derive_seed, torch_generator
from videxp.weights.files import parse_dtype, read_state_dict, resolve_weight_file, resolved_revision

SIZES = ("tiny", "xl")
VAE_SIZE = {"tiny": "tiny", "xl": "full"}
DEFAULT_PRETRAINED = {"stdit": STDIT_ID, "vae": VAE_ID, "text_encoder": T5_ID}
DEFAULT_DTYPES = {"stdit": "fp32", "vae": "fp32", "text_encoder": "fp32"}
DEFAULT_OPTIM = {  # configs/opensora-v1-3/train/stage1.py (lr there 1e-4)
    "lr": 1e-4,
    "betas": (0.9, 0.999),
    "weight_decay": 0.0,
    "eps": 1e-15,
    "warmup_steps": 0,
    "max_grad_norm": 1.0,
}
DEFAULT_TRAINING = {
    "cond_type": "v2v_head",  # v2v_head | i2v_head | i2v_tail | i2v_loop | null (text-to-video)
    # v2v_head: observed pixel frames (conditions the latents standing only for them), or "half": the first
    # num_latents // 2 latents (Open-Sora's naive fine-tuning default, latent_t // 2)
    "condition_frames": 17,
    "timestep_sampling": "logit-normal",  # logit-normal | uniform
    "use_timestep_transform": True,  # warp training timesteps like sampling's
    "text_dropout": 0.0,  # null-caption probability per clip; replaces the network's class_dropout_prob
    "drop_condition": None,  # {keep, cond, text, null: probability}: one draw per step (null = always keep)
    "x_cond_weight": 1.0,  # loss weight of the conditioned latents (the others rescaled to keep the sum)
    "prompt": None,  # caption for clips without a dataset prompt
    "cache_clip_latents": False,  # keep the last clip's VAE moments: repeated steps on one clip skip encoding
}
DEFAULT_LORA = {  # used when `lora` is given; peft LoRA on the attention projections of every block
    "rank": 16,
    "alpha": 16,
    "target_modules": r".*_blocks\.\d+\.(attn\.(qkv|proj)|cross_attn\.(q_linear|kv_linear|proj))",
    "dropout": 0.0,
}
DEFAULT_EMA = {"enabled": False, "decay": 0.99}  # Open-Sora trains with ema_decay 0.99
TINY = {"caption_channels": 32, "model_max_length": 16}  # tiny STDiT3 + tiny T5 (offline tests)


class OpenSoraModule(SavesTrainedOnly, ClipsToMaxNorm, L.LightningModule):
    """Fine-tunes STDiT3 (all weights, or a peft LoRA) with the VAE and T5 frozen.

    Loss (Open-Sora's rectified flow): latents x0 of the clip (VAE sample), t = 1000 * sigmoid(N(0, 1))
    warped by clip size and length, x_t = (1 - t/1000) x0 + (t/1000) n, target v = x0 - n, MSE over the
    first 16 output channels. With `training.cond_type` the conditioned latents are given to the network
    as `cond` / `cond_mask` / `mask_index` (v2v_head: those standing only for the first
    `condition_frames` pixel frames, as at sampling time) and still count in the loss (Open-Sora's
    x_cond_weight, default 1 = like the others; `drop_condition` drops caption and/or condition per
    step). Clips whose length is not 16k+1 (45) are padded with their last frame (to 49); latents standing
    only for padding get no loss. Randomness depends only on (seed, global_step).

    Saved state: `state_dict()` holds only what trains (`stdit.*` and `ema_stdit.*`, or the LoRA tensors);
    the frozen VAE and T5 are rebuilt from `pretrained` when the module is built.
    """

    sampling_keys = ("sampling",)

    @staticmethod
    def config_weights(cfg: dict[str, Any]) -> str | None:
        """Where a model config's weights come from without a checkpoint: the pretrained STDiT3; None
        (random) with size=tiny or `pretrained.stdit` null."""
        stdit = {**DEFAULT_PRETRAINED, **(cfg.get("pretrained") or {})}["stdit"]
        if cfg.get("size", "xl") == "tiny" or stdit is None:
            return None
        return f"pretrained {stdit}"

    def __init__(
        self,
        size: str = "xl",
        pretrained: dict[str, str | None] | None = None,
        revision: str | dict[str, str | None] | None = None,
        dtypes: dict[str, str] | None = None,
        tiny_seed: int = 0,
        lora: dict[str, Any] | None = None,
        ema: dict[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        height: int | None = None,
        width: int | None = None,
        resolution: str | None = None,
        aspect_ratio: str = "9:16",
        gradient_checkpointing: bool = False,
        sampling: dict[str, Any] | None = None,
        max_frames: int = 113,
        fps: float = 24.0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        if size not in SIZES:
            raise ValueError(f"model.size must be one of {SIZES}, got {size!r}")
        self.pretrained = merge_settings(pretrained, DEFAULT_PRETRAINED, "pretrained")
        dtypes = {k: parse_dtype(v) for k, v in merge_settings(dtypes, DEFAULT_DTYPES, "dtypes").items()}
        self.optim = merge_settings(optim, DEFAULT_OPTIM, "optim")
        self.training_cfg = t = merge_settings(training, DEFAULT_TRAINING, "training")
        if t["cond_type"] is not None and t["cond_type"] not in COND_TYPES:
            raise ValueError(
                f"model.training.cond_type must be one of {COND_TYPES} or null, got {t['cond_type']!r}"
            )
        frames = t["condition_frames"]
        if frames != "half" and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
            raise ValueError(
                f"model.training.condition_frames must be a positive int or 'half', got {frames!r}"
            )
        self.ema_cfg = merge_settings(ema, DEFAULT_EMA, "ema")
        self.frame_size = dict(resolution=resolution, aspect_ratio=aspect_ratio, height=height, width=width)
        model_frame_size(self.frame_size, 8, 8, "model")  # fail now on a bad preset or size
        self.fps, self.seed = float(fps), int(seed)
        self.max_frames, self.size = int(max_frames), size
        self.sampling = dict(sampling or {})

        # a hub revision per network; a plain string is the STDiT3's (the only one it used to pin)
        given = {"stdit": revision} if isinstance(revision, str) else revision
        self.revision = merge_settings(given, dict.fromkeys(DEFAULT_PRETRAINED), "revision")
        self.stdit, self.vae, self.text_encoder = self._build(size, dtypes, self.revision, int(tiny_seed))
        self.vae.requires_grad_(False).eval()
        if gradient_checkpointing:
            self.stdit.enable_gradient_checkpointing()
        self.lora_cfg = None
        if lora is not None:
            if self.ema_cfg["enabled"]:
                raise ValueError("model.ema is for full fine-tuning; with model.lora set ema.enabled=false")
            self.lora_cfg = merge_settings(lora, DEFAULT_LORA, "lora")
            self._add_lora()
        self.ema_stdit = (
            copy.deepcopy(self.stdit).requires_grad_(False).eval() if self.ema_cfg["enabled"] else None
        )

    # ----------------------------------------------------------------- building
    def _build(self, size: str, dtypes: dict, revision: dict[str, str | None], seed: int):
        """(stdit, vae, text_encoder): random tiny networks, or the released weights. A `pretrained` entry
        of null builds that network randomly initialised (benchmarks); for the text encoder that is a
        2-layer T5 of the STDiT3's caption width with the offline word-level tokenizer."""
        p = self.pretrained
        tiny = size == "tiny"
        extra = {"in_channels": 16, **TINY} if tiny else {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if p["stdit"] is None or tiny:
                stdit = STDiT3(stdit3_config(size, **extra)).to(dtypes["stdit"])
            else:
                stdit = load_stdit3(p["stdit"], size, dtype=dtypes["stdit"], revision=revision["stdit"])
            if p["vae"] is None or tiny:
                vae = OpenSoraVAE(VAE_SIZE[size]).to(dtypes["vae"])
            else:
                vae = load_vae(p["vae"], VAE_SIZE[size], dtype=dtypes["vae"], revision=revision["vae"])
        text = T5TextEncoder(
            size="tiny" if tiny or p["text_encoder"] is None else "full",
            pretrained=p["text_encoder"] or T5_ID,
            revision=revision["text_encoder"] if p["text_encoder"] else None,
            max_length=stdit.config.model_max_length,
            dtype=dtypes["text_encoder"],
            d_model=stdit.config.caption_channels,
            seed=seed,
        )
        return stdit, vae, text

    def _add_lora(self) -> None:
        """peft LoRA on the STDiT3's target modules; every other weight frozen (B = 0: starts at the base)."""
        from peft import LoraConfig, inject_adapter_in_model  # deferred: peft is a heavy import

        c = self.lora_cfg
        config = LoraConfig(
            r=int(c["rank"]),
            lora_alpha=float(c["alpha"]),
            target_modules=c["target_modules"],
            lora_dropout=float(c["dropout"]),
        )
        self.stdit.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, 7))
            inject_adapter_in_model(config, self.stdit)
        if not any(p.requires_grad for p in self.stdit.parameters()):
            raise ValueError(f"LoRA target_modules {c['target_modules']!r} matched no STDiT3 module")

    def saved_keys(self) -> set[str]:
        """state_dict() keys (SavesTrainedOnly): what trains (and its EMA copy); the frozen VAE and T5 are
        rebuilt from the config."""
        if self.lora_cfg is not None:
            return {f"stdit.{n}" for n, p in self.stdit.named_parameters() if p.requires_grad}
        names = {f"stdit.{k}" for k in self.stdit.state_dict()}
        if self.ema_stdit is not None:
            names |= {f"ema_stdit.{k}" for k in self.ema_stdit.state_dict()}
        return names

    def describe_saved(self) -> str:
        return f"Open-Sora STDiT3, lora={self.lora_cfg is not None}, ema={self.ema_stdit is not None}"

    def train(self, mode: bool = True) -> OpenSoraModule:
        super().train(mode)
        self.vae.eval()
        if self.ema_stdit is not None:
            self.ema_stdit.eval()
        return self

    def load_weights(self, path: str | Path) -> None:
        """A plain STDiT3 weight file or folder (released or exported) as `ckpt_path`: strict load into the
        network (and its EMA copy)."""
        sd = read_state_dict(resolve_weight_file(path, "STDiT3 weights"))
        check_state_dict(self.stdit, sd, str(path))
        self.stdit.load_state_dict(sd, strict=True)
        if self.ema_stdit is not None:
            self.ema_stdit.load_state_dict(sd, strict=True)
        return None

    # ----------------------------------------------------------------- training
    def model_clip(self, video: torch.Tensor) -> tuple[torch.Tensor, int]:
        """batch["video"] [B, T, C, H, W] in [-1, 1] -> [B, 3, T', h, w] at the model size, T' = the next
        legal length (padded with the last frame), and the real frame count T."""
        if video.ndim != 5:
            raise ValueError(f"expected batch['video'] [B, T, C, H, W], got {tuple(video.shape)}")
        B, T, C, H, W = video.shape
        if C not in (1, 3):
            raise ValueError(f"Open-Sora needs RGB (or grey) frames, got {C} channels")
        h, w = model_frame_size(self.frame_size, H, W, "model")
        video = resize_frames(video.float(), (h, w)).expand(-1, -1, 3, -1, -1)  # [B, T, 3, h, w]
        n = legal_frames(T, self.vae.config.micro_frame_size)
        if n > self.max_frames:
            raise ValueError(f"clips of {T} frames pad to {n} > model.max_frames={self.max_frames}")
        video = torch.cat([video, video[:, -1:].expand(-1, n - T, -1, -1, -1)], dim=1)  # [B, n, 3, h, w]
        return video.permute(0, 2, 1, 3, 4).contiguous(), T

    def loss_weights(self, num_latents: int, real_frames: int, cond_index: list[int] = ()) -> torch.Tensor:
        """[t] per-latent loss weights: 0 for latents standing only for padding; with `cond_index`,
        Open-Sora's x_cond_weight w on the k conditioned latents and (n - k w) / (n - k) on the other
        real ones."""
        slots = [self.vae.pixel_frames_of_latent(i) for i in range(num_latents)]
        real = torch.tensor([float(s[0] < real_frames) for s in slots])
        w, k = float(self.training_cfg["x_cond_weight"]), len(cond_index)
        n = int(real.sum())
        if not k or w == 1.0 or k >= n:
            return real
        weights = real * (n - k * w) / (n - k)
        weights[list(cond_index)] = w
        return weights

    def cond_index(self, num_latents: int) -> list[int]:
        """The latents conditioned while training (`training.cond_type`; v2v_head: as at sampling time)."""
        t = self.training_cfg
        if t["cond_type"] == "v2v_head":
            if t["condition_frames"] == "half":
                return mask_index("v2v_head", num_latents, num_latents // 2)
            k = head_latents(int(t["condition_frames"]), self.vae.config.micro_frame_size)
            return mask_index("v2v_head", num_latents, min(k, num_latents))
        return mask_index(t["cond_type"], num_latents)

    def flow_loss(self, video: torch.Tensor, prompts: list[str], g: torch.Generator) -> torch.Tensor:
        """Rectified-flow MSE on clips [B, T, C, H, W] with prompts; all randomness from g."""
        clip, real = self.model_clip(video)  # [B, 3, n, h, w]
        B, _, n, h, w = clip.shape
        vae_dtype = next(self.vae.parameters()).dtype
        with torch.no_grad():
            vae_g = torch_generator(int(torch.randint(0, 2**62, (1,), generator=g)), self.device)
            moments = self.clip_moments(clip.to(self.device, vae_dtype))  # [B, 32, t, h', w']
            x0 = self.vae.latents_from_moments(moments, sample=True, generator=vae_g).float()
            y, y_mask = self.text_encoder(prompts)  # [B, 1, L, D], [B, L]
        t = rflow.sample_training_timesteps(B, g, self.training_cfg["timestep_sampling"])  # [B]
        if self.training_cfg["use_timestep_transform"]:
            t = rflow.warp_timesteps(t, h, w, n)
        noise = torch.randn(x0.shape, generator=g).to(x0.device)  # [B, 16, t, h', w']
        drop = torch.rand(B, generator=g) < float(self.training_cfg["text_dropout"])
        t = t.to(x0.device)
        x_t = rflow.add_noise(x0, noise, t)
        index = self.cond_index(x0.shape[2])
        kw: dict[str, Any] = {}
        if index:
            cond, cond_mask = condition_tensors(x0, index)
            keep = self.draw_condition(g)
            if keep in ("text", "null"):  # the condition latents are dropped (the mask stays)
                cond = torch.zeros_like(cond)
            if keep in ("cond", "null"):  # the caption is dropped: the null caption for every clip
                drop = torch.ones(B, dtype=torch.bool)
            kw = dict(cond=cond, cond_mask=cond_mask, mask_index=index)
        pred = self.stdit(
            x_t,
            t,
            y,
            mask=y_mask,
            fps=self.fps,
            height=float(h),
            width=float(w),
            force_drop_ids=drop.to(x0.device),  # always given: the network's own random dropout never fires
            **kw,
        )[:, : x0.shape[1]].float()  # [B, 16, t, h', w']
        per_frame = (pred - rflow.velocity_target(x0, noise)).pow(2).mean(dim=(0, 1, 3, 4))  # [t]
        weights = self.loss_weights(x0.shape[2], real, index).to(per_frame.device)
        return (per_frame * weights).sum() / self.loss_weights(x0.shape[2], real).sum()

    def clip_moments(self, clip: torch.Tensor) -> torch.Tensor:
        """The VAE's moments of clips [B, 3, n, h, w]. With `training.cache_clip_latents` the last clip's
        are kept (keyed by a digest of its pixels), so fine-tuning on one clip (experiment=naive_finetune)
        encodes it once; the posterior is still sampled every step, so results are unchanged."""
        if not self.training_cfg["cache_clip_latents"]:
            return self.vae.encode_moments(clip)
        data = clip.detach().cpu().contiguous()
        key = (
            f"{tuple(data.shape)}:{data.dtype}:" + hashlib.blake2b(data.view(torch.uint8).numpy()).hexdigest()
        )
        cached = getattr(self, "_moments_cache", None)
        if cached is None or cached[0] != key:
            cached = self._moments_cache = (key, self.vae.encode_moments(clip))
        return cached[1]

    def draw_condition(self, g: torch.Generator) -> str:
        """Open-Sora's `drop_condition`: which of caption and condition latents this step keeps ("keep" both,
        "cond" only the condition, "text" only the caption, "null" neither), drawn from g."""
        table = self.training_cfg["drop_condition"]
        if not table:
            return "keep"
        names = sorted(table)
        unknown = set(names) - {"keep", "cond", "text", "null"}
        if unknown:
            raise ValueError(f"model.training.drop_condition: unknown keys {sorted(unknown)}")
        probs = torch.tensor([float(table[k]) for k in names])
        return names[int(torch.multinomial(probs / probs.sum(), 1, generator=g))]

    def batch_prompts(self, batch: dict[str, Any]) -> list[str]:
        B = batch["video"].shape[0]
        given = batch.get("prompt")
        given = [given] * B if isinstance(given, str) else list(given or [None] * B)
        out = [p or self.training_cfg["prompt"] for p in given]
        if not all(out):
            raise KeyError(
                "Open-Sora training needs a caption per clip: batch['prompt'] (dataset.prompt_template) or "
                "model.training.prompt"
            )
        return out

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        g = torch_generator(derive_seed(self.seed, self.global_step))
        loss = self.flow_loss(batch["video"], self.batch_prompts(batch), g)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        g = torch_generator(derive_seed(self.seed, 1_000_003, batch_idx))  # same noise at every validation
        loss = self.flow_loss(batch["video"], self.batch_prompts(batch), g)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_warmup((p for p in self.stdit.parameters() if p.requires_grad), self.optim)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema_stdit is not None:
            with torch.no_grad():
                ema = [p for p in self.ema_stdit.parameters()]
                torch._foreach_lerp_(ema, list(self.stdit.parameters()), 1.0 - float(self.ema_cfg["decay"]))

    # ----------------------------------------------------------------- sampling
    def generator(self, use_ema: bool | None = None) -> OpenSoraGenerator:
        """The sampler over this module's networks (the EMA copy by default when there is one)."""
        use_ema = self.ema_stdit is not None if use_ema is None else use_ema
        if use_ema and self.ema_stdit is None:
            raise ValueError("use_ema=True but this module keeps no EMA (model.ema.enabled=false)")
        # checkpoints saved before the schedule went through the generator hold sampling.plan: not a setting
        sampling = {k: v for k, v in self.sampling.items() if k != "plan"}
        return OpenSoraGenerator(
            self.ema_stdit if use_ema else self.stdit,
            self.vae,
            self.text_encoder,
            sampling=sampling,
            max_frames=self.max_frames,
            fps=self.fps,
            describe_extra={
                "size": self.size,
                "pretrained": "tiny (random weights, built offline)"
                if self.size == "tiny"
                else self.pretrained,
                "lora": self.lora_cfg,
                "use_ema": use_ema,
                "revision": self.revision,
                "resolved_revision": None  # per network: the commit its hub repository resolved to
                if self.size == "tiny"
                else {k: resolved_revision(v, self.revision[k]) for k, v in self.pretrained.items()},
            },
        )
