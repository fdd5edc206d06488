"""Learning curves: training loss and sampled validation metrics vs step, with baselines, in curves.png."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from videxp.metrics.baselines import BASELINES
from videxp.utils.io import atomic_path

log = logging.getLogger(__name__)

_BASELINE_STYLE = {"repeat_last": ("tab:red", "repeat last frame"), "blank": ("tab:gray", "blank frame")}


class LearningCurves(L.Callback):
    """Keeps the training loss (mean per `every_n_steps` steps) and the validation metrics, and rewrites
    `<run>/<filename>` at every validation: one panel for the losses, one per sampled metric (`metrics`),
    the baselines logged beside them (`val/<metric>_<baseline>`) as dashed lines. The history is saved in
    checkpoints, so a resumed run keeps its curves. `print_progress` prints one line per validation.
    """

    def __init__(
        self,
        filename: str = "curves.png",
        metrics: list[str] | tuple[str, ...] = ("psnr", "ssim"),
        every_n_steps: int = 10,
        print_progress: bool = False,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.filename = filename
        self.metrics = list(metrics)
        self.every_n_steps = int(every_n_steps)
        self.print_progress = print_progress
        self.train: list[tuple[int, float]] = []  # (step, mean loss over the bucket ending there)
        self.val: list[dict[str, float]] = []  # {"step": s, "val/loss": ..., "val/psnr": ..., ...}
        self._bucket: list[float] = []

    # ----------------------------------------------------------------- history
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, idx
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self._bucket.append(float(loss.detach()))
        if len(self._bucket) >= self.every_n_steps:
            self.train.append((trainer.global_step, float(np.mean(self._bucket))))
            self._bucket = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logged = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1
        }
        if not logged:
            return
        self.val.append({"step": trainer.global_step, **logged})
        if not trainer.is_global_zero:
            return
        path = Path(trainer.default_root_dir) / self.filename
        self.plot(path)
        if self.print_progress:
            print(self.progress_line(trainer), flush=True)

    def progress_line(self, trainer: L.Trainer) -> str:
        """`step 300/2000  loss 0.031  psnr 15.2 (repeat_last 10.9, blank 12.2)  ssim ...`."""
        last = self.val[-1]
        loss = self.train[-1][1] if self.train else math.nan
        parts = [f"step {last['step']}/{trainer.max_steps}", f"train loss {loss:.4f}"]
        for m in self.metrics:
            if f"val/{m}" not in last:
                continue
            base = [f"{b} {last[f'val/{m}_{b}']:.3g}" for b in BASELINES if f"val/{m}_{b}" in last]
            parts.append(f"val {m} {last[f'val/{m}']:.3g}" + (f" ({', '.join(base)})" if base else ""))
        return "  ".join(parts)

    # ----------------------------------------------------------------- picture
    def plot(self, path: Path) -> None:
        """Write the curves (atomically): losses on a log scale, then one panel per metric."""
        metrics = [m for m in self.metrics if any(f"val/{m}" in v for v in self.val)]
        fig = Figure(figsize=(4.2 * (1 + len(metrics)), 3.3), constrained_layout=True)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 1 + len(metrics), squeeze=False)[0]
        ax = axes[0]
        if self.train:
            steps, losses = zip(*self.train)
            ax.plot(steps, losses, lw=1.0, label="train loss")
        val_loss = [(v["step"], v["val/loss"]) for v in self.val if "val/loss" in v]
        if val_loss:
            ax.plot(*zip(*val_loss), marker="o", ms=3, lw=1.2, label="val loss")
        if self.train or val_loss:
            ax.set_yscale("log")
            ax.legend(fontsize="small")
        ax.set_title("loss")
        ax.set_xlabel("step")
        for ax, m in zip(axes[1:], metrics):
            pts = [(v["step"], v[f"val/{m}"]) for v in self.val if f"val/{m}" in v]
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1.5, color="tab:blue", label="model")
            for b in BASELINES:
                key = f"val/{m}_{b}"
                values = [v[key] for v in self.val if key in v]
                if values:
                    colour, label = _BASELINE_STYLE[b]
                    ax.axhline(values[-1], ls="--", lw=1.2, color=colour, label=label)
            ax.set_title(f"validation {m} (sampled)")
            ax.set_xlabel("step")
            ax.legend(fontsize="small")
        for ax in axes:
            ax.grid(alpha=0.3)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {"train": list(self.train), "val": list(self.val)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train = [tuple(x) for x in state_dict.get("train", [])]
        self.val = list(state_dict.get("val", []))
