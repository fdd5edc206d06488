"""model=interpolant end to end: train -> sample -> evaluate (moving_shapes, KTH), resume, generator."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import compose_cfg

from videxp import evaluate, sample, train
from videxp.data.standins import write_kth
from videxp.inference.loop import complete_videos, resolve_inference
from videxp.models.interpolant.module import InterpolantModule, pick_frames

# moving_shapes at 16x16 (2x2 latents with the 8x autoencoder), 8-frame videos, a 3-point sampler grid
DATA = [
    "dataset.image_size=16",
    "dataset.video_length=8",
    "dataset.batch_size=2",
    "dataset.source.num_videos={train: 32, val: 2, test: 2}",
    "dataset.source.sprite_size=[3,6]",
]
MODEL = [
    "model=interpolant",
    "model.size=test",
    "+model.net.dropout=0.0",
    "model.autoencoder.preset=test",
    "model.sampling.steps=3",
    "model.schedule.warmup_steps=2",
    "model.schedule.total_steps=50",
    "inference.obs_length=2",
    "inference.step_size=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "callbacks.sample_metrics.num_videos=2",
    "callbacks.last_checkpoint.every_n_train_steps=2",
]
ITINY = [*DATA, *MODEL]


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step Föllmer run on moving_shapes, validated (with sampling) at step 4."""
    run_dir = tmp_path_factory.mktemp("itrain")
    overrides = [*ITINY, "model.interpolant=follmer", "trainer.max_steps=4", "trainer.val_check_interval=4"]
    trainer = train.run(compose_cfg("train", overrides, run_dir))
    return run_dir, trainer


def test_train_sample_evaluate_moving_shapes(trained, tmp_path):
    run_dir, trainer = trained
    assert trainer.global_step == 4 and (run_dir / "checkpoints" / "last.ckpt").is_file()
    out = tmp_path / "s"
    cfg = compose_cfg(
        "sample",
        [
            *ITINY,
            "model.interpolant=follmer",
            f"ckpt_path={run_dir}",
            "sample.stop_index=2",
            "sample.batch_size=2",
        ],
        out,
    )
    summary = sample.run(cfg)
    assert summary["written"] == 2
    manifest = json.loads((out / "samples" / "manifest.json").read_text())
    assert manifest["inference"]["step_size"] == 1
    generator = manifest["model"]["generator"] if "generator" in manifest["model"] else manifest["model"]
    assert "em" in json.dumps(generator)  # Föllmer samples its SDE (method auto -> em)
    video = np.load(out / "samples" / "sample_0000-0.npy")
    assert video.shape == (8, 16, 16, 3) and video.dtype == np.uint8
    ecfg = compose_cfg("evaluate", [*ITINY, f"eval_dir={out / 'samples'}"], tmp_path / "e")
    results = evaluate.run(ecfg)
    assert 0 < results["psnr"]["value"] < 60


def test_resume_restores_step_ema_and_schedule(trained, tmp_path):
    run_dir, _ = trained
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    overrides = [*ITINY, "model.interpolant=follmer", "trainer.val_check_interval=2"]
    # resuming at the same max_steps trains nothing: the module holds exactly the checkpoint's state
    again = train.run(compose_cfg("train", [*overrides, "trainer.max_steps=4"], run_dir))
    module = again.lightning_module
    assert again.global_step == 4
    for key in ("ema_net.project_in.1.weight", "net.project_in.1.weight", "autoencoder.quant_conv.weight"):
        torch.testing.assert_close(module.state_dict()[key], ckpt["state_dict"][key], rtol=0, atol=0)
    assert not torch.equal(
        ckpt["state_dict"]["ema_net.project_in.1.weight"], ckpt["state_dict"]["net.project_in.1.weight"]
    )
    # and continuing goes on from step 4 with the schedule where it was
    more = train.run(compose_cfg("train", [*overrides, "trainer.max_steps=6"], run_dir))
    assert more.global_step == 6
    assert more.lr_scheduler_configs[0].scheduler.last_epoch == 6


