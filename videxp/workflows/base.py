"""The interface of a workflow: what videxp-sample and videxp-evaluate run for the `workflow` config node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from videxp.metrics.base import Metric


class Workflow:
    """One research workflow seen from the two entry points; the config's `workflow._target_` names it.

    `sample` is what `videxp-sample` runs, `evaluate` what `videxp-evaluate` runs (given `metrics` objects
    replace `cfg.metric`). A workflow without one of the steps says so in one line.
    """

    name = "workflow"

    def sample(self, cfg: DictConfig) -> dict[str, Any]:
        raise ValueError(f"workflow {self.name!r} has no sampling step; run videxp-evaluate instead")

    def evaluate(self, cfg: DictConfig, metrics: Mapping[str, Metric] | None = None) -> dict[str, Any]:
        raise ValueError(f"workflow {self.name!r} has no separate evaluation step; videxp-sample scores it")


def load_workflow(cfg: DictConfig) -> Workflow:
    """The workflow the config's `workflow` node names (conf/common.yaml: the standard one)."""
    node = cfg.get("workflow")
    if node is None:
        raise ValueError("the config has no `workflow` node (conf/common.yaml sets the standard one)")
    workflow = instantiate(node)
    if not isinstance(workflow, Workflow):
        raise TypeError(f"workflow._target_={node.get('_target_')!r} is not a videxp Workflow")
    return workflow
