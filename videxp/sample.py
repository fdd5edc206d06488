"""videxp-sample: run the configured workflow's sampling step (standard: complete the test videos)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from videxp.workflows.base import load_workflow


def run(cfg: DictConfig) -> dict:
    """Sample as `cfg.workflow` says; returns its summary (paths, counts, manifest, metrics status)."""
    return load_workflow(cfg).sample(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