def test_kth_standin_end_to_end(tmp_path):
    """KTH stand-in (persons 1 and 21): linear interpolant, RK4 sampling, evaluate on the test split."""
    raw = write_kth(tmp_path / "kth", persons=(1, 21), actions=("walking",), scenarios=(1,), frames=20)
    data = [
        "dataset=kth",
        f"dataset.source.root={raw}",
        "dataset.image_size=16",
        "dataset.video_length=8",
        "dataset.batch_size=1",
        "dataset.num_workers=0",
    ]
    run_dir = tmp_path / "run"
    trainer = train.run(
        compose_cfg("train", [*data, *MODEL, "trainer.max_steps=2", "trainer.val_check_interval=2"], run_dir)
    )
    assert trainer.global_step == 2
    out = tmp_path / "s"
    summary = sample.run(
        compose_cfg("sample", [*data, *MODEL, f"ckpt_path={run_dir}", "sample.split=test"], out)
    )
    assert summary["written"] == 1  # person 21: the one test video
    results = evaluate.run(
        compose_cfg("evaluate", [*data, *MODEL, f"eval_dir={out / 'samples'}"], tmp_path / "e")
    )
    assert {"psnr", "ssim"} <= set(results)


# ----------------------------------------------------------------------------------- unit behaviour


def _module(**kw) -> InterpolantModule:
    torch.manual_seed(0)
    return InterpolantModule(
        image_size=16,
        autoencoder={"kind": "vqgan", "preset": "test"},
        size="test",
        net={"dropout": 0.0},
        sampling={"steps": 3},
        **kw,
    ).eval()


def test_pick_frames_follows_river():
    g = torch.Generator().manual_seed(0)
    target, reference, context = pick_frames(10, 4000, g)
    assert target.min() == 2 and target.max() == 9
    assert torch.equal(reference, target - 1)
    assert (context >= 0).all() and (context <= target - 2).all()
    assert set(context[target == 2].tolist()) == {0}
    with pytest.raises(ValueError, match="at least 3 frames"):
        pick_frames(2, 1, g)


def test_pick_frames_previous_context_is_distance_one():
    target, reference, context = pick_frames(10, 500, torch.Generator().manual_seed(0), "previous")
    assert torch.equal(reference, target - 1) and torch.equal(context, target - 2)
    # the same targets as RIVER's draw: only the context differs
    river = pick_frames(10, 500, torch.Generator().manual_seed(0))
    assert torch.equal(river[0], target)
    with pytest.raises(ValueError, match="training.context"):
        pick_frames(10, 1, torch.Generator(), "nearest")
    with pytest.raises(ValueError, match="training.context"):
        _module(training={"context": "nearest"})  # refused when the module is built, not at step 1


def test_generator_keeps_its_latents_and_rejects_other_patterns():
    module = _module(interpolant="linear")
    generator = module.generator()
    calls = []
    encode = module.autoencoder.encode
    module.autoencoder.encode = lambda x: calls.append(x.shape[0]) or encode(x)
    videos = torch.rand(2, 6, 3, 16, 16) * 2 - 1
    params = resolve_inference(
        {"name": "autoreg", "video_length": 6, "obs_length": 2, "step_size": 1}, generator
    )
    out = complete_videos(generator, videos, params, seed=0, video_indices=[0, 1], sample_index=0)
    assert out.shape == videos.shape and torch.equal(out[:, :2], videos[:, :2])
    assert calls == [4]  # only the 2 observed frames of the 2 rows were encoded; generated latents were kept
    # rows do not depend on the batch they are in
    single = complete_videos(generator, videos[1:], params, seed=0, video_indices=[1], sample_index=0)
    torch.testing.assert_close(single[0], out[1])
    with pytest.raises(ValueError, match="right after the last observed"):
        generator.generate(videos[:, :2], [0, 1], [3], {}, [0, 1])
    with pytest.raises(ValueError, match="supports inference"):
        resolve_inference(
            {"name": "hierarchy-2", "video_length": 6, "obs_length": 2, "step_size": 1}, generator
        )


