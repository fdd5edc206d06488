"""The `workflow` config node: the standard job by default, a workflow experiment's own job, refusals."""

from __future__ import annotations

import pytest
from conftest import compose_cfg
from omegaconf import open_dict

from videxp import evaluate
from videxp.workflows.base import load_workflow
from videxp.workflows.i2v_benchmark import I2VBenchmark
from videxp.workflows.naive_finetune import NaiveFinetune
from videxp.workflows.standard import Standard


@pytest.mark.parametrize(
    ("config", "overrides", "kind"),
    [
        ("sample", [], Standard),
        ("evaluate", [], Standard),
        ("sample", ["experiment=i2v_benchmark"], I2VBenchmark),
        ("evaluate", ["experiment=i2v_benchmark"], I2VBenchmark),
        ("sample", ["experiment=naive_finetune"], NaiveFinetune),
    ],
)
def test_each_entry_point_runs_the_configured_workflow(tmp_path, config, overrides, kind):
    assert type(load_workflow(compose_cfg(config, overrides, tmp_path))) is kind


def test_a_step_the_workflow_lacks_is_refused_in_one_line(tmp_path):
    cfg = compose_cfg("evaluate", ["experiment=naive_finetune"], tmp_path)
    with pytest.raises(ValueError, match="'naive_finetune' has no separate evaluation step; videxp-sample"):
        evaluate.run(cfg)


def test_only_workflow_classes_are_run(tmp_path):
    cfg = compose_cfg("sample", [], tmp_path)
    with open_dict(cfg):
        cfg.workflow = {"_target_": "collections.OrderedDict"}
    with pytest.raises(TypeError, match="is not a videxp Workflow"):
        load_workflow(cfg)
    with open_dict(cfg):
        cfg.workflow = None
    with pytest.raises(ValueError, match="no `workflow` node"):
        load_workflow(cfg)
