"""videxp-evaluate: run the configured workflow's evaluation step (standard: score a samples folder
against its reference clips, or two video folders)."""

from __future__ import annotations

from collections.abc import Mapping

import hydra
from omegaconf import DictConfig, OmegaConf

from videxp import help as _help  # noqa: F401 - registers the --help template resolver
from videxp.metrics.base import Metric
from videxp.utils.cli import reports_errors
from videxp.utils.config_check import check_config
from videxp.utils.io import ensure_writable
from videxp.utils.wandb_results import log_results
from videxp.workflows.base import load_workflow


def run(cfg: DictConfig, metrics: Mapping[str, Metric] | None = None) -> dict[str, dict]:
    """Evaluate as `cfg.workflow` says with `cfg.metric` (or the given `metrics` objects); {name: result}.

    Bad config values and an unwritable `evaluate.out_dir` are refused before any video is read."""
    check_config(cfg)
    out_dir = OmegaConf.select(cfg, "evaluate.out_dir")
    ensure_writable(out_dir, "evaluate.out_dir")
    results = load_workflow(cfg).evaluate(cfg, metrics)
    log_results(cfg, out_dir or cfg.paths.output_dir)  # logger=wandb: the results as a wandb run
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@reports_errors("videxp-evaluate")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
