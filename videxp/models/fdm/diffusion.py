"""FDM's Gaussian diffusion: DDPM schedules, masked MSE loss (eps, x0 or v), ancestral and DDIM sampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from videxp.utils.seeding import randn_rows

# model_fn(x_t [B, T, C, H, W], t_model [B] float) -> the prediction [B, T, C, H, W] (eps for FDM; x0 or v
# with `prediction`). t_model is the model time:
# the original-chain step times 1000 / diffusion_steps when rescale_timesteps (FDM), else the step itself.
# The closure carries the conditioning, e.g. for FDMUNet:
#   lambda x_t, t: net(x_t, x0=x0, timesteps=t, frame_indices=idx, obs_mask=obs, latent_mask=lat)
# and class labels with classifier-free guidance (eps only; the sampler sees the guided eps):
#   lambda x_t, t: net.guided_forward(x_t, ..., y=labels, guidance_scale=s)
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- schedules
def get_named_beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """Betas [N] (float64): "linear" (1e-4 .. 0.02, scaled by 1000/N) or "cosine" (Nichol & Dhariwal)."""
    if name == "linear":
        scale = 1000 / num_steps
        return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)
    if name == "cosine":
        return betas_for_alpha_bar(num_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise ValueError(f"unknown noise schedule {name!r}; use 'linear' or 'cosine'")


def betas_for_alpha_bar(
    num_steps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999
) -> np.ndarray:
    """Betas [N] that discretise a cumulative alpha_bar(t), t in [0, 1], capped at max_beta."""
    betas = [
        min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)
    ]
    return np.array(betas, dtype=np.float64)


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> set[int]:
    """Which original steps a respaced chain keeps (FDM/improved-diffusion `space_timesteps`).

    "ddimN": the fixed integer stride giving exactly N steps from 0 (DDIM paper). Otherwise a
    comma list "a,b,..." (or int / sequence): the chain is cut into equal sections and section i
    keeps a_i steps evenly spaced (rounded) from its first to its last step.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(
                f"cannot create exactly {desired} steps out of {num_timesteps} with an integer stride"
            )
        section_counts = [int(x) for x in section_counts.split(",")]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        pos = 0.0
        for _ in range(count):  # a running float sum, not j * stride: rounding must match FDM's
            steps.append(start + round(pos))
            pos += stride
        start += size
    return set(steps)


@dataclass(frozen=True)
class Schedule:
    """Per-step constants (float64 numpy, length N') of one chain, possibly respaced.

    `timestep_map[i]` is the original step that chain step i stands for; the respaced betas are
    1 - abar[t_i] / abar[t_{i-1}] (FDM's `SpacedDiffusion`, which FDM uses even for the full chain).
    """

    timestep_map: np.ndarray
    betas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray

    @classmethod
    def respaced(cls, base_alphas_cumprod: np.ndarray, use_steps: set[int]) -> Schedule:
        """The chain over the kept steps `use_steps` of a base chain with cumulative alphas [N]."""
        betas, timestep_map, last = [], [], 1.0
        for i, abar in enumerate(base_alphas_cumprod):
            if i in use_steps:
                betas.append(1 - abar / last)
                last = abar
                timestep_map.append(i)
        b = np.array(betas, dtype=np.float64)
        if not ((b > 0).all() and (b <= 1).all()):
            raise ValueError("betas must lie in (0, 1]")
        ac = np.cumprod(1.0 - b)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        return cls(
            timestep_map=np.array(timestep_map, dtype=np.int64),
            betas=b,
            alphas_cumprod=ac,
            alphas_cumprod_prev=ac_prev,
            sqrt_alphas_cumprod=np.sqrt(ac),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ac),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1),
            posterior_variance=post_var,
            # the posterior variance is 0 at step 0, so its log takes step 1's value there (a 1-step
            # chain never adds noise; beta stands in)
            posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:]) if len(b) > 1 else b),
            posterior_mean_coef1=b * np.sqrt(ac_prev) / (1.0 - ac),
            posterior_mean_coef2=(1.0 - ac_prev) * np.sqrt(1.0 - b) / (1.0 - ac),
        )

    def __len__(self) -> int:
        return len(self.betas)


