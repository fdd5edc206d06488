"""Frame metrics (PSNR, SSIM), the streaming FrameMetric base and the report writer."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import videxp.metrics.psnr as psnr_module
import videxp.metrics.ssim as ssim_module
from videxp.metrics import PSNR, SSIM, FrameMetric, Metric, format_table, write_report

WANG = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 1.0}
FDM_OLD_DEFAULTS = {
    "win_size": 7,
    "use_sample_covariance": True,
    "data_range": 2.0,
}  # skimage < 0.20 on floats


def _random_pair(rng: np.random.Generator, n: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.random((n, c, h, w))
    b = rng.random((n, c, h, w))
    return a, b


def _smooth_pair(rng: np.random.Generator, n: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth frames in [0, 1] and a noisy copy (σ = 0.08), as in the reference's SSIM table."""
    base = gaussian_filter(rng.standard_normal((n, c, h, w)), sigma=(0, 0, 4, 4))
    base = (base - base.min()) / (base.max() - base.min())
    noisy = np.clip(base + 0.08 * rng.standard_normal(base.shape), 0.0, 1.0)
    return noisy, base


def _skimage_ssim(a: np.ndarray, b: np.ndarray, **kwargs) -> np.ndarray:
    return np.array([structural_similarity(a[i], b[i], channel_axis=0, **kwargs) for i in range(a.shape[0])])


def _video(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)[None]  # [1, T, C, H, W]


