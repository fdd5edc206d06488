"""Shared by modules that train part of a large model: save only what trains, AdamW with warm-up, clipping."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class SavesTrainedOnly:
    """Mixin for a LightningModule whose frozen parts are rebuilt from its config: `state_dict()` (hence
    Lightning checkpoints) holds only the keys of `saved_keys()`, and a strict `load_state_dict` needs exactly
    those, with an error naming `describe_saved()`."""

    def saved_keys(self) -> set[str]:
        """The state_dict keys that are trained and saved; every class using the mixin defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define saved_keys() to use SavesTrainedOnly")

    def describe_saved(self) -> str:
        """What the saved keys are, for error messages (e.g. "LoRA rank 16 on ...")."""
        return type(self).__name__

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        full = super().state_dict(*args, **kwargs)  # type: ignore[misc]
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        keep = self.saved_keys()
        return type(full)((k, v) for k, v in full.items() if k.removeprefix(prefix) in keep)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool | None = True, assign: bool = False):
        keep = self.saved_keys()
        missing, extra = sorted(keep - set(state_dict)), sorted(set(state_dict) - keep)
        if (strict is None or strict) and (missing or extra):
            raise ValueError(
                f"state dict does not match ({self.describe_saved()}): {len(missing)} missing "
                f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}) "
                "(checkpoints hold only the trained tensors)"
            )
        return super().load_state_dict(state_dict, strict=False, assign=assign)  # type: ignore[misc]


def adamw_with_warmup(params: Iterable[torch.nn.Parameter], optim: dict[str, Any]) -> dict[str, Any]:
    """Lightning's optimizer dict: AdamW (lr, betas, weight_decay, eps) with a constant schedule after
    `warmup_steps` linear warm-up steps, stepped every optimizer step."""
    from transformers import get_constant_schedule_with_warmup  # deferred: transformers is a heavy import

    opt = torch.optim.AdamW(
        list(params),
        lr=float(optim["lr"]),
        betas=tuple(float(b) for b in optim["betas"]),
        weight_decay=float(optim["weight_decay"]),
        eps=float(optim["eps"]),
    )
    sched = get_constant_schedule_with_warmup(opt, num_warmup_steps=int(optim["warmup_steps"]))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ClipsToMaxNorm:
    """Mixin: clip the gradient norm to `self.optim["max_grad_norm"]` unless the Trainer sets its own."""

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if gradient_clip_val is None and self.optim["max_grad_norm"] is not None:
            gradient_clip_val, gradient_clip_algorithm = float(self.optim["max_grad_norm"]), "norm"
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
