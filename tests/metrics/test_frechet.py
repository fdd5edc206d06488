"""Fréchet distance (closed forms, scipy reference) and streaming FeatureStats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from videxp.metrics.frechet import FeatureStats, frechet_distance, frechet_from_stats


def _scipy_fd(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Reference: StyleGAN-V's formula with scipy's sqrtm (real part)."""
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def _rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_closed_form_commuting() -> None:
    # diagonal covariances commute: FD = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 2.0])
    expected = 9.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-12)


def test_closed_form_rotated() -> None:
    # Σ1 = I·s² (isotropic) and Σ2 = R diag(a, b) Rᵀ: sqrt(Σ1^½ Σ2 Σ1^½) has eigenvalues s·sqrt(a), s·sqrt(b)
    s, a, b = 2.0, 3.0, 0.5
    r = _rotation(0.7)
    sigma1, sigma2 = s**2 * np.eye(2), r @ np.diag([a, b]) @ r.T
    expected = 2 * s**2 + a + b - 2 * s * (np.sqrt(a) + np.sqrt(b))
    assert frechet_distance(np.zeros(2), sigma1, np.zeros(2), sigma2) == pytest.approx(expected, abs=1e-12)
    # non-commuting pair (two rotated ellipses): W2² between 2-D Gaussians via sqrt(tr + 2 sqrt(det))
    s1 = _rotation(0.3) @ np.diag([4.0, 1.0]) @ _rotation(0.3).T
    s2 = _rotation(1.2) @ np.diag([2.0, 0.5]) @ _rotation(1.2).T
    a_half = scipy.linalg.sqrtm(s1).real
    m = a_half @ s2 @ a_half
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))  # closed form for 2x2 PSD
    expected = np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(expected, abs=1e-12)


def test_matches_scipy_full_rank() -> None:
    rng = np.random.default_rng(0)
    d = 64
    a, b = rng.normal(size=(d, 2 * d)), rng.normal(size=(d, 3 * d))
    s1, s2 = a @ a.T / (2 * d), b @ b.T / (3 * d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), abs=1e-6)


def test_matches_scipy_rank_deficient() -> None:
    rng = np.random.default_rng(1)
    d, n = 64, 40  # fewer samples than dims: singular covariances
    x, y = rng.normal(size=(n, d)), rng.normal(loc=0.3, size=(n, d))
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    assert np.linalg.matrix_rank(s1) < d
    # scipy's sqrtm of a singular product adds ~sqrt(round-off) per null eigenvalue (~1e-6 in total here);
    # our eigenvalue cut removes it, so compare relatively (the exact case below is checked to 1e-10)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), rel=1e-6)


def test_closed_form_rank_deficient() -> None:
    # Σ1 = U diag(a) Uᵀ, Σ2 = U diag(b) Uᵀ with zeros: commuting and singular, FD = Σ (sqrt(a) - sqrt(b))²
    rng = np.random.default_rng(5)
    d = 64
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.1, 2.0, size=d), rng.uniform(0.1, 2.0, size=d)
    a[:30], b[20:40] = 0.0, 0.0
    s1, s2 = u @ np.diag(a) @ u.T, u @ np.diag(b) @ u.T
    expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(np.zeros(d), s1, np.zeros(d), s2) == pytest.approx(expected, abs=1e-10)


def test_self_distance_zero() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 64))  # rank-deficient too
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8


def test_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="equal length"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    bad = np.eye(3)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(3), bad, np.zeros(3), np.eye(3))


def test_feature_stats_merge_equals_one_pass() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(loc=1.5, size=(301, 16)).astype(np.float32)
    one = FeatureStats().update(x)
    shards = [x[:17], x[17:200], x[200:]]  # uneven
    parts = [FeatureStats().update(s) for s in shards]
    merged = FeatureStats()
    for i in (2, 0, 1):  # shuffled order
        merged.merge(parts[i])
    assert merged.count == one.count == 301
    np.testing.assert_allclose(merged.mean(), one.mean(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.cov(), one.cov(), rtol=1e-12, atol=1e-12)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(one.cov(unbiased=True), np.cov(x64, rowvar=False), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(one.cov(), np.cov(x64, rowvar=False, bias=True), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(one.cov(unbiased=True) * 300, one.cov() * 301, rtol=1e-12)
    with pytest.raises(ValueError, match="dim"):
        merged.update(np.zeros((2, 5)))


def test_feature_stats_save_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    stats = FeatureStats(metadata={"detector": "i3d", "n": 50, "frames": 16})
    stats.update(rng.normal(size=(50, 8)))
    path = tmp_path / "stats" / "real.npz"
    stats.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["real.npz"]  # no temp file left behind
    loaded = FeatureStats.load(path)
    assert loaded.count == 50 and loaded.dim == 8 and loaded.metadata == stats.metadata
    np.testing.assert_array_equal(loaded.sum_sq, stats.sum_sq)
    assert frechet_from_stats(loaded, stats) == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(FileNotFoundError):
        FeatureStats.load(tmp_path / "missing.npz")
