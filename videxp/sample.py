"""videxp-sample: run the configured workflow's sampling step (standard: complete the test videos)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from videxp import help as _help  # noqa: F401 - registers the --help template resolver
from videxp.utils.cli import reports_errors
from videxp.utils.config_check import check_config
from videxp.utils.io import ensure_writable
from videxp.utils.wandb_results import log_results
from videxp.workflows.base import load_workflow


def run(cfg: DictConfig) -> dict:
    """Sample as `cfg.workflow` says; returns its summary (paths, counts, manifest, metrics status).

    Bad config values and an unwritable `sample.out_dir` are refused before the model is built."""
    check_config(cfg)
    out_dir = OmegaConf.select(cfg, "sample.out_dir")
    ensure_writable(out_dir, "sample.out_dir")
    summary = load_workflow(cfg).sample(cfg)
    # logger=wandb: the run's results; of a sharded run only the job that finalises logs (the merged FVD)
    if (summary.get("finalise") or {}).get("status", "finalised") == "finalised":
        log_results(cfg, out_dir or cfg.paths.output_dir)
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
@reports_errors("videxp-sample")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
