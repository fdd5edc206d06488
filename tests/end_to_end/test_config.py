"""Every option of every config group composes and instantiates; experiments compose with all entry points."""

from __future__ import annotations

import pytest
from conftest import CONF_DIR, TINY, compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from videxp.inference import build_strategy

GROUPS = [
    "dataset",
    "model",
    "inference",
    "metric",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "debug",
    "experiment",
]
OPTIONS = [
    (g, p.relative_to(CONF_DIR / g).with_suffix("").as_posix())
    for g in GROUPS
    for p in sorted((CONF_DIR / g).rglob("*.yaml"))
]
# options that need settings to instantiate offline (the LPIPS VGG backbone is not in the test cache)
EXTRA = {
    "interpolant/autoencoder": ["model.loss.perceptual_weight=0"],
    # the full models would load their weights from the hub cache; each call conditions on one frame
    "wan": [
        "model.size=tiny",
        "inference.obs_length=1",
        "inference.max_frames=5",
        "model.sampling.frame_rule=round_up",
    ],
    "framepack": ["model.size=tiny", "inference.obs_length=1", "inference.max_frames=5"],
    "opensora": ["model.size=tiny"],
    "larp": ["model.size=tiny"],
    "wan_lora": [
        "model.size=tiny",
        "inference.obs_length=1",
        "inference.max_frames=5",
        "model.sampling.frame_rule=round_up",
    ],
}


def test_every_group_has_options():
    for group in GROUPS:
        assert any(g == group for g, _ in OPTIONS), f"conf/{group}/ is empty"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option, tmp_path, request):
    choice = f"{group}=[{option}]" if group == "metric" else f"{group}={option}"
    overrides = [choice] if group in ("experiment", "debug", "model") else [*TINY, choice]
    overrides += EXTRA.get(option, [])
    real_data = group == "dataset" and option != "moving_shapes"
    if (
        real_data
    ):  # the moving_shapes source keys of TINY do not apply; loading is tested in test_data_datasets
        overrides = [o for o in overrides if not o.startswith("dataset.source.")]
    cfg = compose_cfg("train", overrides, tmp_path)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    if real_data:
        assert cfg.dataset.name == option and cfg.dataset.source.root is None
    elif group == "dataset":
        item = instantiate(cfg.dataset).dataset("test")[0]
        assert item["video"].shape[0] == cfg.dataset.video_length
    elif group == "model":
        module = instantiate(cfg.model)
        generator = module.generator() if hasattr(module, "generator") else module
        if "max_frames" in cfg.model:  # the generator's window is the config's K
            assert generator.capabilities.max_frames == cfg.model.max_frames
        elif option == "larp":  # one call makes one whole tokenizer clip
            assert generator.capabilities.max_frames == generator.frames
        elif hasattr(generator, "capabilities"):  # next-frame models: any number of done frames
            assert generator.capabilities.index_patterns == ("next_frame",)
    elif group == "inference":
        params = {k: cfg.inference[k] for k in ("video_length", "obs_length", "step_size")}
        steps = list(build_strategy(cfg.inference.name, max_frames=cfg.model.max_frames, **params))
        assert steps
    elif group == "metric":
        assert set(cfg.metric) == {option}
        if option == "lpips":
            request.getfixturevalue("alex_state")  # a local (random) backbone file: nothing is downloaded
        instantiate(cfg.metric[option])
    elif group == "trainer" and option == "fsdp":  # Lightning refuses FSDP on CPU: build the strategy alone
        instantiate(cfg.trainer.strategy)
    elif group in ("trainer", "debug"):
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    elif group in ("logger", "callbacks"):
        for node in cfg[group].values():
            instantiate(node)
    elif group == "experiment":
        for entry in ("sample", "evaluate"):
            extra = ["eval_dir=/nonexistent"] if entry == "evaluate" else []
            other = compose_cfg(entry, [choice, *extra], tmp_path)
            OmegaConf.resolve(other)
            assert other.task == entry


def test_metric_is_multi_select(tmp_path):
    cfg = compose_cfg("evaluate", ["metric=[psnr,ssim]", "eval_dir=x"], tmp_path)
    assert set(cfg.metric) == {"psnr", "ssim"}
    assert cfg.metric.psnr._target_.endswith("PSNR")
    cfg = compose_cfg("evaluate", ["metric=[ssim]", "eval_dir=x"], tmp_path)
    assert set(cfg.metric) == {"ssim"}


def test_defaults(tmp_path):
    for entry in ("train", "sample", "evaluate"):
        cfg = compose_cfg(entry, ["eval_dir=x"] if entry == "evaluate" else [], tmp_path)
        assert cfg.ckpt_path is None
        assert cfg.dataset.name == "moving_shapes"
        assert set(cfg.metric) == {"psnr", "ssim"}
        assert cfg.model.size == "tiny"
        assert cfg.inference.max_frames is None


def test_unknown_size_is_a_clear_error(tmp_path):
    cfg = compose_cfg("train", ["model.size=huge"], tmp_path)
    with pytest.raises(Exception, match="unknown FDM size 'huge'"):
        instantiate(cfg.model)
