"""videxp-evaluate on two video folders: paired frame metrics, unpaired FVD, fvd.json, clear errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import compose_cfg

from videxp import evaluate
from videxp.scoring import folders, selection
from videxp.scoring.folders import list_videos, pair_folders
from videxp.video import VideoError, read_video, to_float, to_unit, write_video

T, SIZE = 12, 16


class ScriptStandIn(nn.Module):
    """TorchScript-able stand-in with StyleGAN-V's detector signature: pooled pixels → 400-d features."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("proj", torch.randn(3 * 2 * 16, 400, generator=torch.Generator().manual_seed(0)))

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        # x: [B, 3, T, 224, 224] in [-1, 1] -> [B, 400]
        p = nn.functional.adaptive_avg_pool2d(torch.cat([x.mean(2), (x * x).mean(2)], 1), 4)  # [B, 6, 4, 4]
        return p.flatten(1) @ self.proj


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "standin_torchscript.pt"
    torch.jit.save(torch.jit.script(ScriptStandIn()), str(path))
    return path


def clip(seed: int, noise: float = 0.0) -> np.ndarray:
    """uint8 [T, SIZE, SIZE, 3]: a moving gradient, optionally noisy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = rng.uniform(0.2, 0.8, 3)
    frames = np.stack([(base + 0.3 * np.sin(xx[..., None] * 3 + t / 3 + yy[..., None])) for t in range(T)])
    frames = frames + noise * np.random.default_rng(seed + 100).standard_normal(frames.shape)
    return np.round(np.clip(frames, 0, 1) * 255).astype(np.uint8)


def make_folders(root, n_real: int = 6, n_fake: int = 6, noise: float = 0.1):
    real, fake = root / "real", root / "fake"
    for i in range(n_real):
        sub = real / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        np.save(sub / f"clip_{i:02d}.npy", clip(i))
    for i in range(n_fake):
        sub = fake / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        if i == 0:
            write_video(sub / f"clip_{i:02d}.mp4", clip(i, noise), fps=8)
        else:
            np.save(sub / f"clip_{i:02d}.npy", clip(i, noise))
    return real, fake


def cfg_for(tmp_path, real, fake, *extra):
    return compose_cfg("evaluate", [f"real_dir={real}", f"fake_dir={fake}", *extra], tmp_path / "out")


def test_listing_pairing_and_float_npy(tmp_path):
    real, fake = make_folders(tmp_path)
    ids = list(list_videos(real))
    assert ids == sorted(ids) and ids[0] == "a/clip_01" and len(ids) == 6
    (real / "frames_dir").mkdir()
    for t in range(3):
        from PIL import Image

        Image.fromarray(clip(0)[t]).save(real / "frames_dir" / f"{t}.png")
    assert "frames_dir" in list_videos(real)
    with pytest.raises(ValueError, match=r"1 only in .*real.*frames_dir.*0 only in"):
        pair_folders(real, fake)
    np.save(tmp_path / "f.npy", np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(VideoError, match="f.npy.*uint8.*float32"):
        read_video(tmp_path / "f.npy")


def test_paired_psnr_ssim_on_two_folders(tmp_path):
    real, fake = make_folders(tmp_path)
    results = evaluate.run(cfg_for(tmp_path, real, fake))
    assert set(results) == {"psnr", "ssim"}
    assert results["psnr"]["num_videos"] == 6 and 10 < results["psnr"]["value"] < 40
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["num_real_files"] == 6 and doc["scored_frames"] == [0, T]
    assert not (tmp_path / "out" / "fvd.json").exists()
    assert set(doc["timing_s"]) == {"decode", "score"} and min(doc["timing_s"].values()) >= 0  # the split


def test_fvd_on_unpaired_folders_writes_w1_fvd_json(tmp_path, detector_file):
    real, fake = make_folders(tmp_path, n_real=6, n_fake=5)
    cfg = cfg_for(
        tmp_path,
        real,
        fake,
        "metric=[fvd]",
        f"metric.fvd.detector={detector_file}",
        "metric.fvd.num_frames=10",
        f"metric.fvd.cache_dir={tmp_path / 'cache'}",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = evaluate.run(cfg)
    res = results["fvd"]
    assert res["num_real"] == 6 and res["num_fake"] == 5 and res["value"] > 0
    assert res["settings"]["detector_sha256"] and res["settings"]["num_frames"] == 10
    fvd = json.loads((tmp_path / "out" / "fvd.json").read_text())
    assert fvd["fvd"] == pytest.approx(res["value"])
    assert fvd["num_real_videos"] == 6 and fvd["num_generated_videos"] == 5
    assert fvd["real_features_shape"] == [6, 400] and fvd["generated_features_shape"] == [5, 400]
    assert fvd["real_videos_dir"] == str(real.resolve()) and fvd["generated_videos_dir"] == str(
        fake.resolve()
    )
    assert list((tmp_path / "cache").glob("real_*.npz"))  # reference statistics cached
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = evaluate.run(cfg)["fvd"]
    assert again["real_from_cache"] and again["value"] == pytest.approx(res["value"], rel=1e-9)


def test_fvd_with_frame_metrics_and_injected_metric_objects(tmp_path):
    from stand_in_detector import Counting

    from videxp.metrics import PSNR
    from videxp.metrics.fvd import FVD

    real, fake = make_folders(tmp_path, noise=0.05)
    metrics = {"psnr": PSNR(), "fvd": FVD(detector=Counting(), num_frames=8, use_cache=False)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = evaluate.run(cfg_for(tmp_path, real, fake), metrics=metrics)
    assert results["fvd"]["num_real"] == 6 and results["psnr"]["num_videos"] == 6
    assert (tmp_path / "out" / "fvd.json").is_file()


def test_fvd_from_folders_equals_one_in_memory_update(tmp_path):
    """Folder mode feeds FVD in batches (grouped by shape, bounded); the value is that of one update."""
    from stand_in_detector import Counting

    from videxp.metrics.fvd import FVD

    class Recording(Counting):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[int] = []

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            self.calls.append(x.shape[0])
            return super().__call__(x)

    def fvd_metric(det: Counting) -> FVD:
        return FVD(detector=det, num_frames=8, use_cache=False, batch_size=64, real_offset="first")

    def decoded(folder, skip: str = "big") -> torch.Tensor:  # [N, T, C, H, W] in [0, 1], in id order
        clips = [read_video(p) for vid, p in list_videos(folder).items() if skip not in vid]
        return to_unit(to_float(np.stack(clips)))

    real, fake = make_folders(tmp_path, n_real=9, n_fake=9)
    cfg = cfg_for(tmp_path, real, fake, "evaluate.batch_size=4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = Recording()
        from_folders = evaluate.run(cfg, metrics={"fvd": fvd_metric(det)})["fvd"]
        assert det.clips == 18 and max(det.calls) == 4  # batched, never more than batch_size at once
        ref = fvd_metric(Counting())
        ref.update(decoded(fake), decoded(real), video_index=list(range(9)), sample_index=[0] * 9)
        in_memory = ref.compute()
        assert from_folders["value"] == pytest.approx(in_memory["value"], rel=1e-6)

        # two larger reference clips between the others: grouped apart, same statistics as fed separately
        big = [np.repeat(np.repeat(clip(30 + i), 2, 1), 2, 2) for i in range(2)]  # [T, 32, 32, 3]
        np.save(real / "a" / "clip_02_big.npy", big[0])
        np.save(real / "b" / "clip_04_big.npy", big[1])
        det = Recording()
        mixed = evaluate.run(cfg, metrics={"fvd": fvd_metric(det)})["fvd"]
        assert det.clips == 20 and mixed["num_real"] == 11
        ref = fvd_metric(Counting())
        ref.update(decoded(fake), decoded(real), video_index=list(range(9)), sample_index=[0] * 9)
        ref.update_real(to_unit(to_float(np.stack(big))), video_index=[100, 101])
        assert mixed["value"] == pytest.approx(ref.compute()["value"], rel=1e-6)
        assert mixed["value"] != pytest.approx(from_folders["value"], rel=1e-6)


def test_errors_modes_mismatch_and_short_clips(tmp_path, detector_file):
    real, fake = make_folders(tmp_path, n_real=6, n_fake=5)
    with pytest.raises(ValueError, match="only in .*clip_05"):
        evaluate.run(cfg_for(tmp_path, real, fake))
    with pytest.raises(ValueError, match="exactly one input mode"):
        evaluate.run(compose_cfg("evaluate", [], tmp_path))
    with pytest.raises(ValueError, match="exactly one input mode"):
        evaluate.run(compose_cfg("evaluate", [f"eval_dir={tmp_path}", f"real_dir={real}"], tmp_path))
    with pytest.raises(ValueError, match="needs both"):
        evaluate.run(compose_cfg("evaluate", [f"real_dir={real}"], tmp_path))
    np.save(fake / "a" / "clip_05.npy", clip(5)[:8])
    with pytest.raises(ValueError, match=r"clip_05.npy .*\(12, 16, 16, 3\).*clip_05.npy \(8, 16, 16, 3\)"):
        evaluate.run(cfg_for(tmp_path, real, fake))
    cfg = cfg_for(tmp_path, real, fake, "metric=[fvd]", f"metric.fvd.detector={detector_file}")
    with pytest.raises(ValueError, match=r"clip_0\d.npy has T=12 frames; the protocol needs 16"):
        evaluate.run(cfg)


def test_cached_weights_join_the_default_selection(tmp_path, alex_state):
    """lpips joins [psnr, ssim] when its backbone is in the cache; fvd stays out without I3D weights."""
    real, fake = make_folders(tmp_path)
    cfg = cfg_for(tmp_path, real, fake)
    assert selection.add_cached_metrics(cfg) == ["lpips"]
    assert set(cfg.metric) == {"psnr", "ssim", "lpips"}
    with pytest.raises(ValueError, match=r"LPIPS-alex needs frames of at least 31x31 pixels"):
        evaluate.run(cfg)  # these clips are smaller than AlexNet can take: a clear error, not a crash


def test_cli_override_counts_as_an_explicit_choice(monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    assert selection.metrics_chosen_explicitly()  # outside a Hydra run: cfg.metric is taken as it is

    class Fake:
        def __init__(self, task):
            self.overrides = type("O", (), {"task": task})()

    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    for task, explicit in ((["real_dir=a"], False), (["metric=[psnr]"], True), (["+metric=lpips"], True)):
        monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda task=task: Fake(task)))
        assert selection.metrics_chosen_explicitly() is explicit


def test_selected_fvd_without_weights_offline_fails_before_reading_videos(tmp_path, monkeypatch):
    from videxp.weights import WeightsMissingError

    monkeypatch.setenv("VIDEXP_CACHE", str(tmp_path / "empty-cache"))
    real, fake = make_folders(tmp_path)
    cfg = cfg_for(tmp_path, real, fake, "metric=[fvd]")
    read = []
    monkeypatch.setattr(folders, "read_video", lambda *a, **k: read.append(a) or None)
    with pytest.raises(WeightsMissingError, match="i3d_torchscript.pt"):  # the styleganv preset's own
        evaluate.run(cfg)
    assert not read, "no video was read before the missing weights were reported"


def test_fvd_joins_only_when_its_protocols_own_detector_is_cached(tmp_path, monkeypatch):
    """The default FVD protocol (styleganv) reads i3d_torchscript: another cached I3D does not add fvd."""
    from videxp.weights.registry import WEIGHTS

    monkeypatch.setenv("VIDEXP_CACHE", str(tmp_path / "cache"))
    real, fake = make_folders(tmp_path)
    other = WEIGHTS["i3d_pretrained_400"].path
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_bytes(b"not checked here")
    cfg = cfg_for(tmp_path, real, fake, "evaluate.auto_metrics=[fvd]")
    assert selection.add_cached_metrics(cfg) == []
    own = WEIGHTS["i3d_torchscript"].path
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_bytes(b"not checked here")
    assert selection.add_cached_metrics(cfg) == ["fvd"]