class _MeanValue(FrameMetric):
    """Test metric: the frame's mean pixel value (lets tests set exact per-frame scores)."""

    name = "meanval"
    higher_is_better = True

    def score_frames(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pred.to(torch.float64).mean(dim=(1, 2, 3))


class _LowerBetter(_MeanValue):
    name = "lower"
    higher_is_better = False


def _const_videos(values: np.ndarray) -> torch.Tensor:
    """[B, T, 1, 4, 4] frames whose mean equals values[b, t]."""
    v = torch.as_tensor(values, dtype=torch.float64)
    return v[:, :, None, None, None].expand(*v.shape, 1, 4, 4).contiguous()


# ------------------------------------------------------------------------------------------ PSNR


def test_psnr_matches_numpy_loop() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((2, 5, 3, 16, 20))
    b = np.clip(a + rng.uniform(0.01, 0.2, (2, 5, 1, 1, 1)) * rng.standard_normal(a.shape), 0, 1)
    b[1, 2] = a[1, 2]  # one identical frame
    expected = np.empty((2, 5))
    for i in range(2):
        for t in range(5):
            mse = np.mean((a[i, t] - b[i, t]) ** 2)
            expected[i, t] = 100.0 if mse < 1e-10 else 20 * math.log10(1 / math.sqrt(mse))
    m = PSNR()
    m.update(torch.from_numpy(a), torch.from_numpy(b), video_index=[0, 1], sample_index=[0, 0])
    np.testing.assert_allclose(m.as_array()[:, 0, :], expected, rtol=0, atol=1e-10)
    assert m.as_array()[1, 0, 2] == 100.0
    assert abs(m.compute()["value"] - expected.mean()) < 1e-10


def test_psnr_float32_inputs_within_1e6_db_of_float64() -> None:
    rng = np.random.default_rng(7)
    a = rng.random((64, 3, 64, 64))
    b = np.clip(a + rng.uniform(0.001, 0.2, (64, 1, 1, 1)) * rng.standard_normal(a.shape), 0, 1)
    for per_channel in (False, True):
        exact = PSNR(per_channel=per_channel).score_frames(torch.from_numpy(a), torch.from_numpy(b))
        fast = PSNR(per_channel=per_channel).score_frames(
            torch.from_numpy(a).float(), torch.from_numpy(b).float()
        )
        a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
        rounded = PSNR(per_channel=per_channel).score_frames(torch.from_numpy(a32), torch.from_numpy(b32))
        assert fast.dtype == torch.float64
        # float32 arithmetic on float32 values: within 1e-6 dB of float64 arithmetic on the same values
        np.testing.assert_allclose(fast.numpy(), rounded.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(fast.numpy(), exact.numpy(), rtol=0, atol=1e-4)  # the inputs' rounding


def _assert_refuses_bad_values(
    metric: FrameMetric, pred: torch.Tensor, target: torch.Tensor, at: tuple
) -> None:
    """`metric.update` of two videos refuses a NaN, an inf and an out-of-range value at `at`, naming them."""
    for name, value, match in (
        ("target", float("nan"), "target contains NaN"),
        ("pred", float("inf"), "pred contains inf"),
        ("pred", -0.5, r"pred values span \[-0.5"),
    ):
        bad = {"pred": pred.clone(), "target": target.clone()}
        bad[name][at] = value
        with pytest.raises(ValueError, match=match):
            metric.update(bad["pred"], bad["target"], video_index=[2, 3], sample_index=[0, 0])


@pytest.mark.parametrize("per_channel", [False, True])
def test_psnr_large_frames_in_opencv_threads(monkeypatch, per_channel: bool) -> None:
    """Large CPU frames are scored by OpenCV in threads, all frames in one call: float32 values equal the
    float64 arithmetic's, uint8 ones are exact, an identical frame hits the cap, and NaN, inf or
    out-of-range values anywhere are refused naming the tensor."""
    monkeypatch.setattr(psnr_module, "CV2_TASK_ELEMENTS", 2 * 3 * 128 * 96)  # 2 frames a task
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    torch.manual_seed(2)
    pred, target = torch.rand(2, 9, 3, 128, 96), torch.rand(2, 9, 3, 128, 96)  # 36,864 values a frame
    pred[1, 4] = target[1, 4]
    calls: list[int] = []
    sse = psnr_module._cv2_sse
    monkeypatch.setattr(psnr_module, "_cv2_sse", lambda x, *a, **k: calls.append(len(x)) or sse(x, *a, **k))
    index = {"video_index": [0, 1], "sample_index": [0, 0]}
    metric = PSNR(per_channel=per_channel)
    metric.update(pred, target, **index)
    assert calls == [18]  # one call for all 18 frames
    exact = PSNR(per_channel=per_channel).score_frames(
        pred.flatten(0, 1).double(), target.flatten(0, 1).double()
    )
    np.testing.assert_allclose(metric.as_array()[:, 0].reshape(-1), exact.numpy(), rtol=0, atol=1e-9)
    assert metric.as_array()[1, 0, 4] == 100.0
    mixed = PSNR(per_channel=per_channel)  # float32 against float64: each pair compared in float64
    mixed.update(pred, target.double(), **index)
    np.testing.assert_allclose(mixed.as_array(), metric.as_array(), rtol=0, atol=1e-9)
    u8 = PSNR(per_channel=per_channel)
    u8.update(pred.mul(255).round().byte(), target.mul(255).round().byte(), **index)
    from_float = PSNR(per_channel=per_channel)  # the same uint8 values as float64
    from_float.update(pred.mul(255).round().double() / 255, target.mul(255).round().double() / 255, **index)
    np.testing.assert_allclose(u8.as_array(), from_float.as_array(), rtol=0, atol=1e-9)
    _assert_refuses_bad_values(PSNR(per_channel=per_channel), pred, target, (1, 8, 2, 100, 3))  # last task
    frames = torch.rand(64, 3, 128, 96)
    assert PSNR().frames_per_call(frames) == 64
    assert PSNR(compile=True).frames_per_call(frames) < 64  # compiled: torch's cache-sized slices
    calls.clear()  # backend="torch" (machines without OpenCV) never calls it, "cv2" also for small frames
    torch_only = PSNR(per_channel=per_channel, backend="torch")
    torch_only.update(pred, target, **index)
    np.testing.assert_allclose(torch_only.as_array(), metric.as_array(), rtol=0, atol=1e-6)
    PSNR(backend="torch").update(pred.mul(255).byte(), target.mul(255).byte(), **index)
    assert calls == []
    PSNR(backend="cv2").update(pred[:, :, :, :8, :8], target[:, :, :, :8, :8], **index)
    assert calls == [18]
    with pytest.raises(ValueError, match="cannot compile"):
        PSNR(backend="cv2", compile=True)


def test_psnr_identical_frames() -> None:
    x = torch.rand(1, 3, 3, 8, 8, dtype=torch.float64)
    m = PSNR()
    m.update(x, x.clone(), video_index=[0], sample_index=[0])
    assert m.compute()["value"] == 100.0
    m = PSNR(max_db=None)
    m.update(x, x.clone(), video_index=[0], sample_index=[0])
    assert math.isinf(m.compute()["value"])


def test_psnr_per_channel_matches_skimage() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((4, 3, 24, 18))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape) * np.array([1, 2, 4])[:, None, None], 0, 1)
    expected = np.array(
        [
            np.mean([peak_signal_noise_ratio(a[i, ch], b[i, ch], data_range=1.0) for ch in range(3)])
            for i in range(4)
        ]
    )
    got = PSNR(per_channel=True).score_frames(torch.from_numpy(b), torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    pooled = PSNR().score_frames(torch.from_numpy(b), torch.from_numpy(a)).numpy()
    assert np.all(np.abs(pooled - got) > 1e-3)  # the two conventions really differ


# ------------------------------------------------------------------------------------------ SSIM


@pytest.mark.parametrize("size", [(64, 64), (37, 45)])
@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize("backend", ["cv2", "shift", "conv2d"])
def test_ssim_wang_matches_skimage(size: tuple[int, int], kind: str, backend: str) -> None:
    rng = np.random.default_rng(2)
    a, b = (_random_pair if kind == "random" else _smooth_pair)(rng, 4, 3, *size)
    expected = _skimage_ssim(a, b, **WANG)
    pred, target = torch.from_numpy(a), torch.from_numpy(b)
    got = SSIM(backend=backend).score_frames(pred.float(), target.float()).numpy()  # default float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    exact = SSIM(backend=backend, dtype=torch.float64).score_frames(pred, target).numpy()
    assert np.abs(exact - expected).max() < 1e-12  # float64: equal up to rounding


@pytest.mark.parametrize("size", [(64, 64), (37, 45)])
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_ssim_fdm_matches_skimage_old_defaults(size: tuple[int, int], kind: str) -> None:
    rng = np.random.default_rng(3)
    a, b = (_random_pair if kind == "random" else _smooth_pair)(rng, 4, 3, *size)
    expected = _skimage_ssim(a, b, **FDM_OLD_DEFAULTS)
    metric = SSIM(variant="fdm")
    assert metric.settings()["data_range"] == 2.0
    got = metric.score_frames(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def _hard_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Frames where float32 SSIM loses precision unless planes are centred: flat, bright, half-white."""
    rng = np.random.default_rng(4)
    bright = 0.95 + 0.01 * rng.random((3, 3, 31, 29))
    half = np.zeros((2, 3, 40, 40))
    half[..., 20:] = 1.0
    blurred_edge = half.copy()
    blurred_edge[..., 18:22] = 0.5
    sprite = np.zeros((2, 3, 24, 24))
    sprite[:, :, 5:12, 5:12] = 1.0
    return {
        "grey": (np.full((2, 3, 33, 47), 0.7), np.full((2, 3, 33, 47), 0.69)),
        "bright low contrast": (bright, np.clip(bright + 0.002 * rng.standard_normal(bright.shape), 0, 1)),
        "half white": (half, blurred_edge),
        "black with a sprite": (np.zeros_like(sprite), sprite),
        "single 11x11 frame": (rng.random((1, 1, 11, 11)), rng.random((1, 1, 11, 11))),
        "smooth odd size": _smooth_pair(rng, 3, 3, 37, 45),
    }


@pytest.mark.parametrize("case", list(_hard_pairs()))
def test_ssim_float32_within_1e6_of_float64(case: str) -> None:
    a, b = _hard_pairs()[case]
    expected = _skimage_ssim(a, b, **WANG)
    pred, target = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    np.testing.assert_allclose(SSIM().score_frames(pred, target).numpy(), expected, rtol=0, atol=1e-6)
    # the shift backend (GPU and compile=True) sums its window in another order: 1.3e-6 on "half white"
    shift = SSIM(backend="shift").score_frames(pred, target).numpy()
    np.testing.assert_allclose(shift, expected, rtol=0, atol=2e-6)


def _step_edge_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Frames black on one side of a horizontal or vertical edge and white on the other, against a copy
    whose edge is a 4-pixel grey band: flat windows far from the plane's mean, next to the edge."""
    pairs = []
    for size in (24, 40, 64):
        for split in (size // 4, size // 2, 3 * size // 4):
            for axis in (2, 3):
                a = np.zeros((1, 3, size, size))
                index = [slice(None)] * 4
                index[axis] = slice(split, None)
                a[tuple(index)] = 1.0
                b = a.copy()
                index[axis] = slice(split - 2, split + 2)
                b[tuple(index)] = 0.5
                pairs.append((a, b))
    return pairs


def test_ssim_float32_on_step_edges_within_its_documented_bound() -> None:
    """float32 (the default) cancels in Var = E[x²] - E[x]² in flat windows at full contrast from the
    plane's mean: up to 3.4e-6 here (README: "a few 1e-6"); float64 stays exact."""
    errors = []
    for a, b in _step_edge_pairs():
        expected = _skimage_ssim(a, b, **WANG)
        pred, target = torch.from_numpy(a), torch.from_numpy(b)
        errors.append(np.abs(SSIM().score_frames(pred.float(), target.float()).numpy() - expected).max())
        exact = SSIM(dtype=torch.float64).score_frames(pred, target).numpy()
        assert np.abs(exact - expected).max() < 1e-12
    assert max(errors) < 5e-6
    assert np.median(errors) < 1e-6


def test_ssim_cv2_chunks_threads_and_scratch_reuse_change_nothing() -> None:
    """Many frames (several chunks per thread), then other sizes reusing the thread's buffers, then the
    first input again: every score equals scoring each frame alone."""
    rng = np.random.default_rng(8)
    big = [torch.from_numpy(x).float() for x in _smooth_pair(rng, 600, 3, 40, 40)]  # 15 chunks of 122 planes
    small = [torch.from_numpy(x).float() for x in _smooth_pair(rng, 3, 3, 37, 45)]
    metric = SSIM()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two workers with several chunks each
    try:
        first = metric.score_frames(*big)
        expected_small = _skimage_ssim(small[0].double().numpy(), small[1].double().numpy(), **WANG)
        np.testing.assert_allclose(metric.score_frames(*small).numpy(), expected_small, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(metric.score_frames(*big).numpy(), first.numpy())
    finally:
        torch.set_num_threads(threads)
    alone = torch.cat([metric.score_frames(big[0][i : i + 1], big[1][i : i + 1]) for i in range(0, 600, 37)])
    np.testing.assert_allclose(first[::37].numpy(), alone.numpy(), rtol=0, atol=1e-12)


def test_ssim_cv2_planes_side_by_side_change_nothing(monkeypatch) -> None:
    """Planes filtered side by side in wide rows (the default for narrow frames) score as planes filtered
    one per row, for chunks whose plane counts have many, few or no divisors that fit a row."""
    rng = np.random.default_rng(9)
    pred, target = (torch.from_numpy(x).float() for x in _smooth_pair(rng, 11, 3, 32, 48))  # 33 planes
    expected = _skimage_ssim(pred.double().numpy(), target.double().numpy(), **WANG)
    scores = {}
    for row_pixels, chunk_planes in ((512, 33), (512, 16), (48, 33), (4096, 7)):
        monkeypatch.setattr(ssim_module, "CV2_ROW_PIXELS", row_pixels)
        monkeypatch.setattr(ssim_module, "CV2_CHUNK_ELEMENTS", chunk_planes * 32 * 48)
        scores[row_pixels, chunk_planes] = SSIM().score_frames(pred, target).numpy()
        np.testing.assert_allclose(scores[row_pixels, chunk_planes], expected, rtol=0, atol=1e-6)
    for got in scores.values():
        np.testing.assert_allclose(got, scores[48, 33], rtol=0, atol=1e-9)  # 48: one plane per row


def test_ssim_cv2_backend_is_cpu_and_eager_only() -> None:
    with pytest.raises(ValueError, match="cannot compile"):
        SSIM(backend="cv2", compile=True)
    assert SSIM().settings()["dtype"] == "float32"


def test_ssim_is_valid_region_not_full_image_mean() -> None:
    """Valid region (JH, skimage, torchmetrics < 1.5), not the padded full map (torchmetrics >= 1.5)."""
    rng = np.random.default_rng(5)
    a, b = _smooth_pair(rng, 2, 3, 32, 32)
    got = SSIM(dtype=torch.float64).score_frames(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    valid, full = [], []
    for i in range(2):
        per_ch_valid, per_ch_full = [], []
        for ch in range(3):
            _, s_map = structural_similarity(a[i, ch], b[i, ch], full=True, **WANG)
            per_ch_valid.append(s_map[5:-5, 5:-5].mean())
            per_ch_full.append(s_map.mean())
        valid.append(np.mean(per_ch_valid))
        full.append(np.mean(per_ch_full))
    np.testing.assert_allclose(got, valid, rtol=0, atol=1e-12)
    assert np.all(np.abs(got - np.array(full)) > 1e-4)


def test_ssim_identical_is_one_and_small_frames_rejected() -> None:
    x = torch.rand(2, 3, 20, 20, dtype=torch.float64)
    np.testing.assert_allclose(SSIM().score_frames(x, x.clone()).numpy(), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        SSIM().score_frames(torch.rand(1, 3, 10, 30), torch.rand(1, 3, 10, 30))


# ------------------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("metric_cls", [PSNR, SSIM])
def test_streaming_uneven_batches_equal_one_batch(metric_cls: type[FrameMetric]) -> None:
    rng = np.random.default_rng(6)
    a, b = _smooth_pair(rng, 7 * 4, 3, 24, 24)
    pred = torch.from_numpy(a).view(7, 4, 3, 24, 24)  # [B, T, C, H, W]
    target = torch.from_numpy(b).view(7, 4, 3, 24, 24)
    videos, samples = list(range(7)), [0] * 7
    one = metric_cls()
    one.update(pred, target, video_index=videos, sample_index=samples)
    split = metric_cls(chunk_frames=3)
    for lo, hi in [(0, 1), (1, 5), (5, 7)]:
        split.update(pred[lo:hi], target[lo:hi], video_index=videos[lo:hi], sample_index=samples[lo:hi])
    np.testing.assert_allclose(split.as_array(), one.as_array(), rtol=0, atol=1e-13)
    r1, r2 = one.compute(), split.compute()
    assert abs(r1["value"] - r2["value"]) < 1e-12
    assert r1["num_videos"] == 7 and r1["num_samples"] == 1 and r1["num_frames"] == 4
    merged = metric_cls()
    merged.merge(split)
    assert abs(merged.compute()["value"] - r1["value"]) < 1e-12


def test_best_of_k_picks_best_sample_per_video() -> None:
    # 3 videos x 4 samples x 5 frames; per (video, sample) a constant level
    levels = np.array([[0.2, 0.9, 0.5, 0.1], [0.3, 0.3, 0.8, 0.4], [0.6, 0.2, 0.1, 0.7]])
    values = np.repeat(levels[:, :, None], 5, axis=2)  # [V, S, F]
    values[0, 2, 0] = 1.0  # a single good frame must not win: selection uses the time average
    metric = _MeanValue(reduction="best")
    low = _LowerBetter(reduction="best")
    mean = _MeanValue()
    for s in range(4):  # one update per sample index, as a sampling loop would
        pred = _const_videos(values[:, s, :])
        for m in (metric, low, mean):
            m.update(pred, pred, video_index=[10, 11, 12], sample_index=[s] * 3, frame_index=[3, 4, 5, 6, 7])
    res = metric.compute()
    assert res["best_sample"] == [1, 2, 3]
    assert res["value"] == pytest.approx(np.mean([0.9, 0.8, 0.7]))
    assert res["per_frame_mean"] == pytest.approx([0.8] * 5)
    assert low.compute()["best_sample"] == [3, 0, 2]
    assert low.compute()["value"] == pytest.approx(np.mean([0.1, 0.3, 0.1]))
    assert mean.compute()["value"] == pytest.approx(values.mean())
    assert res["frames"] == [3, 4, 5, 6, 7]
    assert metric.settings()["reduction"] == "best"


def test_as_array_shape_axes_and_missing() -> None:
    m = _MeanValue()
    vals = np.arange(6, dtype=np.float64).reshape(2, 3) / 10  # [B=2, T=3]
    m.update(
        _const_videos(vals),
        _const_videos(vals),
        video_index=[4, 9],
        sample_index=[0, 0],
        frame_index=[2, 3, 4],
    )
    m.update(_const_videos(vals[:1, :2]), _const_videos(vals[:1, :2]), video_index=[4], sample_index=[1])
    arr = m.as_array()
    assert arr.shape == (2, 2, 5) and arr.dtype == np.float64
    axes = m.axes()
    assert axes["video"].tolist() == [4, 9] and axes["sample"].tolist() == [0, 1]
    assert axes["frame"].tolist() == [0, 1, 2, 3, 4]
    assert np.isnan(arr[1, 1]).all() and np.isnan(arr[0, 0, :2]).all()
    np.testing.assert_allclose(arr[0, 0, 2:], vals[0])
    np.testing.assert_allclose(arr[0, 1, :2], vals[0, :2])
    recs = list(m.records())
    assert len(recs) == 8 and set(recs[0]) == {"video", "sample", "frame", "value"}
    # mean: frames per (video, sample), then samples, then videos
    expected = np.mean([np.mean([vals[0].mean(), vals[0, :2].mean()]), vals[1].mean()])
    assert m.compute()["value"] == pytest.approx(expected)


def test_cv2_ssim_checks_values_in_its_threads(monkeypatch) -> None:
    """The default CPU SSIM finds the value extremes in its own chunk threads (no torch pass before them):
    NaN, inf and out-of-range values in any chunk are refused naming the tensor, and chunking changes no
    value."""
    torch.manual_seed(0)
    pred, target = torch.rand(2, 8, 3, 24, 24), torch.rand(2, 8, 3, 24, 24)  # 48 planes
    whole = SSIM()
    whole.update(pred, target, video_index=[0, 1], sample_index=[0, 0])
    monkeypatch.setattr(ssim_module, "CV2_CHUNK_ELEMENTS", 2 * 24 * 24)  # 24 chunks over the threads
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    chunked = SSIM()
    chunked.update(pred, target, video_index=[0, 1], sample_index=[0, 0])
    np.testing.assert_array_equal(chunked.as_array(), whole.as_array())
    _assert_refuses_bad_values(chunked, pred, target, (1, 7, 2, 20, 3))  # in the last chunk


def test_cv2_ssim_scores_an_update_in_one_call_converting_per_chunk(monkeypatch) -> None:
    """The default CPU SSIM scores all frames of an update in one call of its threads (no slices, whatever
    `chunk_frames` says), converting float64 and bfloat16 frames chunk by chunk; other backends still
    slice by `chunk_frames`."""
    torch.manual_seed(1)
    pred, target = torch.rand(3, 10, 3, 24, 24), torch.rand(3, 10, 3, 24, 24)
    calls: list[int] = []
    score = SSIM._score_cv2

    def counting(self, p, t):
        calls.append(len(p))
        return score(self, p, t)

    monkeypatch.setattr(SSIM, "_score_cv2", counting)
    frames = SSIM(chunk_frames=4)
    frames.update(pred, target, video_index=[0, 1, 2], sample_index=[0, 0, 0])
    assert calls == [30]
    assert SSIM(backend="shift", chunk_frames=4).frames_per_call(pred.flatten(0, 1)) == 4
    for dtype, atol in ((torch.float64, 1e-6), (torch.bfloat16, 1e-6)):
        other = SSIM()
        p, t = pred.to(dtype), target.to(dtype)
        other.update(p, t, video_index=[0, 1, 2], sample_index=[0, 0, 0])
        same = SSIM()  # the same values, as float32
        same.update(p.float(), t.float(), video_index=[0, 1, 2], sample_index=[0, 0, 0])
        np.testing.assert_allclose(other.as_array(), same.as_array(), rtol=0, atol=atol)


def test_input_errors() -> None:
    m = PSNR()
    x = torch.rand(2, 3, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\(2, 3, 3, 16, 16\).*\(2, 3, 3, 16, 12\)"):
        m.update(x, torch.rand(2, 3, 3, 16, 12), video_index=[0, 1], sample_index=[0, 0])
    bad = x.clone()
    bad[1, 2, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m.update(bad, x, video_index=[0, 1], sample_index=[0, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.update(x * 2 - 1, x, video_index=[0, 1], sample_index=[0, 0])
    with pytest.raises(ValueError, match="video_index has 1 entries"):
        m.update(x, x, video_index=[0], sample_index=[0, 0])
    with pytest.raises(ValueError, match="frame_index has 2 entries"):
        m.update(x, x, video_index=[0, 1], sample_index=[0, 0], frame_index=[0, 1])
    with pytest.raises(TypeError, match="floating point in \\[0, 1\\] or uint8"):
        m.update(
            (x * 255).to(torch.int16), (x * 255).to(torch.int16), video_index=[0, 1], sample_index=[0, 0]
        )
    with pytest.raises(RuntimeError, match="no frames"):
        m.compute()
    m.update(x, x, video_index=[0, 1], sample_index=[0, 0])
    m.update(x[:1], x[:1], video_index=[0], sample_index=[0])
    with pytest.raises(ValueError, match="more than once"):
        m.compute()
    m.reset()
    with pytest.raises(ValueError, match="reduction"):
        PSNR(reduction="median")
    with pytest.raises(ValueError, match="variant"):
        SSIM(variant="torchmetrics")


def test_settings_record_conventions() -> None:
    s = SSIM().settings()
    assert (s["window"], s["win_size"], s["sigma"], s["data_range"]) == ("gaussian", 11, 1.5, 1.0)
    assert s["covariance"] == "population" and s["dtype"] == "float32" and s["reduction"] == "mean"
    f = SSIM(variant="fdm").settings()
    assert (f["window"], f["win_size"], f["data_range"]) == ("uniform", 7, 2.0)
    p = PSNR().settings()
    assert p["data_range"] == 1.0 and p["max_db"] == 100.0 and p["per_channel"] is False
    assert isinstance(PSNR(), Metric)
    json.dumps([s, f, p])


# ------------------------------------------------------------------------------------------ report


def test_write_report(tmp_path) -> None:
    rng = np.random.default_rng(7)
    a, b = _smooth_pair(rng, 3 * 2 * 4, 3, 16, 16)
    pred = torch.from_numpy(a).view(3, 2, 4, 3, 16, 16)  # [V, S, T, C, H, W]
    target = torch.from_numpy(b).view(3, 2, 4, 3, 16, 16)
    metrics: dict[str, FrameMetric] = {"psnr": PSNR(), "ssim": SSIM()}
    for s in range(2):
        for m in metrics.values():
            m.update(
                pred[:, s],
                target[:, s],
                video_index=[0, 1, 2],
                sample_index=[s] * 3,
                frame_index=[2, 3, 4, 5],
            )
    results = {name: m.compute() for name, m in metrics.items()}
    written = write_report(
        tmp_path / "eval",
        results,
        metrics,
        provenance={"git": "abc123", "seed": 0},
        extra={"scored_frames": [2, 3, 4, 5], "observed_frames": [0, 1]},
    )
    assert set(written) == {"json", "csv", "png"}
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(doc) == {"psnr", "ssim", "provenance", "scored_frames", "observed_frames"}
    assert doc["psnr"]["value"] == pytest.approx(results["psnr"]["value"])
    assert doc["ssim"]["settings"]["win_size"] == 11 and doc["provenance"]["git"] == "abc123"
    with open(tmp_path / "eval" / "per_frame.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["video", "sample", "frame", "psnr", "ssim"]
    assert len(rows) == 1 + 3 * 2 * 4
    assert float(rows[1][3]) == pytest.approx(metrics["psnr"].as_array()[0, 0, 0])
    png = (tmp_path / "eval" / "per_frame.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert not [p.name for p in (tmp_path / "eval").iterdir() if p.name.startswith(".")]  # no temp files left
    table = format_table(results)
    assert "psnr" in table and "ssim" in table and f"{results['ssim']['value']:.4f}" in table
    with pytest.raises(ValueError, match="clash"):
        write_report(tmp_path / "x", results, extra={"psnr": 1})


# ------------------------------------------------------------------------------------------ uint8 frames


@pytest.mark.parametrize(
    "make",
    [
        lambda: PSNR(),
        lambda: PSNR(per_channel=True),
        lambda: SSIM(),
        lambda: SSIM(backend="shift"),
        lambda: SSIM(variant="fdm"),
        lambda: SSIM(dtype=torch.float64),
    ],
    ids=["psnr", "psnr-per-channel", "ssim-cv2", "ssim-shift", "ssim-fdm", "ssim-float64"],
)
def test_uint8_frames_score_as_their_float64_values(make) -> None:
    """uint8 frames (odd sizes, a single 11x11 frame, a grey pair) score as x / 255 in float64 would."""
    g = torch.Generator().manual_seed(3)
    for shape in [(2, 3, 3, 37, 41), (1, 1, 1, 11, 11), (1, 2, 1, 20, 30)]:
        a = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        b = (a.int() + torch.randint(-20, 21, shape, generator=g)).clamp(0, 255).to(torch.uint8)
        if shape[0] == 1 and shape[1] == 2:
            a[0, 1], b[0, 1] = 128, 131  # grey frames
        ids = {"video_index": list(range(shape[0])), "sample_index": [0] * shape[0]}
        from_uint8, from_float = make(), make()
        from_uint8.update(a, b, **ids)
        from_float.update(a.double() / 255, b.double() / 255, **ids)
        np.testing.assert_allclose(from_uint8.as_array(), from_float.as_array(), rtol=0, atol=1e-6)
    if isinstance(from_uint8, PSNR):  # integer differences: exact
        np.testing.assert_allclose(from_uint8.as_array(), from_float.as_array(), rtol=0, atol=1e-12)


def test_uint8_beside_float_and_for_metrics_without_uint8_kernels() -> None:
    """A uint8 side next to a float side, or a metric that only takes floats, sees x / 255 in float32."""

    class MeanAbs(FrameMetric):
        def score_frames(self, pred, target):
            assert pred.dtype == target.dtype == torch.float32
            return (pred - target).abs().flatten(1).mean(1)

    a = torch.randint(0, 256, (1, 2, 3, 16, 16), dtype=torch.uint8)
    b = torch.rand(1, 2, 3, 16, 16)
    for m in (PSNR(), MeanAbs()):
        mixed, floats = m.empty_copy(), m.empty_copy()
        mixed.update(a, b, video_index=[0], sample_index=[0])
        floats.update(a.float() / 255, b, video_index=[0], sample_index=[0])
        np.testing.assert_allclose(mixed.as_array(), floats.as_array(), rtol=0, atol=1e-6)
    m = MeanAbs()
    m.update(a, a, video_index=[0], sample_index=[0])
    assert m.compute()["value"] == 0.0


# ------------------------------------------------------------------------------------------ compiled kernel


def test_compiled_kernel_equals_eager_and_still_checks_values() -> None:
    """compile=True: one torch.compile'd kernel per slice gives the eager values and the same input checks."""
    rng = np.random.default_rng(7)
    a, b = _smooth_pair(rng, 6, 3, 24, 24)
    pred, target = torch.from_numpy(a).view(2, 3, 3, 24, 24), torch.from_numpy(b).view(2, 3, 3, 24, 24)
    for cls, kw in ((PSNR, {}), (SSIM, {"backend": "shift", "dtype": torch.float64})):
        eager, compiled = cls(**kw), cls(compile=True, **kw)  # the same algorithm, eager and compiled
        for m in (eager, compiled):
            m.update(pred, target, video_index=[0, 1], sample_index=[0, 0])
        np.testing.assert_allclose(compiled.as_array(), eager.as_array(), rtol=0, atol=1e-12)
        bad = pred.clone()
        bad[1, 2, 0, 5, 5] = float("nan")
        with pytest.raises(ValueError, match="pred contains NaN"):
            compiled.update(bad, target, video_index=[2, 3], sample_index=[0, 0])
        with pytest.raises(ValueError, match=r"target values span \[.*, 2\]"):
            compiled.update(pred, target * 2, video_index=[2, 3], sample_index=[0, 0])


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch) -> None:
    """A machine without a working compiler still scores (eager kernel) and says so once."""

    class FakeInductorError(RuntimeError):
        pass

    FakeInductorError.__module__ = "torch._inductor.exc"

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise FakeInductorError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    pred = torch.rand(1, 2, 3, 16, 16, dtype=torch.float64)
    metric, eager = SSIM(compile=True), SSIM(backend="shift")  # compile=True runs the shift backend
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
        metric.update(pred, pred * 0.9, video_index=[0], sample_index=[0])
    eager.update(pred, pred * 0.9, video_index=[0], sample_index=[0])
    np.testing.assert_array_equal(metric.as_array(), eager.as_array())
    metric.update(pred, pred * 0.8, video_index=[1], sample_index=[0])  # no second warning, still eager


def test_saved_partial_states_merge_to_the_one_process_result(tmp_path):
    torch.manual_seed(0)
    pred, real = torch.rand(4, 3, 3, 8, 8), torch.rand(4, 3, 3, 8, 8)  # [B, T, C, H, W]
    whole, parts = PSNR(), []
    whole.update(pred, real, video_index=[0, 1, 2, 3], sample_index=[0] * 4)
    for k, rows in enumerate(([0, 1], [2, 3])):
        shard = PSNR()
        shard.update(pred[rows], real[rows], video_index=rows, sample_index=[0, 0])
        parts.append((tmp_path / f"s{k}", shard.save_state(tmp_path / f"s{k}", "psnr")))
    merged = PSNR()
    assert merged.merge_saved(parts) is True
    assert merged.compute() == whole.compute()


def test_a_metric_without_partial_state_refuses_sharded_scoring(tmp_path):
    class Mean(Metric):
        def update(self, pred, target, **index):
            pass

        def compute(self):
            return {"value": 0.0, "settings": {}}

        def reset(self):
            pass

        def settings(self):
            return {}

    with pytest.raises(ValueError, match="'mean' .*no partial state; use sample.finalise=false"):
        Mean().save_state(tmp_path, "mean")
    with pytest.raises(ValueError, match="no partial state to merge"):
        Mean().merge_saved([])
