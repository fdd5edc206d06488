"""RIVER / PFI behind the one generator request: next frames, one at a time, from all done frames' latents."""

from __future__ import annotations

from typing import Any

import torch

from videxp.inference.generator import Capabilities, Generator, check_request
from videxp.models.interpolant.autoencoder import LatentAutoencoder
from videxp.models.interpolant.flow_transformer import FlowTransformer
from videxp.models.interpolant.interpolants import Interpolant
from videxp.models.interpolant.samplers import em_sample, ode_grid, ode_sample
from videxp.utils.seeding import randn_rows, row_generators

METHODS = ("auto", "euler", "rk4", "em")
CONTEXT_DRAWS = ("per_step", "per_frame", "previous")
UNLIMITED_FRAMES = 1_000_000  # RIVER conditions on every done frame: no window limit of its own


def draw_context(n: int, generators: list[torch.Generator], device: torch.device) -> torch.Tensor:
    """Per row a context index ~ U{0..n-2} among n done latents (RIVER); n = 1 gives 0 (duplicated frame)."""
    if n < 2:
        return torch.zeros(len(generators), dtype=torch.int64, device=device)
    draws = [torch.randint(0, n - 1, (1,), generator=g, device=g.device) for g in generators]
    return torch.cat(draws).to(device)  # [B]


