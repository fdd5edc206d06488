"""FDM's released dataset layouts (MineRL / GQN-Mazes npy folders, CARLA .pt + CSV) and its paper presets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from hydra.utils import instantiate

from videxp import sample
from videxp.data import fdm_layouts, standins
from videxp.errors import VideoError
from videxp.video.arrays import read_array_frames

LAYOUTS = ["minerl", "mazes_cwvae", "carla_no_traffic"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("fdm")
    return {name: standins.write_fdm(base / name, name) for name in LAYOUTS}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_catalog_reads_the_layout_in_fdms_order(roots, layout):
    root = roots[layout]
    train, test = (fdm_layouts.scan(root, split, layout) for split in ("train", "test"))
    assert len(train) == 3 and len(test) == 2
    assert [r.video_id for r in fdm_layouts.scan(root, "val", layout)] == [r.video_id for r in test]
    if layout == "carla_no_traffic":  # CSV order; the file name is the last part of the listed path
        assert [r.video_id for r in test] == ["video_test/video_3", "video_test/video_4"]
        expected = torch.load(root / "video_3.pt", weights_only=True).numpy()
    else:
        assert [r.video_id for r in train] == ["train/0", "train/1", "train/2"]
        expected = np.load(root / "test" / "0.npy")
    np.testing.assert_array_equal(read_array_frames(test[0].path, 5, 9), expected[5:9])


def test_layout_errors_name_the_file(roots, tmp_path):
    with pytest.raises(ValueError, match="unknown FDM layout"):
        fdm_layouts.scan(roots["minerl"], "train", "ucf101")
    gap = standins.write_fdm(tmp_path / "gap", "minerl")
    (gap / "train" / "1.npy").unlink()
    with pytest.raises(ValueError, match=r"indices must run 0..1; missing \[1\]"):
        fdm_layouts.scan(gap, "train", "minerl")
    (gap / "test" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="only <i>.npy files.*notes.txt"):
        fdm_layouts.scan(gap, "test", "minerl")
    carla = standins.write_fdm(tmp_path / "carla", "carla_no_traffic")
    (carla / "video_4.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"video_test.csv:3 lists .*video_4.pt"):
        fdm_layouts.scan(carla, "test", "carla_no_traffic")
    torch.save({"frames": torch.zeros(2)}, carla / "video_4.pt")  # not one tensor
    with pytest.raises(VideoError, match="video_4.pt: holds a dict"):
        read_array_frames(carla / "video_4.pt", 0, 1)


@pytest.mark.parametrize(
    ("experiment", "dataset", "size", "T"),
    [
        ("fdm_mazes", "mazes_cwvae", "paper64", 300),
        ("fdm_minerl", "minerl", "paper64", 500),
        ("fdm_carla", "carla_no_traffic", "carla128", 1000),
    ],
)
def test_paper_presets_hold_fdms_sampling_defaults(tmp_path, experiment, dataset, size, T):
    cfg = compose_cfg("sample", [f"experiment={experiment}"], tmp_path)
    assert cfg.dataset.name == dataset and cfg.dataset.video_length == T and cfg.model.size == size
    assert (cfg.inference.name, cfg.inference.obs_length, cfg.inference.step_size) == ("hierarchy-2", 36, 10)
    assert cfg.model.max_frames == 20 and cfg.model.sampling.timestep_respacing == ""
    assert (cfg.sample.split, cfg.sample.stop_index, cfg.sample.batch_size) == ("test", 100, 8)
    assert (
        cfg.metric.fvd.protocol == "fdm" and cfg.metric.ssim.variant == "fdm" and cfg.metric.psnr.per_channel
    )


def test_a_preset_samples_the_first_frames_of_the_test_videos(roots, tmp_path):
    """experiment=fdm_carla on a CARLA-layout stand-in (shortened): test clips are the first T frames."""
    over = [
        "experiment=fdm_carla",
        f"dataset.source.root={roots['carla_no_traffic']}",
        "dataset.video_length=12",
        "dataset.image_size=16",
        "dataset.num_workers=0",
        "inference.obs_length=4",
        "inference.step_size=4",
        "model.size=tiny",
        "model.max_frames=8",
        "model.sampling.timestep_respacing='2'",
        "ckpt_path=random",
        "sample.stop_index=2",
        "sample.batch_size=2",
        "sample.video_format=none",
        "sample.grid_videos=0",
        "sample.schedule_png=false",
        "metric=[psnr]",
        "device=cpu",
    ]
    cfg = compose_cfg("sample", over, tmp_path)
    clip = instantiate(cfg.dataset).dataset("test", evaluation=True)[0]
    assert clip["frames"].tolist() == list(range(12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = sample.run(cfg)
    assert summary["written"] == 2
    first = np.load(tmp_path / "samples" / "sample_0000-0.npy")
    truth = torch.load(roots["carla_no_traffic"] / "video_3.pt", weights_only=True).numpy()
    np.testing.assert_array_equal(first[:4], truth[:4])  # the observed prefix is the video's own frames


def test_an_experiment_with_fewer_metrics_on_the_command_line_builds_only_those(tmp_path):
    """experiment=fdm_mazes metric=[psnr]: the preset's ssim / fvd settings stay unbuilt leftovers."""
    from videxp.scoring.selection import build_metrics

    cfg = compose_cfg("evaluate", ["experiment=fdm_mazes", "metric=[psnr]"], tmp_path)
    assert "_target_" not in cfg.metric.ssim  # only the preset's settings
    built = build_metrics(cfg)
    assert list(built) == ["psnr"] and built["psnr"].per_channel
