"""Tokenizer reconstruction evaluation: rFVD, PSNR, SSIM, LPIPS of encode -> decode (LARP's eval/)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from videxp.metrics.base import Metric
from videxp.workflows.base import Workflow
from videxp.workflows.reconstruction.loop import run_reconstruction


class Reconstruction(Workflow):
    """videxp-evaluate: reconstruct the evaluation clips of `dataset` with the LARP tokenizer and score them
    (experiment=ucf101_larp_rfvd); there is no sampling step."""

    name = "reconstruction"

    def evaluate(self, cfg: DictConfig, metrics: Mapping[str, Metric] | None = None) -> dict[str, Any]:
        return run_reconstruction(cfg, metrics)
