"""LoRA fine-tuning of Wan2.1 I2V as a LightningModule (finetrainers' recipe, flow-matching loss)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from videxp.models.diffusers_common import frames_to_pil, merge_settings, resize_frames
from videxp.models.partial_training import ClipsToMaxNorm, SavesTrainedOnly, adamw_with_warmup
from videxp.models.wan.components import TEXT_LEN
from videxp.models.wan.generator import DEFAULT_PRETRAINED, WanGenerator
from videxp.utils.seeding import derive_seed, torch_generator
from videxp.weights.files import parse_dtype

ADAPTER = "default"  # peft adapter name of the trained LoRA
ADAPTER_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LoRA file name (load_lora_weights reads it)
WEIGHTINGS = ("logit_normal", "uniform")  # how training sigmas are drawn
FROZEN = ("vae", "text_encoder", "image_encoder")  # components kept in eval mode and never trained
DEFAULT_LORA = {
    "rank": 16,
    "alpha": 16,
    "target_modules": r"blocks.*(to_q|to_k|to_v|to_out.0)",
    "dropout": 0.0,
    "dtype": "fp32",
}
DEFAULT_OPTIM = {
    "lr": 1e-4,
    "betas": (0.9, 0.99),
    "weight_decay": 1e-4,
    "eps": 1e-8,
    "warmup_steps": 100,
    "max_grad_norm": 1.0,
}
DEFAULT_FLOW = {"weighting": "logit_normal", "logit_mean": 0.0, "logit_std": 1.0, "shift": 1.0}


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Flow shift of noise levels in [0, 1]: shift·σ / (1 + (shift − 1)·σ) (shift 1 = unchanged)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def normalise_latents(vae: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Raw Wan VAE latents [B, 16, t, h, w] -> the transformer's space, (z − mean) / std per channel, as the
    pipeline normalises its condition latents (`prepare_latents`) and un-normalises before decoding."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, device=z.device, dtype=z.dtype).view(shape)
    std = torch.tensor(vae.config.latents_std, device=z.device, dtype=z.dtype).view(shape)
    return (z - mean) / std


class WanLoRAModule(SavesTrainedOnly, ClipsToMaxNorm, L.LightningModule):
    """Trains a peft LoRA on Wan2.1 I2V's transformer; every pretrained weight stays frozen.

    Loss (finetrainers' Wan I2V recipe): the clip's latents x0 (VAE posterior mode, normalised), noise n,
    σ from the flow weighting (logit-normal or uniform, then the flow shift), transformer input
    cat([(1 − σ)·x0 + σ·n, mask (4 ch), condition latents (16 ch)]) with timestep σ·1000, CLIP
    `hidden_states[-2]` of the first frame and 512-token UMT5 text embeddings; MSE to n − x0. The
    condition (mask + VAE of [first frame, zeros...]) and both embeddings come from the pipeline's own
    `prepare_latents`, `encode_image` and `encode_prompt`, so training sees what sampling sees.
    Randomness (σ, noise) depends only on (seed, global_step).

    Saved state: `state_dict()` (hence Lightning checkpoints) holds only the LoRA tensors
    (`transformer.<module>.lora_{A,B}.default.weight`); checkpoints add the optimizer state over those.
    The frozen base weights are rebuilt from `size` / `pretrained` when the module is constructed.
    `save_adapter` writes diffusers' LoRA file (`WanImageToVideoPipeline.load_lora_weights` reads it).
    """

    sampling_keys = ("sampling",)  # taken from the sample-time config when loading a checkpoint

    @staticmethod
    def config_weights(cfg: dict[str, Any]) -> str | None:
        """Where a model config's weights come from without a checkpoint: the pretrained base with an
        untrained (zero) LoRA; None (random) with size=tiny."""
        base = WanGenerator.config_weights(cfg)
        return None if base is None else f"{base} + untrained LoRA"

    def __init__(
        self,
        size: str = "full",
        pretrained: str = DEFAULT_PRETRAINED,
        revision: str | None = None,
        dtypes: dict[str, str] | None = None,
        tiny_seed: int = 0,
        lora: dict[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        flow: dict[str, Any] | None = None,
        height: int | None = None,
        width: int | None = None,
        gradient_checkpointing: bool = False,
        sampling: dict[str, Any] | None = None,
        max_frames: int = 81,
        fps: float = 16.0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.lora = merge_settings(lora, DEFAULT_LORA, "lora")
        self.optim = merge_settings(optim, DEFAULT_OPTIM, "optim")
        self.flow = merge_settings(flow, DEFAULT_FLOW, "flow")
        if self.flow["weighting"] not in WEIGHTINGS:
            raise ValueError(
                f"model.flow.weighting must be one of {WEIGHTINGS}, got {self.flow['weighting']!r}"
            )
        if self.flow["shift"] <= 0:
            raise ValueError(f"model.flow.shift must be > 0, got {self.flow['shift']}")
        for name, v in (("height", height), ("width", width)):
            if v is not None and int(v) % 16:
                raise ValueError(f"model.{name}={v} must be a multiple of 16 (Wan's VAE x patch size)")
        self.height, self.width, self.seed = height, width, int(seed)
        # the pipeline (and the sampler) built on CPU; Lightning moves the registered components
        self.wan = WanGenerator(
            size=size,
            pretrained=pretrained,
            revision=revision,
            dtypes=dtypes,
            device="cpu",
            sampling=sampling,
            max_frames=max_frames,
            fps=fps,
            tiny_seed=tiny_seed,
        )
        pipe = self.wan.pipe
        self.transformer, self.vae = pipe.transformer, pipe.vae
        self.text_encoder, self.image_encoder = pipe.text_encoder, pipe.image_encoder
        self.requires_grad_(False)
        self.train()  # the frozen encoders and VAE in eval mode (Lightning keeps modules' modes when fitting)
        self._add_lora()
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()

    # ----------------------------------------------------------------- the adapter
    @property
    def pipe(self):
        """The `WanImageToVideoPipeline` sharing this module's components."""
        return self.wan.pipe

    def _add_lora(self) -> None:
        """peft LoRA on the transformer's target modules; only its A/B matrices are trainable."""
        from peft import LoraConfig  # deferred: peft is a heavy import

        c = self.lora
        self.lora_config = LoraConfig(
            r=int(c["rank"]),
            lora_alpha=float(c["alpha"]),
            target_modules=c["target_modules"],
            lora_dropout=float(c["dropout"]),
            init_lora_weights=True,  # A kaiming-uniform, B zero: the model starts exactly at the base
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, 7))  # the A matrices' init depends on the seed only
            self.transformer.add_adapter(self.lora_config, adapter_name=ADAPTER)
        dtype = parse_dtype(c["dtype"])
        names = []
        for name, p in self.transformer.named_parameters():
            if p.requires_grad:
                p.data = p.data.to(dtype)  # LoRA kept in float32 over a bf16 base (peft casts inputs)
                names.append(name)
        if not names:
            raise ValueError(f"LoRA target_modules {c['target_modules']!r} matched no transformer module")
        self.lora_names = frozenset(f"transformer.{n}" for n in names)  # keys of state_dict()

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        """The trainable LoRA tensors (the only parameters with requires_grad)."""
        return [p for p in self.parameters() if p.requires_grad]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA in peft/diffusers naming, no adapter name (`blocks.0.attn1.to_q.lora_A.weight`)."""
        from peft.utils import get_peft_model_state_dict  # deferred: peft is a heavy import

        return get_peft_model_state_dict(self.transformer, adapter_name=ADAPTER)

    def save_adapter(self, path: str | Path) -> Path:
        """Write the LoRA as diffusers' `pytorch_lora_weights.safetensors` into folder `path`; returns it.

        Keys are `transformer.<module>.lora_{A,B}.weight` with the LoRA config as metadata, so
        `WanImageToVideoPipeline.load_lora_weights(path)` applies it to a fresh pipeline.
        """
        from diffusers import WanImageToVideoPipeline  # deferred: diffusers is a heavy import

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.adapter_state_dict().items()}
        WanImageToVideoPipeline.save_lora_weights(
            str(path),
            transformer_lora_layers=state,
            weight_name=ADAPTER_FILE,
            transformer_lora_adapter_metadata=self.lora_config.to_dict(),
        )
        return path / ADAPTER_FILE

    def load_adapter(self, path: str | Path) -> None:
        """Load a LoRA written by `save_adapter` (the folder or the .safetensors file) into this module's
        adapter; its keys and shapes (rank) must match the configured LoRA exactly."""
        from peft.utils import set_peft_model_state_dict  # deferred: peft is a heavy import

        path = Path(path)
        file = path / ADAPTER_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no LoRA file at {file} (save_adapter writes {ADAPTER_FILE})")
        loaded = load_file(str(file))
        prefix = "transformer."
        if any(not k.startswith(prefix) for k in loaded):
            odd = sorted(k for k in loaded if not k.startswith(prefix))[:3]
            raise ValueError(f"{file}: only transformer LoRA keys are supported, found e.g. {odd}")
        loaded = {k.removeprefix(prefix): v for k, v in loaded.items()}
        own = self.adapter_state_dict()
        if set(loaded) != set(own):
            missing, extra = sorted(set(own) - set(loaded)), sorted(set(loaded) - set(own))
            raise ValueError(
                f"{file}: LoRA keys differ from this module's "
                f"(target_modules {self.lora['target_modules']!r}): "
                f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})"
            )
        bad = [k for k in own if own[k].shape != loaded[k].shape]
        if bad:
            k = bad[0]
            raise ValueError(
                f"{file}: {k} has shape {tuple(loaded[k].shape)}, this module's LoRA (rank "
                f"{self.lora['rank']}) has {tuple(own[k].shape)}"
            )
        set_peft_model_state_dict(self.transformer, loaded, adapter_name=ADAPTER)

    @torch.no_grad()
    def reset_to_base(self, seed: int | None = None) -> None:
        """Re-initialise the LoRA (B = 0, A redrawn from `seed`, default the module seed): the transformer
        computes exactly the base model again. A following `Trainer.fit` builds a fresh optimizer."""
        from peft.tuners.lora import LoraLayer  # deferred: peft is a heavy import

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed if seed is None else seed, 7))
            for module in self.transformer.modules():
                if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
                    module.reset_lora_parameters(ADAPTER, init_lora_weights=True)

    # ----------------------------------------------------------------- what is saved
    def saved_keys(self) -> set[str]:
        """state_dict(): only the LoRA tensors (`transformer.<module>.lora_{A,B}.default.weight`); the base
        weights are frozen and rebuilt from the config, so checkpoints stay small."""
        return set(self.lora_names)

    def describe_saved(self) -> str:
        return f"LoRA rank {self.lora['rank']}, targets {self.lora['target_modules']!r}"

    def train(self, mode: bool = True) -> WanLoRAModule:
        """Train mode for the transformer (LoRA dropout); the frozen encoders and VAE always stay in eval."""
        super().train(mode)
        for name in FROZEN:
            getattr(self, name).eval()
        return self

    # ----------------------------------------------------------------- training
    def model_frames(self, video: torch.Tensor) -> torch.Tensor:
        """batch["video"] [B, T, C, H, W] in [-1, 1] -> RGB at the model size [B, T, 3, h, w], T = 4k+1."""
        if video.ndim != 5:
            raise ValueError(f"expected batch['video'] [B, T, C, H, W], got {tuple(video.shape)}")
        B, T, C, H, W = video.shape
        if T % 4 != 1:
            raise ValueError(f"Wan trains on 4k+1 frames (VAE temporal stride 4); got {T} (set video_length)")
        if C not in (1, 3):
            raise ValueError(f"Wan needs RGB (or grey) frames, got {C} channels")
        h, w = int(self.height or H), int(self.width or W)
        if h % 16 or w % 16:
            raise ValueError(f"Wan needs sides multiples of 16; got {h}x{w} (set model.height/width)")
        video = resize_frames(video.float(), (h, w))  # [B, T, C, h, w]
        return video.expand(-1, -1, 3, -1, -1) if C == 1 else video  # [B, T, 3, h, w]

    @torch.no_grad()
    def conditions(self, video: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Frozen inputs of one batch [B, T, 3, h, w]: latents [B, 16, t, h/8, w/8], condition (mask +
        first-frame latents) [B, 20, t, h/8, w/8], image embeds [B, N, D_img], text embeds [B, 512, D_txt]."""
        from diffusers.pipelines.wan.pipeline_wan_i2v import (  # deferred: diffusers is a heavy import
            retrieve_latents,  # deferred: diffusers is a heavy import
        )

        pipe, dev = self.pipe, self.device
        B, T, _, h, w = video.shape
        clip = video.permute(0, 2, 1, 3, 4).to(dev, self.vae.dtype)  # [B, 3, T, h, w]
        z = retrieve_latents(self.vae.encode(clip), sample_mode="argmax").float()  # [B, 16, t, h/8, w/8]
        latents = normalise_latents(self.vae, z)
        first = video[:, 0].to(dev, torch.float32)  # [B, 3, h, w]
        # prepare_latents encodes one condition image per call (repeated over its batch): row by row
        cond = torch.cat(
            [
                pipe.prepare_latents(
                    first[b : b + 1], 1, z.shape[1], h, w, T, torch.float32, dev, None, latents[b : b + 1]
                )[1]
                for b in range(B)
            ]
        )  # [B, 4 + 16, t, h/8, w/8]
        image_embeds = pipe.encode_image(frames_to_pil(video[:, 0]), dev)  # [B, N, D_img]
        text, _ = pipe.encode_prompt(
            prompt=list(prompts),
            do_classifier_free_guidance=False,
            max_sequence_length=TEXT_LEN,
            device=dev,
            dtype=self.transformer.dtype,
        )  # [B, 512, D_txt]
        return {"latents": latents, "condition": cond, "image_embeds": image_embeds, "text_embeds": text}

    def sample_sigmas(self, n: int, g: torch.Generator) -> torch.Tensor:
        """n noise levels in (0, 1) [n] from the flow weighting, then the flow shift (drawn from g)."""
        f = self.flow
        if f["weighting"] == "logit_normal":
            u = torch.sigmoid(f["logit_mean"] + f["logit_std"] * torch.randn(n, generator=g))
        else:
            u = torch.rand(n, generator=g)
        return shift_sigmas(u, float(f["shift"]))

    def flow_loss(self, video: torch.Tensor, prompts: list[str], g: torch.Generator) -> torch.Tensor:
        """Flow-matching MSE (target noise − latents) on clips [B, T, C, H, W] with prompts, noise from g."""
        frames = self.model_frames(video)  # [B, T, 3, h, w]
        if len(prompts) != frames.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for {frames.shape[0]} videos")
        c = self.conditions(frames, prompts)
        x0 = c["latents"]  # [B, 16, t, h', w']
        B = x0.shape[0]
        sigma = self.sample_sigmas(B, g)  # [B]
        noise = torch.randn(x0.shape, generator=g).to(x0.device)  # [B, 16, t, h', w']
        s = sigma.to(x0.device).view(B, 1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * noise
        dtype = self.transformer.dtype
        pred = self.transformer(
            hidden_states=torch.cat([noisy, c["condition"]], dim=1).to(dtype),  # [B, 36, t, h', w']
            timestep=(sigma * 1000).to(x0.device, dtype),  # [B]
            encoder_hidden_states=c["text_embeds"].to(dtype),
            encoder_hidden_states_image=c["image_embeds"].to(dtype),
            return_dict=False,
        )[0]  # [B, 16, t, h', w']
        return F.mse_loss(pred.float(), noise - x0)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if "prompt" not in batch:
            raise KeyError(f"Wan LoRA training needs batch['prompt'] (text); batch keys: {sorted(batch)}")
        prompts = [batch["prompt"]] if isinstance(batch["prompt"], str) else list(batch["prompt"])
        # randomness depends on (seed, step) only, so a resumed run draws what it would have drawn
        g = torch_generator(derive_seed(self.seed, self.global_step))
        loss = self.flow_loss(batch["video"], prompts, g)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        g = torch_generator(derive_seed(self.seed, 1_000_003, batch_idx))  # same noise at every validation
        prompts = [batch["prompt"]] if isinstance(batch["prompt"], str) else list(batch["prompt"])
        loss = self.flow_loss(batch["video"], prompts, g)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_warmup(self.lora_parameters(), self.optim)

    # ----------------------------------------------------------------- sampling
    def generator(self) -> WanGenerator:
        """The Wan sampler over this module's components (the transformer with the LoRA active)."""
        return self.wan

    def load_weights(self, path: str | Path) -> None:
        """A LoRA file given as `ckpt_path` that is not a Lightning checkpoint (videxp-train / videxp-sample):
        loaded by `load_adapter`; no step is known, so None."""
        self.load_adapter(path)
        return None
