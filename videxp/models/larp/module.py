"""LARP as a LightningModule: the AR prior over a frozen tokenizer's ids (or the tokenizer); its generator."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from videxp.data.datamodule import VideoDataModule
from videxp.errors import ConfigError
from videxp.models.diffusers_common import merge_settings, resize_frames
from videxp.models.larp.ar import LARPAR, larp_ar_config
from videxp.models.larp.generator import DEFAULT_SAMPLING, LARPGenerator
from videxp.models.larp.token_cache import TokenDataModule
from videxp.models.larp.tokenizer import LARPTokenizer, larp_tokenizer_config
from videxp.models.larp.tokenizer_loss import DEFAULT_OPTIONS as DEFAULT_TOKENIZER_LOSS_OPTIONS
from videxp.models.larp.tokenizer_loss import TokenizerLoss, build_tokenizer_loss, check_options
from videxp.models.partial_training import SavesTrainedOnly
from videxp.models.pixel_losses import pixel_error
from videxp.utils.seeding import derive_seed, seeded_rng, torch_generator
from videxp.weights.state_check import load_state_strict

SIZES = {"paper": ("larp_l_long", "llama-abs-LP"), "tiny": ("tiny", "tiny")}  # size -> tokenizer, AR preset
STAGES = ("ar", "tokenizer")
DEFAULT_TOKENIZER = {
    "pretrained": "hywang66/LARP-L-long-tokenizer",  # hub id, folder or file; null = random init (preset)
    "revision": None,
    "dtype": "fp16",  # sampling dtype on GPU (LARP's sample.py); CPU decodes in fp32; training keeps fp32
    "deterministic": True,  # argmax VQ ids when encoding (LARP's AR trainer: eval_deterministic)
    "ckpt": None,  # random preset: the tokenizer.* weights of a stage=tokenizer run's .ckpt
    "preset": {},  # a random preset's constructor keywords overridden (e.g. query_init_std)
    "vq": {},  # a random preset's VQ arguments overridden (e.g. entropy_loss_weight)
}
DEFAULT_AR = {
    "pretrained": "hywang66/LARP-L-long-AR",
    "revision": None,
    "frame_prediction": False,  # random AR: condition on the observed frames' ids, not a class
    "cond_frames": 5,  # frame prediction: observed frames per training clip (LARP: num_cond_frames 5 of 16)
    "preset": {},  # a random AR's LARPARConfig fields overridden (e.g. dim, n_layer, n_head)
}
DEFAULT_OPTIM = {  # LARP cfgs/larp_ar.yaml
    "lr": 1e-4,
    "betas": (0.9, 0.95),
    "weight_decay": 0.0,
    "lr_type": "cosine",  # cosine | constant
    "warmup_epochs": 1.0,  # linear warm-up (LARP: warmup_epoch 1); in steps via the trainer's epochs
    "min_lr_mult": 0.01,  # the cosine ends at lr * min_lr_mult
    "max_grad_norm": 0.0,  # LARP: clip_grad_max_norm 0 = none (the Trainer's gradient_clip_val still applies)
}
DEFAULT_TOKENIZER_LOSS = {  # stage=tokenizer: LARP cfgs/larp_tokenizer.yaml + larp_tokenizer_trainer
    "l1": 1.0,  # pixel L1 (lpips_disc_loss: pixel_loss l1, pixelloss_weight 1.0)
    "l2": 0.0,  # pixel MSE: not a LARP term
    "saturate": False,  # l1 / l2: black and saturated targets are met by any overshoot (not a LARP option)
    "vq": 0.1,  # loss_q (commitment + codebook, weighted inside the VQ): loss_q_weight 0.1
    "prior": 0.06,  # loss_latent_ce of the GPTC prior: loss_latent_ce_weight 0.06
    "lpips": 0.0,  # LPIPS-VGG per frame (perceptual_weight): LARP 1.0
    "gan": 0.0,  # the discriminator's generator term (disc_weight, constant): LARP 0.3; > 0 = two optimisers
}
# a tokenizer loss part -> its weight in model.tokenizer_loss (the others: their own names)
LOSS_WEIGHT = {"gan_g": "gan"}
DISC_SEED_KEY = 2  # (seed, step, this): the discriminator's target noise (ns_smooth)

DEFAULT_TOKEN_CACHE_OPTIONS = {  # stage=ar with model.token_cache: how the cache is built (token_cache.py)
    "windows_per_video": None,  # training windows per video: None = every start the clip sampler may draw
    "flip": False,  # also each training window mirrored left-right; training draws either view
    "batch_clips": 32,  # windows per tokenizer call while building
    "device": "auto",  # where the tokenizer encodes while building: the trainer's device, or cpu / cuda
}


def build_tokenizer(size: str, settings: dict[str, Any], random: bool, with_prior: bool) -> LARPTokenizer:
    """The tokenizer `model.size` and `model.tokenizer` (DEFAULT_TOKENIZER keys) describe: with `random`, the
    size's preset with random weights (`preset` / `vq` overrides, then `ckpt`'s weights), else `pretrained`
    (hub id, folder or file). `with_prior`: build the training-only GPTC prior too."""
    t = {**DEFAULT_TOKENIZER, **settings}
    if random:
        config = larp_tokenizer_config(SIZES[size][0], **(t["preset"] or {}))
        config["bottleneck"]["args"]["regularizer"]["args"].update(t["vq"] or {})
        tokenizer = LARPTokenizer(**config, build_prior=with_prior)
        if t["ckpt"] is not None:
            load_tokenizer_ckpt(tokenizer, t["ckpt"])
        return tokenizer
    if t["ckpt"] is not None or t["vq"] or t["preset"]:
        raise ConfigError(
            "model.tokenizer.ckpt / preset / vq apply to a random preset tokenizer (size=tiny or "
            f"pretrained null); this one is {t['pretrained']}"
        )
    return LARPTokenizer.from_pretrained(t["pretrained"], t["revision"], with_prior=with_prior)


class LARPModule(SavesTrainedOnly, L.LightningModule):
    """LARP's tokenizer + AR prior. stage=ar trains the AR on the ids of the frozen tokenizer (deterministic
    VQ), teacher-forced cross-entropy with class labels (dropped to the null class at the AR's
    class_dropout_prob for guidance); stage=tokenizer trains the tokenizer with its own training forward (L1 +
    L2 reconstruction, the VQ losses and the prior's latent CE). `state_dict()` holds the trained network
    only; the other is rebuilt from its config. `size=tiny` or a null `pretrained` builds random networks
    from the presets. `token_cache` (a folder, stage=ar): the tokenizer's ids of each split are encoded once
    (`token_cache_options`: DEFAULT_TOKEN_CACHE_OPTIONS) and the AR trains on them, with the same loss."""

    sampling_keys = ("sampling",)

    @staticmethod
    def config_weights(cfg: dict[str, Any]) -> str | None:
        """The pretrained AR a config names (None: random weights, with size=tiny or ar.pretrained null)."""
        ar = {**DEFAULT_AR, **(cfg.get("ar") or {})}["pretrained"]
        return None if cfg.get("size", "paper") == "tiny" or ar is None else f"pretrained {ar}"

    def __init__(
        self,
        size: str = "paper",
        stage: str = "ar",
        num_classes: int = 101,
        tokenizer: dict[str, Any] | None = None,
        ar: dict[str, Any] | None = None,
        sampling: dict[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        tokenizer_loss: dict[str, Any] | None = None,
        tokenizer_loss_options: dict[str, Any] | None = None,
        tiny_seed: int = 0,
        seed: int = 0,
        token_cache: str | None = None,
        token_cache_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if size not in SIZES:
            raise ConfigError(f"model.size must be one of {sorted(SIZES)}, got {size!r}")
        if stage not in STAGES:
            raise ConfigError(f"model.stage must be one of {STAGES}, got {stage!r}")
        self.size, self.stage, self.seed = size, stage, int(seed)
        self.tokenizer_cfg = merge_settings(tokenizer, DEFAULT_TOKENIZER, "tokenizer")
        self.ar_cfg = merge_settings(ar, DEFAULT_AR, "ar")
        self.cond_frames = int(self.ar_cfg["cond_frames"])
        self.sampling = merge_settings(sampling, DEFAULT_SAMPLING, "sampling")
        self.optim = merge_settings(optim, DEFAULT_OPTIM, "optim")
        self.loss_weights = merge_settings(tokenizer_loss, DEFAULT_TOKENIZER_LOSS, "tokenizer_loss")
        self.loss_options = merge_settings(
            tokenizer_loss_options, DEFAULT_TOKENIZER_LOSS_OPTIONS, "tokenizer_loss_options"
        )
        check_options(self.loss_options)
        self.token_cache = None if token_cache is None else str(token_cache)
        self.token_cache_options = merge_settings(
            token_cache_options, DEFAULT_TOKEN_CACHE_OPTIONS, "token_cache_options"
        )
        self._check_token_cache()
        if self.ar_cfg["preset"] and not self._random("ar"):
            raise ConfigError(
                "model.ar.preset applies to a random AR (size=tiny or ar.pretrained null); this one is "
                f"{self.ar_cfg['pretrained']}"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(tiny_seed))
            self.tokenizer = self._build_tokenizer()
            self.ar = self._build_ar(int(num_classes))
            self.loss = self._build_loss()  # stage=tokenizer with lpips / gan > 0: LPIPS, discriminator
        self.automatic_optimization = self.loss is None or self.loss.discriminator is None
        self.trainer_clip: tuple[float, Any] | None = None  # manual: trainer.gradient_clip_val, taken over
        self.tokenizer.set_vq_eval_deterministic(bool(self.tokenizer_cfg["deterministic"]))
        if self.ar.frame_prediction and not 1 <= self.cond_frames < self.tokenizer.frame_num:
            raise ConfigError(
                f"model.ar.cond_frames={self.cond_frames}: a frame-prediction AR observes 1 to "
                f"{self.tokenizer.frame_num - 1} of the tokenizer's {self.tokenizer.frame_num} frames"
            )
        frozen = self.tokenizer if stage == "ar" else self.ar
        frozen.requires_grad_(False).eval()

    # ----------------------------------------------------------------- building
    def _check_token_cache(self) -> None:
        if self.token_cache is not None and self.stage != "ar":
            raise ConfigError(
                f"model.token_cache={self.token_cache}: the token cache holds the frozen tokenizer's ids for "
                f"stage=ar; stage={self.stage} trains on pixels (set model.token_cache=null)"
            )
        o = self.token_cache_options
        k = o["windows_per_video"]
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"model.token_cache_options.windows_per_video must be null or >= 1, got {k!r}")
        if (
            isinstance(o["batch_clips"], bool)
            or not isinstance(o["batch_clips"], int)
            or o["batch_clips"] < 1
        ):
            raise ConfigError(f"model.token_cache_options.batch_clips must be >= 1, got {o['batch_clips']!r}")

    def prepare_datamodule(self, datamodule: L.LightningDataModule) -> L.LightningDataModule:
        """stage=ar with `token_cache`: the AR trains on ids cached once in ``<token_cache>/<split>.h5``
        (built on first use by the frozen tokenizer; TokenDataModule); pixels otherwise."""
        if self.token_cache is None:
            return datamodule
        if not isinstance(datamodule, VideoDataModule):
            raise ConfigError(
                f"model.token_cache needs a VideoDataModule dataset (videxp.data.datamodule), got "
                f"{type(datamodule).__name__}"
            )
        return TokenDataModule(datamodule, self.token_cache, self, **self.token_cache_options)

    def _random(self, what: str) -> bool:
        cfg = self.tokenizer_cfg if what == "tokenizer" else self.ar_cfg
        return self.size == "tiny" or cfg["pretrained"] is None

    def _build_tokenizer(self) -> LARPTokenizer:
        random = self._random("tokenizer")
        return build_tokenizer(self.size, self.tokenizer_cfg, random, with_prior=self.stage == "tokenizer")

    def _build_ar(self, num_classes: int) -> LARPAR:
        fp = bool(self.ar_cfg["frame_prediction"])
        preset = dict(self.ar_cfg["preset"] or {})
        if self._random("ar"):
            sized = {"num_classes": num_classes}
            if fp:  # LARP's FP trainer sizes the AR from the tokenizer: N ids, +1 separator
                t = self.tokenizer
                sized.update(
                    frame_prediction=True,
                    cls_token_num=t.bottleneck_token_num + 1,
                    max_seq_len=t.bottleneck_token_num,
                    vocab_size=t.codebook_size,
                )
            return LARPAR(larp_ar_config(SIZES[self.size][1], **preset, **sized))
        ar = LARPAR.from_pretrained(self.ar_cfg["pretrained"], self.ar_cfg["revision"])
        if fp and not ar.frame_prediction:
            raise ConfigError(
                f"model.ar.frame_prediction=true but {self.ar_cfg['pretrained']} is a class-conditional AR"
            )
        if not ar.frame_prediction and ar.num_classes != num_classes:
            raise ConfigError(
                f"{self.ar_cfg['pretrained']} has {ar.num_classes} classes, model.num_classes={num_classes}: "
                "use a dataset with that many classes or set model.num_classes"
            )
        return ar

    def _build_loss(self) -> TokenizerLoss | None:
        """stage=tokenizer: the LPIPS / GAN terms model.tokenizer_loss switches on (None: neither)."""
        if self.stage != "tokenizer":
            return None
        t = self.tokenizer
        return build_tokenizer_loss(
            self.loss_weights, self.loss_options, self.size, t.frame_num, t.input_size
        )

    def saved_keys(self) -> set[str]:
        """The trained network's keys (SavesTrainedOnly): ar.* (stage=ar) or tokenizer.* (stage=tokenizer),
        and with gan > 0 the discriminator and LeCam's EMA (loss.*); never the LPIPS network."""
        net = "ar" if self.stage == "ar" else "tokenizer"
        keys = {f"{net}.{k}" for k in getattr(self, net).state_dict()}
        return keys | {f"loss.{k}" for k in (self.loss.saved_keys() if self.loss is not None else [])}

    def describe_saved(self) -> str:
        return f"LARP {self.stage} ({self.size})"

    def train(self, mode: bool = True) -> LARPModule:
        super().train(mode)
        (self.tokenizer if self.stage == "ar" else self.ar).eval()
        return self

    def save_pretrained(self, folder: str | Path) -> dict[str, Path]:
        """Both networks in LARP's released layout: <folder>/tokenizer and <folder>/ar (config.json +
        model.safetensors each), loadable by from_pretrained and by model.{tokenizer,ar}.pretrained."""
        folder = Path(folder)
        return {
            "tokenizer": self.tokenizer.save_pretrained(folder / "tokenizer"),
            "ar": self.ar.save_pretrained(folder / "ar"),
        }

    # ----------------------------------------------------------------- sampling
    def generator(self) -> LARPGenerator:
        gpu = self.device.type == "cuda"
        dtype = self.tokenizer_cfg["dtype"] if gpu else torch.float32
        if self.ar.frame_prediction:
            dtype = torch.float32  # LARP's predict_frames runs the tokenizer in fp32
        names = {
            "ar_model": "random" if self._random("ar") else self.ar_cfg["pretrained"],
            "tokenizer": "random" if self._random("tokenizer") else self.tokenizer_cfg["pretrained"],
        }
        return LARPGenerator(self.tokenizer, self.ar, self.sampling, dtype, {**names, "size": self.size})

    # ----------------------------------------------------------------- training
    def clip(self, video: torch.Tensor) -> torch.Tensor:
        """batch["video"] [B, T, C, H, W] in [-1, 1] -> the tokenizer's input [B, 3, frame_num, S, S] in
        [0, 1]: the first frame_num frames, resized to S x S, grey repeated to RGB."""
        t = self.tokenizer
        if video.ndim != 5 or video.shape[1] < t.frame_num or video.shape[2] not in (1, 3):
            raise ValueError(
                f"LARP trains on [B, T >= {t.frame_num}, 1 or 3, H, W] clips, got {tuple(video.shape)}"
            )
        x = resize_frames(video[:, : t.frame_num].float(), (t.input_size, t.input_size))  # [B, T, C, S, S]
        x = x.expand(-1, -1, 3, -1, -1)
        return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4).contiguous()  # [B, 3, T, S, S]

    def labels(self, batch: dict[str, Any], B: int) -> torch.Tensor:
        """batch["label"] [B] int64 (missing or negative: the null class, -1)."""
        given = batch.get("label")
        if given is None:
            return torch.full((B,), -1, dtype=torch.int64, device=self.device)
        y = torch.as_tensor(given, device=self.device).reshape(-1).long()
        if y.numel() != B or int(y.max()) >= self.ar.num_classes:
            raise ValueError(f"batch['label'] must hold {B} labels < {self.ar.num_classes}, got {y.tolist()}")
        return y.clamp_min(-1)

    @torch.no_grad()
    def tokens(self, clip: torch.Tensor) -> torch.Tensor:
        """The frozen tokenizer's ids [B, N] of clip [B, 3, T, S, S] (deterministic VQ in eval mode)."""
        return self.tokenizer.encode(clip.to(self.tokenizer.dtype))["bottleneck_rep"].long()

    @property
    def frame_prediction(self) -> bool:
        """Whether the AR continues observed frames (condition: their ids + a separator), not a class."""
        return bool(self.ar.frame_prediction)

    def observed(self, clip: torch.Tensor) -> torch.Tensor:
        """The observed part of clip [B, 3, T, S, S] as a clip: its first cond_frames frames padded to T with
        the last of them (LARP's repeat_to_m_frames): [B, 3, T, S, S]."""
        n, T = self.cond_frames, clip.shape[2]
        return torch.cat([clip[:, :, :n], clip[:, :, n - 1 : n].expand(-1, -1, T - n, -1, -1)], 2)

    def with_separator(self, ids: torch.Tensor) -> torch.Tensor:
        """Observed ids [B, N] followed by the separator id (codebook_size): the condition [B, N + 1]."""
        return torch.cat([ids, ids.new_full((ids.shape[0], 1), self.tokenizer.codebook_size)], 1)

    def condition(self, clip: torch.Tensor) -> torch.Tensor:
        """A frame-prediction AR's condition of clip [B, 3, T, S, S]: the ids of its `observed` clip, then the
        separator id: [B, N + 1]."""
        return self.with_separator(self.tokens(self.observed(clip)))  # [B, N + 1]

    def ar_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Teacher-forced cross-entropy of the clip's ids given its class label (class-conditional) or the ids
        of its first cond_frames frames (frame prediction; LARP's larp_ar_fp_trainer). The ids come from
        the frozen tokenizer, or from a token cache's batch: ``ids`` [B, N] (+ ``cond_ids`` [B, N])."""
        if "ids" in batch:  # model.token_cache (token_cache.py): encoded once, the same ids
            ids = torch.as_tensor(batch["ids"], device=self.device).long()  # [B, N]
            if self.frame_prediction:
                if "cond_ids" not in batch:
                    raise ValueError("a frame-prediction AR needs batch['cond_ids'] beside batch['ids']")
                cond = self.with_separator(torch.as_tensor(batch["cond_ids"], device=self.device).long())
            else:
                cond = self.labels(batch, ids.shape[0])
        else:
            clip = self.clip(batch["video"])  # [B, 3, T, S, S]
            ids = self.tokens(clip)  # [B, N]
            cond = self.condition(clip) if self.frame_prediction else self.labels(batch, ids.shape[0])
        _, loss = self.ar(idx=ids[:, :-1], cond_idx=cond, targets=ids)
        return loss

    def reconstruct(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """The clip x [B, 3, T, S, S] of a batch and the tokenizer's training pass over it. With the LPIPS /
        GAN terms on, a training pass draws its randomness (sampled VQ ids, the prior's scheduled sampling and
        dropout) from (seed, global_step), so a resumed run draws what the uninterrupted one did; without
        them it draws from the global RNG as before."""
        x = self.clip(batch["video"])  # [B, 3, T, S, S]
        steps = self.trainer.max_steps if self._trainer is not None and self.trainer.max_steps > 0 else 1
        seeded = self.training and self.loss is not None
        with seeded_rng(derive_seed(self.seed, self.global_step), x.device, enabled=seeded):
            out = self.tokenizer(x, global_step=self.global_step, max_steps=steps)
        return x, out

    def tokenizer_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.tokenizer_terms(*self.reconstruct(batch))

    def tokenizer_terms(self, x: torch.Tensor, out: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The tokenizer's loss parts for clip x and its training pass `out`, and their weighted sum `loss`:
        l1, l2, vq, prior, and with the options lpips and gan_g (the generator's adversarial term)."""
        w, pred = self.loss_weights, out["pred_frames"]
        saturate = bool(w["saturate"])  # pred [B, 3, T, S, S] against x in [0, 1]
        parts = {k: pixel_error(x, pred, k, 0.0, 1.0, saturate).mean() for k in ("l1", "l2")}
        parts["vq"] = out["loss_q"]
        if "loss_latent_ce" in out:
            parts["prior"] = out["loss_latent_ce"]
        if self.loss is not None:
            parts.update(self.loss.generator_terms(x, pred, self.global_step))
        parts["loss"] = sum(float(w[LOSS_WEIGHT.get(k, k)]) * v for k, v in parts.items())
        return parts

    def adversarial_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One manual-optimisation step (gan > 0) in LARP's order: the tokenizer's pass; on the
        discriminator's steps its update on the detached reconstructions (its lr: disc_lr times the
        tokenizer's schedule multiplier, as LARP's); the tokenizer's update with the (updated)
        discriminator's generator term. Only the tokenizer's optimiser step counts in global_step (the
        discriminator's goes through the strategy directly): steps stay batches."""
        opt_g, opt_d = self.optimizers()
        schedule = self.lr_schedulers()  # the tokenizer's LambdaLR
        step, disc = self.global_step, self.loss.discriminator
        x, out = self.reconstruct(batch)
        logs = {}
        if self.loss.trains_discriminator(step):
            mult = schedule.lr_lambdas[0](schedule.last_epoch)
            for group in opt_d.param_groups:
                group["lr"] = float(self.loss_options["disc_lr"]) * mult
            disc.requires_grad_(True)
            noise = torch_generator(derive_seed(self.seed, step, DISC_SEED_KEY))
            d = self.loss.discriminator_loss(x, out["pred_frames"].detach(), noise)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d["loss"])
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=_no_closure)
            logs = {k: d[k] for k in ("gan_d", "lecam")}
            logs |= {"gan_logits_real": d["logits_real"], "gan_logits_fake": d["logits_fake"]}
        disc.requires_grad_(False)  # the generator term reaches the reconstruction only
        parts = self.tokenizer_terms(x, out)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(parts["loss"])
        opt_g.step()
        schedule.step()
        return {**parts, **logs}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.stage == "ar":
            loss = self.ar_loss(batch)
        else:
            parts = (
                self.tokenizer_loss(batch) if self.automatic_optimization else self.adversarial_step(batch)
            )
            self.log_dict({f"train/{k}": v for k, v in parts.items() if k != "loss"})
            loss = parts["loss"]
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.ar_loss(batch) if self.stage == "ar" else self.tokenizer_loss(batch)["loss"]
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if gradient_clip_val is None and self.optim["max_grad_norm"]:
            gradient_clip_val, gradient_clip_algorithm = float(self.optim["max_grad_norm"]), "norm"
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_callbacks(self) -> list[L.Callback]:
        """Manual optimisation (gan > 0): Lightning refuses trainer.gradient_clip_val then (this hook runs
        before its check), so the module takes the value over and clips both optimisers in
        on_before_optimizer_step; gradient accumulation is refused."""
        if not self.automatic_optimization and self._trainer is not None:
            t = self.trainer
            if t.accumulate_grad_batches != 1:
                raise ConfigError(
                    f"trainer.accumulate_grad_batches={t.accumulate_grad_batches}: with "
                    "model.tokenizer_loss.gan > 0 two optimisers step by hand once a batch; set it to 1"
                )
            if t.gradient_clip_val:
                self.trainer_clip = (float(t.gradient_clip_val), t.gradient_clip_algorithm)
                t.gradient_clip_val = None
        return []

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Manual optimisation: clip each optimiser's gradients (after AMP unscaling) to the Trainer's
        gradient_clip_val, else optim.max_grad_norm (LARP clips the tokenizer and the discriminator alike)."""
        if self.automatic_optimization:
            return
        if self.trainer_clip is not None:
            self.clip_gradients(optimizer, *self.trainer_clip)
        elif self.optim["max_grad_norm"]:
            self.clip_gradients(optimizer, float(self.optim["max_grad_norm"]), "norm")

    def configure_optimizers(self) -> dict[str, Any] | list[dict[str, Any]]:
        """AdamW with linear warm-up then cosine decay to lr * min_lr_mult (LARP's AR schedule), per step.
        With gan > 0 also the discriminator's Adam (disc_lr, disc_betas; lr set in adversarial_step)."""
        o = self.optim
        net = self.ar if self.stage == "ar" else self.tokenizer
        opt = torch.optim.AdamW(
            [p for p in net.parameters() if p.requires_grad],
            lr=float(o["lr"]),
            betas=tuple(float(b) for b in o["betas"]),
            weight_decay=float(o["weight_decay"]),
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else None
        warmup = int(total * float(o["warmup_epochs"]) / epochs) if epochs else 0
        schedule = lr_lambda(str(o["lr_type"]), warmup, total, float(o["min_lr_mult"]))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        if self.automatic_optimization:
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        d = self.loss_options
        betas = tuple(float(b) for b in d["disc_betas"])
        opt_d = torch.optim.Adam(self.loss.discriminator.parameters(), lr=float(d["disc_lr"]), betas=betas)
        # manual: adversarial_step steps the schedule per batch and sets the discriminator's lr from it
        return [{"optimizer": opt, "lr_scheduler": {"scheduler": sched}}, {"optimizer": opt_d}]


def load_tokenizer_ckpt(tokenizer: LARPTokenizer, path: str | Path) -> None:
    """The tokenizer.* weights of a stage=tokenizer LARPModule checkpoint into `tokenizer`, strictly (the
    GPTC prior's keys are skipped when `tokenizer` was built without it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.tokenizer.ckpt: no file {path} (a stage=tokenizer run's last.ckpt)")
    state = torch.load(path, map_location="cpu", weights_only=True).get("state_dict", {})
    state = {k.removeprefix("tokenizer."): v for k, v in state.items() if k.startswith("tokenizer.")}
    if tokenizer.prior_model is None:
        state = {k: v for k, v in state.items() if not k.startswith("prior_model.")}
    if not state:
        raise ConfigError(f"model.tokenizer.ckpt: {path} holds no tokenizer.* weights (a stage=ar run?)")
    load_state_strict(tokenizer, state, str(path), "the LARP tokenizer preset")


def _no_closure() -> None:
    """The closure of an optimiser step whose backward already ran (manual optimisation)."""


def lr_lambda(kind: str, warmup: int, total: int, min_mult: float):
    """Step -> lr multiplier: linear warm-up over `warmup` steps, then constant or cosine to `min_mult`."""
    if kind not in ("cosine", "constant"):
        raise ConfigError(f"model.optim.lr_type must be cosine or constant, got {kind!r}")

    def mult(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_mult + (1 - min_mult) * 0.5 * (1 + math.cos(math.pi * progress))

    return mult
