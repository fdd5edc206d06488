"""Loading weights for sampling: no silent random weights, files that are not checkpoints named as such,
a checkpoint of another model family refused naming both, the checkpoint identified by its content."""

from __future__ import annotations

import datetime
import functools

import pytest
import torch
from conftest import TINY, compose_cfg, save_lightning_checkpoint
from hydra.utils import instantiate

from videxp.errors import CheckpointError
from videxp.models.framepack.generator import FramePackGenerator
from videxp.models.loading import build_module, config_weights, read_checkpoint
from videxp.models.opensora.module import OpenSoraModule
from videxp.models.wan.generator import WanGenerator
from videxp.models.wan.lora import WanLoRAModule
from videxp.weights.registry import sha256_file


@functools.cache
def _fdm_cfg():
    return compose_cfg("sample", TINY, "/tmp/unused").model


def test_an_empty_file_says_it_is_empty(tmp_path):
    path = tmp_path / "last.ckpt"
    path.touch()
    with pytest.raises(CheckpointError, match=r"last\.ckpt is empty \(0 bytes\), not a checkpoint"):
        read_checkpoint(path)


@pytest.mark.parametrize("content", [b"\x00garbage" * 100, b"PK\x03\x04" + b"\x01" * 500])
def test_random_bytes_are_not_a_checkpoint_and_torch_advice_does_not_leak(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "is not a checkpoint" in message
    assert "mmap" not in message and "weights_only" not in message


def test_a_truncated_checkpoint_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:700])
    with pytest.raises(CheckpointError, match=r"last\.ckpt \(700 bytes\) is not a checkpoint"):
        read_checkpoint(path)


def test_a_file_pickling_python_objects_is_refused_without_advice_to_unpickle_it(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"when": datetime.timedelta(days=1)}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert "pickles Python objects" in str(err.value) and "weights_only=False" not in str(err.value)


def test_sampling_without_a_checkpoint_is_refused_unless_random_is_asked_for():
    with pytest.raises(CheckpointError, match=r"ckpt_path=null.*random weights.*ckpt_path=random"):
        build_module(_fdm_cfg(), None)
    module, info = build_module(_fdm_cfg(), "random")
    assert isinstance(module, torch.nn.Module)
    assert info == {"checkpoint": "random", "checkpoint_sha256": None, "weights": "random"}


def test_models_whose_config_names_pretrained_weights_need_no_checkpoint():
    assert config_weights(WanGenerator, {"size": "full", "pretrained": "Wan-AI/x"}) == "pretrained Wan-AI/x"
    assert config_weights(WanGenerator, {"size": "tiny"}) is None
    assert "untrained LoRA" in config_weights(WanLoRAModule, {"size": "full"})
    assert config_weights(WanLoRAModule, {"size": "tiny"}) is None
    assert "FramePackI2V_HY" in config_weights(FramePackGenerator, {"size": "full", "variant": "inverted"})
    assert config_weights(FramePackGenerator, {"size": "tiny"}) is None
    assert config_weights(OpenSoraModule, {"size": "xl"}).startswith("pretrained hpcai-tech/")
    assert config_weights(OpenSoraModule, {"size": "xl", "pretrained": {"stdit": None}}) is None
    assert config_weights(OpenSoraModule, {"size": "tiny"}) is None
    cfg = compose_cfg("sample", ["model=wan"], "/tmp/unused").model
    assert config_weights(WanGenerator, cfg).startswith("pretrained Wan-AI/")


def test_a_checkpoint_is_identified_by_its_content(tmp_path):
    path = tmp_path / "a.ckpt"
    save_lightning_checkpoint(path, instantiate(_fdm_cfg()), step=5)
    _, info = build_module(_fdm_cfg(), path)
    assert info["checkpoint"] == str(path.resolve()) and info["step"] == 5
    assert info["checkpoint_sha256"] == sha256_file(path) and info["weights"] == "checkpoint"


@pytest.mark.parametrize("record_class", [True, False])
def test_a_checkpoint_of_another_model_family_names_both(tmp_path, record_class):
    path = tmp_path / "fdm.ckpt"
    save_lightning_checkpoint(path, instantiate(_fdm_cfg()), record_class=record_class)
    interpolant = compose_cfg("sample", ["model=interpolant"], tmp_path).model
    with pytest.raises(CheckpointError) as err:
        build_module(interpolant, path)
    message = str(err.value)
    assert str(path) in message and "InterpolantModule" in message
    assert ("FDMModule" in message) if record_class else ("another model family" in message)