def test_context_redraw_per_step_or_per_frame():
    module = _module(interpolant="linear")
    seen = []
    forward = module.ema_net.forward

    def spy(**kw):
        seen.append(kw["index_distances"].clone())
        return forward(**kw)

    module.ema_net.forward = spy
    frames = torch.rand(1, 5, 3, 16, 16) * 2 - 1
    module.generator().generate(frames, [0, 1, 2, 3, 4], [5], {}, [7])
    per_step = torch.cat(seen)
    assert len(per_step) == 2 * 4  # 3 grid points: 2 RK4 steps x 4 calls
    assert len(set(per_step.tolist())) > 1  # context redrawn at every call
    seen.clear()
    module.sampling["context"] = "per_frame"
    module.generator().generate(frames, [0, 1, 2, 3, 4], [5], {}, [7])
    assert len(set(torch.cat(seen).tolist())) == 1
    seen.clear()
    module.sampling["context"] = "previous"
    module.generator().generate(frames, [0, 1, 2, 3, 4], [5, 6], {}, [7])
    assert set(torch.cat(seen).tolist()) == {1}  # always the frame before the reference
    seen.clear()
    module.generator().generate(frames[:, :1], [0], [1], {}, [7])
    assert set(torch.cat(seen).tolist()) == {1}  # a lone frame is its own context


def test_ema_copies_before_start_step_then_averages():
    module = _module(ema={"rate": 0.5, "start_step": 1})
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(1.0)
    module.on_train_batch_end(None, None, 0)  # global_step 0 < start_step: copy
    for p, q in zip(module.ema_net.parameters(), module.net.parameters()):
        assert torch.equal(p, q)


def test_load_river_full_model_file(tmp_path):
    """RIVER's model.pth: {"model": ...} with module.vector_field_regressor.* and module.ae.* keys."""
    source = _module()
    state = {f"module.vector_field_regressor.{k}": v for k, v in source.net.state_dict().items()}
    state |= {f"module.ae.{k}": v for k, v in source.autoencoder.state_dict().items()}
    torch.save({"model": state, "global_step": 300000}, tmp_path / "model.pth")
    target = InterpolantModule(image_size=16, autoencoder={"kind": "vqgan", "preset": "test"}, size="test")
    target.load_weights(tmp_path / "model.pth")
    for a, b in zip(target.ema_net.state_dict().values(), source.net.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(target.autoencoder.state_dict().values(), source.autoencoder.state_dict().values()):
        assert torch.equal(a, b)
    assert bool(target.ae_ready)


def test_training_from_cached_latents(tmp_path):
    """model.latent_cache: the dataset is encoded once; training reads latents, validation samples pixels."""
    cache = tmp_path / "latents"
    overrides = [*ITINY, f"model.latent_cache={cache}", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    trainer = train.run(compose_cfg("train", overrides, tmp_path / "run"))
    assert trainer.global_step == 2
    assert (cache / "train.h5").is_file() and (cache / "val.h5").is_file()
    assert "val/psnr" in trainer.callback_metrics and "train/loss" in trainer.callback_metrics


def test_stage_one_run_feeds_stage_two(tmp_path):
    """Stage 1 (model=interpolant/autoencoder) last.ckpt is stage 2's model.autoencoder.ckpt, as it is."""
    stage1 = tmp_path / "ae"
    ae_overrides = [
        *DATA,
        "model=interpolant/autoencoder",
        "model.preset=test",
        "model.loss.perceptual_weight=0",
        "trainer.max_steps=2",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.val_check_interval=1",
    ]
    train.run(compose_cfg("train", ae_overrides, stage1))
    ckpt = stage1 / "checkpoints" / "last.ckpt"
    stage2 = train.run(
        compose_cfg(
            "train", [*ITINY, f"model.autoencoder.ckpt={ckpt}", "trainer.max_steps=1"], tmp_path / "flow"
        )
    )
    trained_ae = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in stage2.lightning_module.autoencoder.state_dict().items():
        assert torch.equal(value, trained_ae[f"ae.{key}"]), key


def test_debug_overfit_drives_the_loss_down(tmp_path):
    """debug=overfit (one batch, as PFI's --overfit batch): the Föllmer regression loss falls (its only
    irreducible part is the small Wiener term; noise-started interpolants keep the noise's variance)."""
    overrides = [
        *ITINY,
        "debug=overfit",
        "model.interpolant=follmer",
        "trainer.max_steps=40",
        "trainer.val_check_interval=40",
        "model.optim.lr=2e-3",
        "model.schedule.name=constant",
    ]
    run_dir = tmp_path / "run"
    train.run(compose_cfg("train", overrides, run_dir))
    rows = [r for r in read_csv(run_dir / "csv" / "version_0" / "metrics.csv") if r.get("train/loss")]
    losses = [float(r["train/loss"]) for r in rows]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
