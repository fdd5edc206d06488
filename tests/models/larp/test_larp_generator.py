"""model=larp: the generator (shapes, seeds, labels), W4 sharded sampling and report, training."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import bare_trainer, compose_cfg

from videxp import sample
from videxp.models.larp.ar import LARPAR
from videxp.models.larp.module import LARPModule
from videxp.models.larp.tokenizer import LARPTokenizer

FAST = {"cfg_scale": 1.25, "dtype": "float32"}


def tiny_module(**kw) -> LARPModule:
    module = LARPModule(size="tiny", num_classes=10, sampling=FAST, **kw).eval()
    torch.nn.init.normal_(module.ar.output.weight, std=0.5)  # zero-init logits would be uniform
    return module


@pytest.fixture(scope="module")
def module() -> LARPModule:
    return tiny_module()


def _generate(gen, rows: int, labels, seeds, size: int = 16):
    frames = torch.zeros(rows, 0, 3, size, size)
    return gen.generate(frames, [], [0, 1, 2, 3], {"label": labels}, seeds)


def test_frames_shapes_range_and_nll(module):
    gen = module.generator()
    out = _generate(gen, 2, [1, None], [5, 6], size=24)  # resized from LARP's 16 x 16
    assert out.shape == (2, 4, 3, 24, 24) and out.min() >= -1 and out.max() <= 1
    nll = gen.pop_stats()["nll"]
    assert len(nll) == 2 and all(v > 0 for v in nll) and gen.pop_stats() == {}
    d = gen.describe()
    assert d["report"]["cfg_scale"] == 1.25 and d["report_columns"][2] == "num_samples"
    assert d["report_columns"][-2:] == ["nll", "fvd"]


def test_a_row_equals_itself_alone_and_in_a_batch(module):
    gen = module.generator()
    batch = _generate(gen, 3, [1, 2, 3], [7, 8, 9])
    alone = _generate(gen, 1, [2], [8])
    assert torch.equal(batch[1:2], alone)


def test_the_class_label_reaches_the_ar():
    module = tiny_module()
    module.sampling = {**FAST, "top_k": 1, "cfg_scale": 1.0}
    gen = module.generator()
    tokens = []
    gen.tokenizer.decode_from_bottleneck = lambda ids: (
        tokens.append(ids) or torch.zeros(len(ids), 3, 4, 16, 16)
    )
    _generate(gen, 2, [0, 7], [1, 1])
    assert not torch.equal(tokens[0][0], tokens[0][1])  # greedy: only the class differs


def test_observed_frames_need_a_frame_prediction_ar(module):
    gen = module.generator()
    with pytest.raises(ValueError, match="class-conditional"):
        gen.generate(torch.zeros(1, 2, 3, 16, 16), [0, 1], [2, 3], {}, [0])


def _overrides(root: Path, *extra: str) -> list[str]:
    return [
        "model=larp",
        "model.size=tiny",
        "model.sampling.dtype=float32",
        "ckpt_path=random",
        "dataset.image_size=16",
        "dataset.video_length=4",
        "dataset.source.num_videos={train: 8, val: 4, test: 4}",
        "dataset.source.sprite_size=[3,6]",
        "inference.obs_length=0",
        "inference.step_size=2",
        "sample.batch_size=2",
        "sample.stop_index=3",
        "sample.video_format=none",
        "sample.schedule_png=false",
        "metric=[fvd]",
        "metric.fvd.detector={_target_:stand_in_detector.Counting}",
        "metric.fvd.num_frames=4",
        f"metric.fvd.cache_dir={root / 'fvd_cache'}",
        f"paths.output_root={root}",
        *extra,
    ]


def _run(root: Path, out: str, *extra: str) -> dict:
    over = _overrides(root, f"sample.out_dir={root / out}", f"run_name={out}", *extra)  # one report row each
    cfg = compose_cfg("sample", over, root / out)
    return sample.run(cfg)


def test_sharded_tiny_run_equals_the_unsharded_one_and_reports_larp_columns(tmp_path):
    _run(tmp_path, "whole")
    shards = ("sample.num_shards=3", "sample.batch_size=1")  # other batches than the whole run's
    statuses = [_run(tmp_path, "sharded", *shards, f"sample.shard={k}") for k in (2, 0, 1)]
    assert statuses[-1]["finalise"]["status"] == "finalised"
    names = sorted(p.name for p in (tmp_path / "whole/samples").glob("*.npy"))
    assert names == [f"sample_{v:04d}-0.npy" for v in range(3)]
    for name in names:
        assert (tmp_path / "whole/samples" / name).read_bytes() == (
            tmp_path / "sharded/samples" / name
        ).read_bytes()
    with open(tmp_path / "fvd_report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    larp = ["ar_model", "tokenizer", "num_samples", "cfg_scale", "temperature", "top_k", "top_p", "dtype"]
    for row in rows:
        assert all(row[c] != "" for c in [*larp, "nll", "fvd", "num_generated"])
        assert row["num_samples"] == "3" and row["cfg_scale"] == "1.25" and row["dtype"] == "float32"
    assert float(rows[0]["nll"]) == pytest.approx(float(rows[1]["nll"]), rel=1e-5)
    assert float(rows[0]["fvd"]) == pytest.approx(float(rows[1]["fvd"]), rel=1e-9)


def test_w4_composes_with_larps_settings(tmp_path):
    cfg = compose_cfg("sample", ["experiment=ucf101_larp", "model=larp"], tmp_path)
    assert cfg.model.sampling.cfg_scale == 1.25 and cfg.model.sampling.dtype == "bfloat16"
    assert cfg.model.num_classes == 101 and cfg.inference.obs_length == 0 and cfg.model.size == "paper"
    assert (
        cfg.model.tokenizer.pretrained == "hywang66/LARP-L-long-tokenizer"
        and cfg.model.tokenizer.dtype == "fp16"
    )


def _batches(n: int = 6):
    g = torch.Generator().manual_seed(0)
    video = torch.rand(8, 4, 3, 16, 16, generator=g) * 2 - 1  # [B, T, C, H, W]
    labels = torch.arange(8) % 3
    return torch.utils.data.DataLoader([{"video": video, "label": labels}] * n, batch_size=None)


@pytest.mark.parametrize("stage", ["ar", "tokenizer"])
def test_short_training_decreases_the_loss(stage, tmp_path):
    module = LARPModule(size="tiny", stage=stage, num_classes=10, optim={"lr": 3e-3, "warmup_epochs": 0})
    module.train()
    before = float(module.ar_loss(next(iter(_batches(1))))) if stage == "ar" else 0.0
    trainer = bare_trainer(12, default_root_dir=tmp_path)
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer.callbacks.append(Record())
    torch.manual_seed(0)
    trainer.fit(module, train_dataloaders=_batches(12))
    assert losses[-1] < losses[0], losses
    if stage == "ar":
        assert losses[0] == pytest.approx(before, rel=0.2)


def test_checkpoint_round_trip_and_released_layout(tmp_path):
    module = tiny_module()
    state = module.state_dict()
    assert state and all(k.startswith("ar.") for k in state)
    again = LARPModule(size="tiny", num_classes=10, sampling=FAST)
    again.load_state_dict(state)
    assert torch.equal(again.ar.output.weight, module.ar.output.weight)
    folders = module.save_pretrained(tmp_path / "export")
    ar = LARPAR.from_pretrained(folders["ar"])
    tok = LARPTokenizer.from_pretrained(folders["tokenizer"])
    assert torch.equal(ar.output.weight, module.ar.output.weight)
    assert all(torch.equal(v, module.tokenizer.state_dict()[k]) for k, v in tok.state_dict().items())
    loaded = LARPModule(
        size="paper",
        num_classes=10,
        tokenizer={"pretrained": str(folders["tokenizer"])},
        ar={"pretrained": str(folders["ar"])},
        sampling=FAST,
    )
    assert torch.equal(loaded.ar.output.weight, module.ar.output.weight)