def _extract(arr: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """arr[t] as float32 [B, 1, ..., 1] with `ndim` dims (FDM's `_extract_into_tensor`)."""
    out = torch.from_numpy(arr).to(t.device)[t].float()  # [B]
    return out.view(-1, *([1] * (ndim - 1)))


def _frame_mask5(mask: torch.Tensor, B: int, T: int, name: str) -> torch.Tensor:
    """A per-frame mask given as [B, T] or [B, T, 1, 1, 1] -> [B, T, 1, 1, 1]."""
    if tuple(mask.shape) not in ((B, T), (B, T, 1, 1, 1)):
        raise ValueError(f"{name} must be [B, T] or [B, T, 1, 1, 1] (B={B}, T={T}), got {list(mask.shape)}")
    return mask.reshape(B, T, 1, 1, 1)


def mean_flat(x: torch.Tensor, mask: torch.Tensor | None = None, normalise: str = "all") -> torch.Tensor:
    """Per-row mean of x [B, ...] after multiplying by mask (broadcastable to x).

    normalise="all" (FDM): divide by ALL non-batch elements, so rows with few masked frames weigh
    less. normalise="masked": divide by the number of masked elements instead (0 -> 0 loss).
    """
    dims = list(range(1, x.ndim))
    if mask is None:
        return x.mean(dim=dims)
    x = x * mask
    if normalise == "all":
        return x.mean(dim=dims)
    if normalise == "masked":
        count = torch.broadcast_to(mask, x.shape).sum(dim=dims)
        return x.sum(dim=dims) / count.clamp(min=1)
    raise ValueError(f"unknown normalise {normalise!r}; use 'all' or 'masked'")


# ----------------------------------------------------------------------------- diffusion
PREDICTIONS = ("eps", "x0", "v")
LOSS_WEIGHTINGS = ("none", "min_snr")
TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")


class GaussianDiffusion:
    """DDPM with fixed variances, as configured by FDM (no learned sigma, no KL loss).

    diffusion_steps: N steps of the base chain; noise_schedule: "linear" | "cosine";
    sigma_small: False = fixed-large variance (beta_t; FDM), True = fixed-small (posterior variance);
    rescale_timesteps: the model sees step * 1000 / N (FDM) instead of the integer step;
    loss_normalisation: "all" = FDM's `mean_flat` (mask, then average over all T*C*H*W) | "masked";
    prediction: what the network outputs and the loss compares: "eps" (FDM, Ho et al.), "x0" (the clean
    frames) or "v" = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022);
    loss_weighting: "none" (each target's plain MSE) | "min_snr" (Hang et al. 2023: the x0-MSE weighted by
    min(SNR, gamma), written in the chosen target's units; `min_snr_gamma` = gamma);
    timestep_sampling: training steps t ~ "uniform" over the N steps (FDM) | "logit_normal":
    t = N sigmoid(m + s n), n ~ N(0, 1), m = `logit_mean`, s = `logit_std` (Esser et al. 2024; m > 0 trains
    more at high noise).
    """

    def __init__(
        self,
        diffusion_steps: int = 1000,
        noise_schedule: str = "linear",
        sigma_small: bool = False,
        rescale_timesteps: bool = True,
        loss_normalisation: str = "all",
        prediction: str = "eps",
        loss_weighting: str = "none",
        min_snr_gamma: float = 5.0,
        timestep_sampling: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
    ):
        if loss_normalisation not in ("all", "masked"):
            raise ValueError(f"loss_normalisation must be 'all' or 'masked', got {loss_normalisation!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}")
        if min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {min_snr_gamma}")
        if timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(
                f"timestep_sampling must be one of {TIMESTEP_SAMPLINGS}, got {timestep_sampling!r}"
            )
        if logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {logit_std}")
        self.num_timesteps = int(diffusion_steps)
        self.noise_schedule = noise_schedule
        self.sigma_small = sigma_small
        self.rescale_timesteps = rescale_timesteps
        self.loss_normalisation = loss_normalisation
        self.prediction = prediction
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = float(min_snr_gamma)
        self.timestep_sampling = timestep_sampling
        self.logit_mean, self.logit_std = float(logit_mean), float(logit_std)
        base_betas = get_named_beta_schedule(noise_schedule, self.num_timesteps)
        self.base_alphas_cumprod = np.cumprod(1.0 - base_betas)
        self._schedules: dict[str, Schedule] = {}
        self.base = self.schedule(None)  # FDM's SpacedDiffusion over all steps

    # ------------------------------------------------------------- schedules and time
    def schedule(self, timestep_respacing: str | int | Sequence[int] | None = None) -> Schedule:
        """The (cached) chain for a respacing: None / "" = all N steps, "K" / K, "a,b,..", or "ddimK"."""
        if timestep_respacing is None or timestep_respacing == "":
            key: str = str(self.num_timesteps)
        elif isinstance(timestep_respacing, (str, int)):
            key = str(timestep_respacing)
        else:
            key = ",".join(str(int(c)) for c in timestep_respacing)
        if key not in self._schedules:
            use_steps = space_timesteps(self.num_timesteps, key)
            self._schedules[key] = Schedule.respaced(self.base_alphas_cumprod, use_steps)
        return self._schedules[key]

    def model_time(self, sched: Schedule, t: torch.Tensor) -> torch.Tensor:
        """Chain steps t [B] -> what the network sees [B] (original step, times 1000/N if rescaled)."""
        steps = torch.from_numpy(sched.timestep_map).to(t.device)[t]  # [B] original steps
        if self.rescale_timesteps:
            return steps.float() * (1000.0 / self.num_timesteps)
        return steps

    # ------------------------------------------------------------- forward process and loss
    def sample_timesteps(self, batch: int, g: torch.Generator) -> torch.Tensor:
        """Training steps t [B] (int64, on g's device) drawn from g per `timestep_sampling`."""
        if self.timestep_sampling == "uniform":
            return torch.randint(0, self.num_timesteps, (batch,), generator=g)
        u = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(batch, generator=g))  # [B] in (0, 1)
        return (u * self.num_timesteps).long().clamp(max=self.num_timesteps - 1)

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise; x_start, noise [B, ...], t [B] base steps."""
        if noise.shape != x_start.shape:
            raise ValueError(f"noise shape {list(noise.shape)} != x_start shape {list(x_start.shape)}")
        s = self.base
        return (
            _extract(s.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
            + _extract(s.sqrt_one_minus_alphas_cumprod, t, x_start.ndim) * noise
        )

    def split_prediction(
        self, sched: Schedule, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The network output `out` at chain steps t [B] -> (x0, eps) predictions, each like x_t."""
        a = _extract(sched.sqrt_alphas_cumprod, t, x_t.ndim)  # sqrt(abar_t)
        s = _extract(sched.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)  # sqrt(1 - abar_t)
        if self.prediction == "eps":
            return (x_t - s * out) / a, out
        if self.prediction == "x0":
            return out, (x_t - a * out) / s
        return a * x_t - s * out, s * x_t + a * out  # v: x0 = a x_t - s v, eps = s x_t + a v

    def target(self, x_start: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output at base steps t [B]: eps, x0 or v."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x_start
        s = self.base
        return (
            _extract(s.sqrt_alphas_cumprod, t, x_start.ndim) * noise
            - _extract(s.sqrt_one_minus_alphas_cumprod, t, x_start.ndim) * x_start
        )

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-row weight [B] of the target's MSE at base steps t [B] (1 unless loss_weighting="min_snr").

        min-SNR-gamma weighs the x0 error by min(SNR, gamma); an eps error is the x0 error times SNR and a
        v error the x0 error times SNR + 1 (Hang et al. 2023), hence the divisions.
        """
        if self.loss_weighting == "none":
            return torch.ones(t.shape, device=t.device)
        abar = torch.from_numpy(self.base.alphas_cumprod).to(t.device)[t]  # [B] float64
        snr = abar / (1 - abar)
        weight = snr.clamp(max=self.min_snr_gamma)
        if self.prediction == "eps":
            weight = weight / snr
        elif self.prediction == "v":
            weight = weight / (snr + 1)
        return weight.float()

    def training_losses(
        self,
        model_fn: ModelFn,
        x_start: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        obs_mask: torch.Tensor | None = None,
        latent_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-row MSE [B] of the prediction (eps, x0 or v) at base steps t [B] for x_start [B, T, C, H, W].

        noise: [B, T, C, H, W] (default: torch.randn_like, i.e. the global RNG). obs_mask [B, T] or
        [B, T, 1, 1, 1]: observed frames of x_t are set to x_start (the network takes them from x0
        anyway). latent_mask (same shapes) selects the frames in the loss; FDM passes 1 - obs_mask so
        padding frames are trained too. With FDM's normalisation the masked squared error is averaged
        over ALL T*C*H*W elements, not just the masked ones.
        """
        B, T = x_start.shape[:2]
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise)  # [B, T, C, H, W]
        if obs_mask is not None:
            obs = _frame_mask5(obs_mask, B, T, "obs_mask")
            x_t = torch.where(obs > 0.5, x_start, x_t)
        out = model_fn(x_t, self.model_time(self.base, t))
        if out.shape != x_start.shape:
            raise ValueError(f"model output {list(out.shape)} != {list(x_start.shape)} (no learned sigma)")
        mask = None if latent_mask is None else _frame_mask5(latent_mask, B, T, "latent_mask").to(out.dtype)
        mse = mean_flat((self.target(x_start, noise, t) - out) ** 2, mask, self.loss_normalisation)
        return mse * self.loss_weight(t) if self.loss_weighting != "none" else mse

    # ------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        shape: Sequence[int],
        x0: torch.Tensor,
        obs_mask: torch.Tensor,
        latent_mask: torch.Tensor | None = None,
        generators: Sequence[torch.Generator] | None = None,
        timestep_respacing: str | int | Sequence[int] | None = None,
        use_ddim: bool = False,
        eta: float = 0.0,
        clip_denoised: bool = True,
        progress: bool = False,
    ) -> torch.Tensor:
        """Run the reverse chain and return x_0 samples [B, T, C, H, W] (`shape`).

        x0 [B, T, C, H, W]: clean frames, used where obs_mask ([B, T] or [B, T, 1, 1, 1]) is 1; observed
        frames of x are reset to x0 after every step, so they come out exactly equal to x0. latent_mask is
        only shape-checked here (model_fn carries it to the network); flag-0 padding frames are sampled
        like latents. generators: one torch.Generator per row (required); row b's initial noise and
        every step's noise come from generators[b] only, so a row's result does not depend on the
        other rows. timestep_respacing: None / "" (all N steps), "K", "a,b,...", or "ddimK" (FDM
        semantics). use_ddim: DDIM updates over the respaced steps (eta = 0: deterministic given the
        initial noise; no noise is drawn). Otherwise ancestral sampling with fixed-large (or small)
        variance. clip_denoised clips the predicted x_0 to [-1, 1].
        """
        shape = tuple(int(s) for s in shape)
        B, T = shape[:2]
        if tuple(x0.shape) != shape:
            raise ValueError(f"x0 shape {list(x0.shape)} != sample shape {list(shape)}")
        if generators is None or len(generators) != B:
            raise ValueError(
                f"need one torch.Generator per batch row ({B}), got "
                f"{None if generators is None else len(generators)}"
            )
        obs = _frame_mask5(obs_mask, B, T, "obs_mask") > 0.5  # [B, T, 1, 1, 1] bool
        if latent_mask is not None:
            _frame_mask5(latent_mask, B, T, "latent_mask")
        sched = self.schedule(timestep_respacing)
        if self.sigma_small:
            log_var = sched.posterior_log_variance_clipped
        else:  # fixed-large: beta_t, with step 0 taking the posterior variance of step 1 (FDM)
            log_var = np.log(
                np.append(sched.posterior_variance[1], sched.betas[1:]) if len(sched) > 1 else sched.betas
            )
        device, dtype = x0.device, x0.dtype

        x = randn_rows(generators, shape[1:], device, dtype)  # [B, T, C, H, W]
        x = torch.where(obs, x0, x)
        steps = range(len(sched) - 1, -1, -1)
        if progress:
            steps = tqdm(steps)
        for i in steps:
            t = torch.full((B,), i, device=device, dtype=torch.int64)  # [B] chain step
            out = model_fn(x, self.model_time(sched, t))  # [B, T, C, H, W]
            if out.shape != x.shape:
                raise ValueError(f"model output {list(out.shape)} != {list(x.shape)} (no learned sigma)")
            if self.prediction == "eps":  # FDM's own arithmetic, kept bit for bit
                pred_x0 = (
                    _extract(sched.sqrt_recip_alphas_cumprod, t, x.ndim) * x
                    - _extract(sched.sqrt_recipm1_alphas_cumprod, t, x.ndim) * out
                )
            else:
                pred_x0 = self.split_prediction(sched, out, x, t)[0]
            if clip_denoised:
                pred_x0 = pred_x0.clamp(-1, 1)
            if use_ddim:
                # eps re-derived from the (clipped) x_0 prediction, as FDM's ddim_sample
                eps = (_extract(sched.sqrt_recip_alphas_cumprod, t, x.ndim) * x - pred_x0) / _extract(
                    sched.sqrt_recipm1_alphas_cumprod, t, x.ndim
                )
                abar = _extract(sched.alphas_cumprod, t, x.ndim)
                abar_prev = _extract(sched.alphas_cumprod_prev, t, x.ndim)
                sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
                x = pred_x0 * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
                if eta > 0 and i > 0:
                    x = x + sigma * randn_rows(generators, shape[1:], device, dtype)
            else:
                mean = (
                    _extract(sched.posterior_mean_coef1, t, x.ndim) * pred_x0
                    + _extract(sched.posterior_mean_coef2, t, x.ndim) * x
                )
                if i > 0:  # no noise at the last step
                    noise = randn_rows(generators, shape[1:], device, dtype)
                    x = mean + torch.exp(0.5 * _extract(log_var, t, x.ndim)) * noise
                else:
                    x = mean
            x = torch.where(obs, x0, x)
        return x
