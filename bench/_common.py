"""Shared bench helpers: build the demo-sized tiny FDM and its data module from the real config tree."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def demo_config(*overrides: str):
    """The `experiment=demo` config (what `make demo` trains), with overrides."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=demo", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/videxp-bench"
    return cfg


def demo_module_and_data(*overrides: str):
    cfg = demo_config(*overrides)
    return instantiate(cfg.model), instantiate(cfg.dataset), cfg
