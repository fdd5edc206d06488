"""A samples manifest is data: a `_target_` in its dataset block that is not a videxp dataset class is
refused (naming manifest.json and the key) and never run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import compose_cfg, write_samples_folder

from videxp.data.description import datamodule_from_description
from videxp.errors import ConfigError
from videxp.scoring.samples import reference_dataset
from videxp.workflows.standard import Standard

SHAPES = {
    "_target_": "videxp.data.datamodule.VideoDataModule",
    "name": "moving_shapes",
    "video_length": 4,
    "image_size": 8,
    "batch_size": 2,
    "num_workers": 0,
    "source": {
        "_target_": "videxp.data.moving_shapes.MovingShapes",
        "_partial_": True,
        "num_videos": {"train": 2, "val": 2, "test": 2},
        "video_length": 4,
        "image_size": 8,
        "sprite_size": [2, 3],
    },
    "clips": {"eval_mode": "first"},
    "transform": {"resize_mode": "squash", "augment": [{"_target_": "albumentations.HorizontalFlip"}]},
}


def _samples_folder(tmp_path, dataset: dict) -> tuple:
    """A samples folder with one (blank) sample and a manifest whose dataset block is `dataset`."""
    samples = tmp_path / "samples"
    return samples, write_samples_folder(samples, dataset, np.zeros((4, 8, 8, 3), np.uint8))


def _copy_attack(tmp_path) -> tuple[dict, object]:
    src, dst = tmp_path / "secret.txt", tmp_path / "stolen.txt"
    src.write_text("secret")
    return {"_target_": "shutil.copyfile", "src": str(src), "dst": str(dst)}, dst


def test_reference_dataset_from_a_manifest_is_built_from_known_classes(tmp_path):
    _, path = _samples_folder(tmp_path, SHAPES)
    dataset = reference_dataset(json.loads(path.read_text()), path)
    assert len(dataset) == 2 and tuple(dataset[0]["video"].shape) == (4, 3, 8, 8)


def test_a_manifest_naming_a_function_as_dataset_is_refused_and_not_run(tmp_path):
    attack, stolen = _copy_attack(tmp_path)
    _, path = _samples_folder(tmp_path, attack)
    with pytest.raises(ConfigError, match=r"manifest\.json.*`dataset\._target_`='shutil\.copyfile'"):
        reference_dataset(json.loads(path.read_text()), path)
    assert not stolen.exists()


@pytest.mark.parametrize(
    "where",
    ["source", "clips", "augment"],
)
def test_a_function_hidden_deeper_in_the_dataset_block_is_refused_and_not_run(tmp_path, where):
    marker = tmp_path / "ran"
    attack = {"_target_": "os.system", "command": f"touch {marker}"}
    dataset = json.loads(json.dumps(SHAPES))
    if where == "source":
        dataset["source"] = {**attack, "_partial_": True}
        key = r"`dataset\.source\._target_`='os\.system'"
    elif where == "clips":
        dataset["clips"] = {"seed": attack}
        key = r"`dataset\.clips\.seed\._target_`='os\.system'"
    else:
        dataset["transform"]["augment"] = [attack]
        key = r"`dataset\.transform\.augment\[0\]\._target_`='os\.system'"
    with pytest.raises(ConfigError, match=key):
        datamodule_from_description(dataset, tmp_path / "manifest.json")
    assert not marker.exists()


def test_videxp_evaluate_refuses_a_crafted_manifest(tmp_path):
    attack, stolen = _copy_attack(tmp_path)
    samples, _ = _samples_folder(tmp_path, attack)
    cfg = compose_cfg("evaluate", [f"eval_dir={samples}", "evaluate.auto_metrics=[]"], tmp_path / "eval")
    with pytest.raises(ConfigError, match=r"samples/manifest\.json: `dataset\._target_`"):
        Standard().evaluate(cfg)
    assert not stolen.exists()
