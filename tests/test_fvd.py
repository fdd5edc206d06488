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
        "num_real": 256,
        "num_fake": 256,
        "num_frames": 8,
        "stride": 1,
        "quantize": "truncate",
        "resize": "short_side_crop",
        "covariance": "unbiased",
        "include_context": False,
        "per_sample": False,
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
    assert {"styleganv", "videogpt", "tats", "fdm"} <= set(presets)
    for name in presets:
        resolve_protocol(name, presets)
    assert resolve_protocol("fdm", presets)["include_context"] is True
    with pytest.raises(ValueError, match="unknown FVD protocol"):
        resolve_protocol("nope", presets)
    with pytest.raises(ValueError, match="quantize"):
        resolve_protocol("styleganv", presets, {"quantize": "floor"})
    with pytest.raises(ValueError, match="unknown FVD protocol key"):
        FVD(detector=Counting(), frames=3)


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
