"""FVD: protocol presets, streaming statistics, monotonicity under corruption, per-sample FDM, caching."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import compose_cfg
from hydra.utils import instantiate
from stand_in_detector import Counting

from videxp.metrics.detector import Detector, random_i3d
from videxp.metrics.frechet import frechet_distance
from videxp.metrics.fvd import FVD, default_protocols, quantize, resize_frames, resolve_protocol

NOISE = (0.05, 0.1, 0.2, 0.4)


def videos(n: int, t: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random videos [n, t, 3, size, size] in [0, 1] (moving gradients + blobs), uint8-exact."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 3, 4, 4, generator=g)
    drift = torch.rand(n, 1, 3, 4, 4, generator=g) * 0.05
    steps = torch.arange(t).view(1, t, 1, 1, 1)
    small = (base + drift * steps).clamp(0, 1).reshape(n * t, 3, 4, 4)
    v = nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return (torch.round(v.reshape(n, t, 3, size, size) * 255) / 255).clamp(0, 1)


def noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def make_fvd(det: Detector | None = None, tmp_path=None, **kw) -> FVD:
    return FVD(
        detector=det or Counting(),
        cache_dir=tmp_path if tmp_path is not None else None,
        use_cache=tmp_path is not None,
        **kw,
    )


def fvd_of(real: torch.Tensor, fake: torch.Tensor, det: Detector, **kw) -> float:
    m = make_fvd(det, **kw)
    n = real.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.update(fake, real, video_index=list(range(n)), sample_index=[0] * n)
        return m.compute()["value"]


# --------------------------------------------------------------------------- protocol presets


def test_presets_and_single_key_override_from_config(tmp_path):
    cfg = compose_cfg(
        "evaluate",
        [
            "metric=[fvd]",
            "metric.fvd.protocol=videogpt",
            "metric.fvd.num_frames=8",
            f"metric.fvd.cache_dir={tmp_path}",
        ],
        tmp_path,
    )
    m = instantiate(cfg.metric.fvd, detector=Counting())
    assert m.protocol_name == "videogpt"
    assert m.protocol == {
        "detector": "pooled-projection",  # the Detector object given replaces the preset's i3d_pretrained_400
        "num_real": 256,
        "num_fake": 256,
        "num_frames": 8,
        "frames": "first",
        "stride": 1,
        "quantize": "truncate",
        "resize": "short_side_crop",
        "covariance": "unbiased",
        "include_context": False,
        "per_sample": False,
        "trials": 1,
        "real_offset": "first",
        "offset_seed": 0,
        "fake_samples": None,
    }
    s = m.settings()
    assert s["protocol"] == "videogpt" and s["num_frames"] == 8 and s["detector"] == "pooled-projection"
    default = instantiate(compose_cfg("evaluate", ["metric=[fvd]"], tmp_path).metric.fvd, detector=Counting())
    assert default.protocol_name == "styleganv"
    assert default.protocol["covariance"] == "population" and default.protocol["quantize"] == "round"
    assert default.protocol["num_frames"] == 16 and default.protocol["num_real"] == 2048
    assert not default.wants_full_video


def test_every_preset_resolves_and_bad_keys_fail():
    presets = default_protocols()
    assert {"styleganv", "videogpt", "tats", "tf", "fdm"} <= set(presets)
    for name in presets:
        resolve_protocol(name, presets)
    assert resolve_protocol("fdm", presets)["include_context"] is True
    with pytest.raises(ValueError, match="unknown FVD protocol"):
        resolve_protocol("nope", presets)
    with pytest.raises(ValueError, match="quantize"):
        resolve_protocol("styleganv", presets, {"quantize": "floor"})
    with pytest.raises(ValueError, match="unknown FVD protocol key"):
        FVD(detector=Counting(), frame=3)
    with pytest.raises(ValueError, match="frames"):
        resolve_protocol("styleganv", presets, {"frames": "last"})
    with pytest.raises(ValueError, match="trials > 1 needs numeric"):
        resolve_protocol("w1_i2v", presets, {"trials": 2})
    with pytest.raises(ValueError, match="per_sample and trials"):
        resolve_protocol("fdm", presets, {"trials": 3})


def test_each_preset_names_its_source_detector():
    presets = default_protocols()
    detectors = {name: resolve_protocol(name, presets)["detector"] for name in presets}
    assert detectors["styleganv"] == "i3d_torchscript" and detectors["tf"] == "i3d_torchscript"
    assert detectors["videogpt"] == detectors["tats"] == "i3d_pretrained_400"
    assert detectors["w1_i2v"] == "rgb_imagenet"
    assert FVD(protocol="videogpt", detector="some/file.pt")._detector_spec == "some/file.pt"  # given wins
    assert FVD(protocol="styleganv")._detector_spec == "i3d_torchscript"


def test_w1_preset_first_or_uniform_frames_and_every_video(tmp_path):
    """W1: 16 frames per video (first 16 by default, or spread over the clip), every video counted."""
    first = make_fvd(Counting(), protocol="w1_i2v")
    assert first.protocol["num_real"] == "all" and first._choose_frames(
        81, np.array([0]), "generated"
    ) == list(range(16))
    spread = make_fvd(Counting(), protocol="w1_i2v", frames="uniform")
    positions = spread._choose_frames(81, np.array([0]), "generated")
    assert positions[0] == 0 and positions[-1] == 80 and len(positions) == 16
    assert spread._choose_frames(16, np.array([0]), "reference") == list(range(16))  # a 16-frame reference
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(40, 16, 3, 16, 16, generator=g), torch.rand(40, 16, 3, 16, 16, generator=g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = make_fvd(Counting(), protocol="w1_i2v")
        m.update(fake, real, video_index=list(range(40)), sample_index=[0] * 40)
        res = m.compute()
    assert res["num_real"] == res["num_fake"] == 40
    assert not [w for w in caught if "protocol's" in str(w.message)]  # "all" has no size to fall short of


def test_quantize_and_resize_conventions():
    u = torch.arange(256, dtype=torch.float32) / 255  # uint8-derived floats
    assert torch.equal(quantize(u, "round"), torch.arange(256.0))
    assert torch.equal(quantize(u, "truncate"), torch.arange(256.0))  # no off-by-one from float round-off
    x = torch.tensor([0.5 / 255 + 1e-4, 0.9 / 255])
    assert quantize(x, "round").tolist() == [1.0, 1.0] and quantize(x, "truncate").tolist() == [0.0, 0.0]
    frames = torch.rand(2, 3, 64, 96)
    assert resize_frames(frames, "direct").shape == (2, 3, 224, 224)
    crop = resize_frames(frames, "short_side_crop")
    assert crop.shape == (2, 3, 224, 224)
    full = nn.functional.interpolate(frames, size=(224, 336), mode="bilinear", align_corners=False)
    assert torch.equal(crop, full[..., :, 56:280])


# --------------------------------------------------------------------------- values


def test_fvd_of_a_set_with_itself_is_zero():
    real = videos(24)
    assert abs(fvd_of(real, real, Counting())) < 1e-6


def test_streaming_equals_one_batch_and_matches_frechet():
    real, fake = videos(24, seed=0), noisy(videos(24, seed=0), 0.1)
    det = Counting()
    one = fvd_of(real, fake, det)
    m = make_fvd(det)
    for i in range(0, 24, 5):
        idx = list(range(i, min(i + 5, 24)))
        m.update(fake[idx], real[idx], video_index=idx, sample_index=[0] * len(idx))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = m.compute()
    assert res["value"] == pytest.approx(one, rel=1e-6)  # float32 features vary with batching
    fr = m.features(real, "round").double().numpy()
    ff = m.features(fake, "round").double().numpy()
    ref = frechet_distance(ff.mean(0), np.cov(ff.T, bias=True), fr.mean(0), np.cov(fr.T, bias=True))
    assert res["value"] == pytest.approx(ref, rel=1e-6)


def test_fvd_grows_with_noise_stand_in():
    real = videos(24)
    values = [fvd_of(real, noisy(real, s), Counting(), num_frames=8) for s in NOISE]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_result_records_settings_counts_and_warnings():
    real = videos(6)
    m = make_fvd()
    m.update(noisy(real, 0.1), real, video_index=list(range(6)), sample_index=[0] * 6)
    with pytest.warns(UserWarning, match="feature dim"):
        res = m.compute()
    assert res["num_real"] == 6 and res["num_fake"] == 6 and res["feature_dim"] == 16
    assert res["real_features_shape"] == [6, 16] and res["higher_is_better"] is False
    assert res["scored_frames"]["fake"] == [list(range(16))]
    assert any("feature dim" in w for w in res["warnings"]) and any("2048" in w for w in res["warnings"])
    for key in (
        "protocol",
        "num_frames",
        "stride",
        "quantize",
        "resize",
        "covariance",
        "resolution",
        "value_range",
    ):
        assert key in res["settings"]


def test_reals_counted_once_per_video_across_samples():
    real = videos(4)
    m = make_fvd()
    for k in range(3):
        m.update(noisy(real, 0.05, seed=k), real, video_index=list(range(4)), sample_index=[k] * 4)
    assert m.real_stats.count == 4 and m.fake_stats[0].count == 12
    with pytest.raises(ValueError, match="more than once"):
        m.update(real[:1], real[:1], video_index=[0], sample_index=[0])


def test_fdm_protocol_one_fvd_per_sample_index():
    real = videos(8, t=10)
    det = Counting()
    m = make_fvd(det, protocol="fdm")
    assert m.wants_full_video
    for k, sigma in enumerate((0.05, 0.1, 0.2)):
        m.update(noisy(real, sigma, seed=k), real, video_index=list(range(8)), sample_index=[k] * 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = m.compute()
    per = [res["per_sample"][str(k)] for k in range(3)]
    assert per[0] < per[1] < per[2]
    assert res["value"] == pytest.approx(np.mean(per))
    assert res["sem"] == pytest.approx(np.std(per, ddof=1) / math.sqrt(3))
    assert res["scored_frames"]["fake"] == [list(range(10))]  # the whole clip
    assert res["num_fake_per_sample"] == {"0": 8, "1": 8, "2": 8} and det.clips == 8 + 24


def test_too_short_videos_raise_naming_the_video():
    m = make_fvd()
    short = videos(2, t=8)
    with pytest.raises(ValueError, match=r"video 5.*T=8.*16 frames"):
        m.update(short, short, video_index=[5, 6], sample_index=[0, 0])
    det = Counting()
    det.min_frames = 9
    m = make_fvd(det, num_frames=8)
    with pytest.raises(ValueError, match="at least 9"):
        m.update(videos(2), videos(2), video_index=[0, 1], sample_index=[0, 0])


def test_reference_statistics_cache_hit_skips_the_real_side(tmp_path):
    real, fake = videos(10), noisy(videos(10), 0.1)
    identity = {"dataset": {"name": "toy"}, "videos": list(range(10))}
    values = []
    for _ in range(2):
        det = Counting()
        m = make_fvd(det, tmp_path=tmp_path)
        m.set_reference_identity(identity)
        m.update(fake, real, video_index=list(range(10)), sample_index=[0] * 10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = m.compute()
        values.append((res["value"], det.clips, res["real_from_cache"]))
    (v1, clips1, hit1), (v2, clips2, hit2) = values
    assert (clips1, hit1) == (20, False) and (clips2, hit2) == (10, True)
    assert v1 == pytest.approx(v2, rel=1e-12)
    assert len(list(tmp_path.glob("real_*.npz"))) == 1
    # another protocol setting or reference set → another key (a miss)
    other = make_fvd(Counting(), tmp_path=tmp_path, stride=1, num_frames=8)
    other.set_reference_identity(identity)
    assert other.cache_path() != m.cache_path()
    m.set_reference_identity({**identity, "videos": list(range(9))})
    assert m.cache_path() != other.cache_path()


# --------------------------------------------------------------------------- random-weight I3D


@pytest.fixture(scope="module")
def i3d_features():
    """Random-weight I3D features (16 clips of 16 frames in all, ~0.6 clips/s on 2 cores; shared):
    4 clean clips and 3 noisy copies of the first 3 per noise level."""
    det = random_i3d(seed=0)
    m = FVD(detector=det, use_cache=False)
    real = videos(4, t=16, size=32)
    feats = {"real": m.features(real, "round").double().numpy()}
    for s in NOISE:
        feats[s] = m.features(noisy(real[:3], s, seed=3), "round").double().numpy()
    return feats


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(a.mean(0), np.cov(a.T, bias=True), b.mean(0), np.cov(b.T, bias=True))


def test_random_i3d_fvd_self_zero_and_monotone(i3d_features):
    real = i3d_features["real"]
    assert real.shape == (4, 400)
    assert abs(_fd(real, real)) < 1e-6
    values = [_fd(i3d_features[s], real) for s in NOISE]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_tf_legacy_resize_samples_without_half_pixel_centres():
    # TF1 resize_bilinear(align_corners=False): output i reads input i·in/out, right neighbour clamped
    x = torch.tensor([0.0, 10.0, 20.0]).view(1, 1, 1, 3).expand(1, 1, 3, 3)
    y = resize_frames(x, "tf_legacy", size=6)  # positions 0, .5, 1, 1.5, 2, 2.5
    assert torch.allclose(y[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0, 20.0]))
    frames = torch.rand(2, 3, 64, 48, dtype=torch.float64)
    out = resize_frames(frames, "tf_legacy")
    assert out.shape == (2, 3, 224, 224)
    # a direct per-pixel evaluation of the TF1 rule at a few output pixels
    for i, j in [(0, 0), (17, 200), (223, 223), (100, 5)]:
        py, px = i * 64 / 224, j * 48 / 224
        y0, x0 = int(py), int(px)
        y1, x1 = min(y0 + 1, 63), min(x0 + 1, 47)
        fy, fx = py - y0, px - x0
        f = frames[..., [y0, y0, y1, y1], [x0, x1, x0, x1]]  # [2, 3, 4]
        ref = f @ torch.tensor(
            [(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], dtype=torch.float64
        )
        assert torch.allclose(out[..., i, j], ref, atol=1e-12)
    # differs from torch's half-pixel bilinear, as the reference page measures
    assert (out - resize_frames(frames, "direct")).abs().max() > 1e-3


class FirstFrameValue(Detector):
    """Features = the mean value of the first and last scored frame (identifies the clip's window)."""

    def __init__(self) -> None:
        class Net(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, T, S, S]
                return torch.stack([x[:, :, 0].mean((1, 2, 3)), x[:, :, -1].mean((1, 2, 3))], 1)  # [B, 2]

        super().__init__(Net(), name="first-frame", feature_dim=2, min_frames=2)


def ramp_videos(n: int, t: int) -> torch.Tensor:
    """Videos whose frame k is the constant k/255 (uint8-exact) [n, t, 3, 8, 8]."""
    levels = torch.arange(t, dtype=torch.float32) / 255
    return levels.view(1, t, 1, 1, 1).expand(n, t, 3, 8, 8).contiguous()


def test_styleganv_reference_clips_start_at_seeded_random_offsets():
    n, t = 6, 40
    real = ramp_videos(n, t)

    def offsets(seed: int, mode: str = "random") -> list[int]:
        m = FVD(detector=FirstFrameValue(), num_frames=8, real_offset=mode, offset_seed=seed, use_cache=False)
        captured = []
        m._real = {}
        m.update_real(real, video_index=list(range(n)))
        stats = m.real_stats
        assert stats.count == n
        # recover each clip's first frame from the reference features: first value = (offset/255)·2 − 1
        for v in range(n):
            one = FVD(
                detector=FirstFrameValue(), num_frames=8, real_offset=mode, offset_seed=seed, use_cache=False
            )
            one.update_real(real[v : v + 1], video_index=[v])
            first = float(one.real_stats.mean()[0])
            captured.append(round((first + 1) / 2 * 255))
        return captured

    a, b, c = offsets(0), offsets(0), offsets(1)
    assert a == b  # reproducible
    assert a != c  # the seed matters
    assert len(set(a)) > 1 and all(0 <= o <= t - 8 for o in a)  # per video, within range
    assert offsets(0, "first") == [0] * n
    # generated clips always start at frame 0
    m = FVD(detector=FirstFrameValue(), num_frames=8, offset_seed=0, use_cache=False)
    m.update_fake(real[:2], video_index=[0, 1], sample_index=[0, 0])
    assert float(m.fake_stats[0].mean()[0]) == pytest.approx(-1.0)


def test_trials_split_videos_into_groups_and_report_mean_and_spread():
    det = Counting()
    real, fake = videos(12, t=4, size=16, seed=3), noisy(videos(12, t=4, size=16, seed=4), 0.1)
    m = FVD(detector=det, num_frames=4, num_real=4, num_fake=4, trials=3, use_cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.update(fake, real, video_index=list(range(12)), sample_index=[0] * 12)
        out = m.compute()
        per = [
            fvd_of(
                real[4 * k : 4 * k + 4],
                fake[4 * k : 4 * k + 4],
                Counting(),
                num_frames=4,
                num_real=4,
                num_fake=4,
            )
            for k in range(3)
        ]
    assert out["per_trial"] == {str(k): pytest.approx(v, rel=1e-9) for k, v in enumerate(per)}
    assert out["value"] == pytest.approx(np.mean(per), rel=1e-9)
    assert out["std"] == pytest.approx(np.std(per, ddof=1), rel=1e-9)
    assert out["num_real"] == 12 and out["num_fake"] == 12
    short = FVD(detector=Counting(), num_frames=4, num_real=8, num_fake=4, trials=2, use_cache=False)
    short.update(fake[:8], real[:8], video_index=list(range(8)), sample_index=[0] * 8)
    with pytest.raises(ValueError, match="lack reference clips"):
        short.compute()


def test_fake_samples_restricts_the_generated_side_to_chosen_sample_indices():
    real = videos(4, t=4, size=16, seed=5)
    fakes = [noisy(real, 0.05, seed=6), noisy(real, 0.4, seed=7)]  # sample 0 close, sample 1 far
    m = FVD(detector=Counting(), num_frames=4, fake_samples=[0], use_cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, fake in enumerate(fakes):
            m.update(fake, real, video_index=list(range(4)), sample_index=[k] * 4)
        out = m.compute()
        only_first = fvd_of(real, fakes[0], Counting(), num_frames=4)
    assert out["num_fake"] == 4 and out["value"] == pytest.approx(only_first, rel=1e-9)
    with pytest.raises(ValueError, match="fake_samples"):
        FVD(detector=Counting(), fake_samples=[-1])