class InterpolantGenerator(Generator):
    """Generates each target frame from the latents of every done frame, as RIVER's `generate_frames`.

    Per frame: reference = the latest latent, context = a random earlier latent (redrawn at every
    drift evaluation with `context="per_step"`, as RIVER and PFI's Algorithm 3; once per frame with
    `"per_frame"`, as PFI-video's code; always the frame before the reference with `"previous"`, for
    networks trained with `training.context=previous`), index distance = reference − context (1 when only
    one frame is done: it is its own context). The flow starts from Gaussian noise (`linear`,
    `trigonometric`; RIVER's `warm_start` w mixes in the reference) or from the reference latent
    (`follmer`) and is integrated with `method`: `euler` / `rk4` (torchdiffeq, over
    `ode_grid(steps, t_min, t_max)`) or `em` (Euler–Maruyama with g = σ, PFI). `auto`: `em` for
    interpolants with noise (σ > 0), else `rk4`.

    Supports `inference=autoreg` only, with targets that directly follow the last observed frame
    (any step size: several targets are generated one after another). Latents of frames this generator
    produced are kept between calls and reused when the same frames come back as observed ones, so
    generation continues from the sampled latents, not from re-encoded pixels, exactly as RIVER.
    """

    def __init__(
        self,
        net: FlowTransformer,
        autoencoder: LatentAutoencoder,
        interpolant: Interpolant,
        *,
        method: str = "auto",
        steps: int = 100,
        t_min: float = 0.0,
        t_max: float = 1.0,
        warm_start: float = 0.0,
        context: str = "per_step",
        describe_extra: dict[str, Any] | None = None,
    ):
        if method not in METHODS:
            raise ValueError(f"sampling.method must be one of {METHODS}, got {method!r}")
        if context not in CONTEXT_DRAWS:
            raise ValueError(f"sampling.context must be one of {CONTEXT_DRAWS}, got {context!r}")
        if not 0.0 <= warm_start < 1.0:
            raise ValueError(f"sampling.warm_start must lie in [0, 1), got {warm_start}")
        if method == "auto":
            noisy = float(interpolant.sigma(torch.tensor(0.5))) > 0  # a Wiener term: sample the SDE
            method = "em" if noisy else "rk4"
        if warm_start and interpolant.starts_from != "noise":
            raise ValueError(f"warm_start applies to noise-started interpolants, not {interpolant.name!r}")
        self.net, self.autoencoder, self.interpolant = net, autoencoder, interpolant
        self.method, self.steps, self.context = method, int(steps), context
        self.t_min, self.t_max, self.warm_start = float(t_min), float(t_max), float(warm_start)
        self.capabilities = Capabilities(
            max_frames=UNLIMITED_FRAMES, index_patterns=("next_frame",), strategies=("autoreg",)
        )
        self._extra = describe_extra or {}
        self._kept: dict[
            int, tuple[torch.Tensor, torch.Tensor]
        ] = {}  # index -> (latent, frame) of this batch

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "interpolant": self.interpolant.describe(),
            "method": self.method,
            "steps": self.steps,
            "t_range": [self.t_min, self.t_max],
            "warm_start": self.warm_start,
            "context": self.context,
            **self._extra,
        }

    # ----------------------------------------------------------------- request handling
    def _check_request(self, frames: torch.Tensor, observed: list[int], target: list[int], seeds: list[int]):
        check_request(frames, observed, target, seeds)
        if not observed:
            raise ValueError("interpolant models need at least one observed frame")
        if sorted(set(observed)) != list(observed):
            raise ValueError(f"interpolant models need increasing, distinct observed indices, got {observed}")
        last = observed[-1]
        if list(target) != list(range(last + 1, last + 1 + len(target))):
            raise ValueError(
                f"interpolant models generate the frames right after the last observed one ({last}); "
                f"got targets {target} (use inference=autoreg)"
            )

    def _latents(self, frames: torch.Tensor, observed: list[int]) -> list[torch.Tensor]:
        """Latent [B, c, h, w] per observed frame: the kept one where this generator already holds that
        frame (same index, same pixels in every row: one it sampled or encoded), else the encoder's."""
        out: list[torch.Tensor | None] = []
        for k, index in enumerate(observed):
            entry = self._kept.get(index)
            same = entry is not None and torch.equal(entry[1], frames[:, k].to(entry[1]))
            out.append(entry[0] if same else None)
        if all(z is None for z in out):
            self._kept = {}  # another batch: forget the previous one's frames
        to_encode = [k for k, z in enumerate(out) if z is None]
        if to_encode:
            x = frames[:, to_encode].to(self.device)  # [B, n, C, H, W]
            z = self.autoencoder.encode(x.flatten(0, 1)).unflatten(0, x.shape[:2])  # [B, n, c, h, w]
            for j, k in enumerate(to_encode):
                out[k] = z[:, j]
                self._kept[observed[k]] = (z[:, j], frames[:, k].cpu())
        return out

    @torch.no_grad()
    def generate(self, frames, observed, target, cond, seeds):
        self._check_request(frames, observed, target, seeds)
        observed, target = list(observed), list(target)
        latents = self._latents(frames, observed)  # each [B, c, h, w]
        indices = list(observed)
        generators = row_generators(seeds, self.device)
        outputs = []
        for index in target:
            z = self._next_latent(torch.stack(latents, dim=1), indices, generators)  # [B, c, h, w]
            frame = self.autoencoder.decode(z).clamp(-1.0, 1.0)  # [B, C, H, W]
            self._kept[index] = (z, frame.cpu())
            latents.append(z)
            indices.append(index)
            outputs.append(frame)
        return torch.stack(outputs, dim=1)  # [B, T_target, C, H, W]

    # ----------------------------------------------------------------- one frame
    def _next_latent(
        self, latents: torch.Tensor, indices: list[int], generators: list[torch.Generator]
    ) -> torch.Tensor:
        """Sample the latent after the last of `latents` [B, n, c, h, w] (absolute frame `indices`)."""
        B, n = latents.shape[:2]
        device = latents.device
        reference = latents[:, -1]  # [B, c, h, w]
        positions = torch.tensor(indices, device=device)  # [n]
        rows = torch.arange(B, device=device)
        fixed_context = None
        if self.context == "per_frame":
            fixed_context = draw_context(n, generators, device)  # [B]
        elif self.context == "previous":
            fixed_context = torch.full((B,), max(n - 2, 0), dtype=torch.int64, device=device)  # [B]

        def drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            ctx = fixed_context if fixed_context is not None else draw_context(n, generators, device)  # [B]
            context = latents[rows, ctx]  # [B, c, h, w]
            distance = (positions[-1] - positions[ctx]).clamp(min=1)  # [B] int64; a lone frame is distance 1
            return self.net(
                input_latents=x,
                reference_latents=reference,
                conditioning_latents=context,
                index_distances=distance,
                timestamps=t.to(x.dtype).expand(B),
            )

        noise = randn_rows(generators, reference.shape[1:], device=device, dtype=reference.dtype)
        if self.interpolant.starts_from == "reference":
            x0 = reference
        else:  # RIVER's warm start: y0 = (1 - (1 - sigma_min) w) eps + w z_last
            x0 = self.interpolant.path(
                noise, reference, torch.full((B,), self.warm_start, device=device), None
            )
        t_start = max(self.t_min, self.warm_start)
        if self.method == "em":
            times = ode_grid(self.steps, t_start, self.t_max, device=device)

            def fresh_noise(like: torch.Tensor) -> torch.Tensor:
                return randn_rows(generators, like.shape[1:], device=like.device, dtype=like.dtype)

            return em_sample(drift, self.interpolant.diffusion, x0, times, fresh_noise)
        times = ode_grid(self.steps, t_start, self.t_max, scale_with_span=self.warm_start > 0, device=device)
        return ode_sample(drift, x0, times, method=self.method)
