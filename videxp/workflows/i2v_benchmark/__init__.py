"""Workflow W1, the image-to-video benchmark: shared starting frames and references, one generation run
per method (videxp-sample), then every method scored and compared (videxp-evaluate)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from videxp.metrics.base import Metric
from videxp.scoring.selection import build_metrics
from videxp.workflows.base import Workflow
from videxp.workflows.i2v_benchmark.generate import run_benchmark_sample
from videxp.workflows.i2v_benchmark.summary import evaluate_benchmark
from videxp.workflows.standard import Standard


class I2VBenchmark(Workflow):
    """experiment=i2v_benchmark: `sample` generates and scores this run's method; `evaluate` scores every
    method and writes the comparison (or, given eval_dir / real_dir + fake_dir, evaluates as usual)."""

    name = "i2v_benchmark"

    def sample(self, cfg: DictConfig) -> dict[str, Any]:
        return run_benchmark_sample(cfg)

    def evaluate(self, cfg: DictConfig, metrics: Mapping[str, Metric] | None = None) -> dict[str, Any]:
        if any(cfg.get(k) is not None for k in ("eval_dir", "real_dir", "fake_dir")):
            return Standard().evaluate(cfg, metrics)
        return evaluate_benchmark(cfg, lambda: build_metrics(cfg, metrics))
