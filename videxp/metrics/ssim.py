"""Structural similarity per frame: Wang et al. as JH / scikit-image (default) or FDM's legacy settings."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from videxp.metrics.base import FrameMetric

# Per variant: window shape and size, Gaussian sigma, covariance normalisation and default data range.
VARIANTS: dict[str, dict[str, Any]] = {
    # Wang et al. 2004 = JH cv2 code = skimage(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    "wang": {
        "window": "gaussian",
        "win_size": 11,
        "sigma": 1.5,
        "sample_covariance": False,
        "data_range": 1.0,
    },
    # FDM: skimage < 0.20 defaults on floats: 7x7 uniform, sample covariance, data_range 2
    "fdm": {"window": "uniform", "win_size": 7, "sigma": None, "sample_covariance": True, "data_range": 2.0},
}
BACKENDS = ("auto", "conv2d", "shift")
STRIP_ROWS = 32  # CPU: output rows filtered at once (cache blocking; the value does not change results)


def window_1d(window: str, win_size: int, sigma: float | None, dtype: torch.dtype) -> torch.Tensor:
    """Normalised 1-D window [win_size]; the 2-D window is its outer product (separable)."""
    if window == "uniform":
        return torch.full((win_size,), 1.0 / win_size, dtype=torch.float64).to(dtype)
    radius = (win_size - 1) // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)  # as cv2.getGaussianKernel / scipy.ndimage for this size
    return (g / g.sum()).to(dtype)


def filter_valid(z: torch.Tensor, weights: list[float], backend: str) -> torch.Tensor:
    """Separable 'valid' filtering of z [P, M, H, W] with the 1-D window `weights` (k values) along H and W.

    Returns [P, M, H-k+1, W-k+1].

    Output pixel (i, j) = Σ_ab kernel[a] kernel[b] z[i + a, j + b]: the window centred on input pixel
    (i + r, j + r), r = (k - 1) // 2, i.e. the filtered map with the r-pixel border cropped, exactly the
    region skimage and JH average over. `backend="conv2d"` runs two depthwise 1-D `conv2d` passes;
    `"shift"` sums k shifted slices per axis, which is several times faster than float64 `conv2d` on CPU.
    """
    k = len(weights)
    m = z.shape[1]
    if backend == "conv2d":
        kernel = torch.tensor(weights, dtype=z.dtype, device=z.device)  # [k]
        kv = kernel.view(1, 1, k, 1).expand(m, 1, k, 1).contiguous()  # [M, 1, k, 1]
        kh = kernel.view(1, 1, 1, k).expand(m, 1, 1, k).contiguous()  # [M, 1, 1, k]
        return F.conv2d(F.conv2d(z, kv, groups=m), kh, groups=m)
    rows = z.shape[-2] - k + 1
    out = z[..., 0:rows, :] * weights[0]  # [P, M, H', W]
    for a in range(1, k):
        out.add_(z[..., a : a + rows, :], alpha=weights[a])
    cols = z.shape[-1] - k + 1
    res = out[..., 0:cols] * weights[0]  # [P, M, H', W']
    for b in range(1, k):
        res.add_(out[..., b : b + cols], alpha=weights[b])
    return res


class SSIM(FrameMetric):
    """Mean SSIM per frame: SSIM map per channel over the valid region, mean per channel, mean over channels.

    ``variant="wang"`` (default): Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, population covariance,
    data_range 1: identical to JH (`cv2.filter2D` + `[5:-5, 5:-5]`) and to
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1, channel_axis=...)``. It is *not* torchmetrics ≥ 1.5, which also averages the padded border.
    ``variant="fdm"``: FDM's skimage < 0.20 float defaults: 7×7 uniform window, sample covariance
    (N/(N-1) with N = 49), data_range 2. `data_range=None` takes the variant's value; it is always recorded.

    Computed batched over all frames and channels in `dtype` (float64 by default; float32 is about twice as
    fast and agrees to ~5e-7). `backend`: ``"conv2d"``
    (depthwise separable `torch.nn.functional.conv2d`), ``"shift"`` (shifted-slice sums) or ``"auto"``
    (conv2d for float64 on CUDA, shift otherwise: float64 conv2d is slow on CPU and float32 cuDNN convs may
    use TF32). Both give the same values up to float rounding.
    """

    name = "ssim"
    higher_is_better = True
    slice_bytes = 3 * 2**19  # CPU slices of ~1.5 MB input: the filtered maps stay near the L2 cache size

    def __init__(
        self,
        *,
        variant: str = "wang",
        data_range: float | None = None,
        k1: float = 0.01,
        k2: float = 0.03,
        dtype: torch.dtype | str = torch.float64,
        backend: str = "auto",
        reduction: str = "mean",
        chunk_frames: int = 256,
        compile: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(reduction=reduction, chunk_frames=chunk_frames, compile=compile, name=name)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        dtype = {"float64": torch.float64, "float32": torch.float32}.get(dtype, dtype)  # config strings
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(
                f"dtype must be torch.float64 or torch.float32 ('float64' / 'float32'), got {dtype}"
            )
        spec = VARIANTS[variant]
        data_range = spec["data_range"] if data_range is None else float(data_range)
        if not data_range > 0:
            raise ValueError(f"data_range must be positive, got {data_range}")
        if k1 < 0 or k2 < 0:
            raise ValueError(f"k1 and k2 must be non-negative, got {k1}, {k2}")
        self.variant = variant
        self.window: str = spec["window"]
        self.win_size: int = spec["win_size"]
        self.sigma: float | None = spec["sigma"]
        self.sample_covariance: bool = spec["sample_covariance"]
        self.data_range = data_range
        self.k1 = float(k1)
        self.k2 = float(k2)
        self.dtype = dtype
        self.backend = backend
        # the separable window's values, rounded to the compute dtype
        self._weights: list[float] = window_1d(self.window, self.win_size, self.sigma, dtype).tolist()

    def settings(self) -> dict[str, Any]:
        """SSIM conventions plus the reduction."""
        return {
            "variant": self.variant,
            "window": self.window,
            "win_size": self.win_size,
            "sigma": self.sigma,
            "k1": self.k1,
            "k2": self.k2,
            "covariance": "sample (N/(N-1))" if self.sample_covariance else "population",
            "data_range": self.data_range,
            "region": f"valid (border of {(self.win_size - 1) // 2} px cropped from the SSIM map)",
            "channels": "SSIM per channel, averaged over channels",
            "dtype": str(self.dtype).removeprefix("torch."),
            **super().settings(),
        }

    def _map_sum(self, x: torch.Tensor, y: torch.Tensor, backend: str) -> torch.Tensor:
        """Sum [P] (float64) of the valid SSIM map of planes x, y [P, H, W]."""
        c1 = (self.k1 * self.data_range) ** 2
        c2 = (self.k2 * self.data_range) ** 2
        npix = self.win_size**2
        cov_norm = npix / (npix - 1) if self.sample_covariance else 1.0
        # Four maps instead of five: with s = x + y and d = x - y, E[s²] - E[d²] = 4 E[xy] and
        # E[s²] + E[d²] = 2 (E[x²] + E[y²]); SSIM needs only μx μy, μx² + μy², σxy and σx² + σy².
        s = x + y
        d = x - y
        z = torch.stack([s, d, s * s, d * d], dim=1)  # [P, 4, H, W]
        mu = filter_valid(z, self._weights, backend)  # [P, 4, H', W']
        ms, md, ess, edd = mu.unbind(dim=1)  # each [P, H', W']
        ms2, md2 = ms * ms, md * md
        two_uxuy = 0.5 * (ms2 - md2)  # 2 μx μy
        ux2_uy2 = 0.5 * (ms2 + md2)  # μx² + μy²
        two_vxy = cov_norm * (0.5 * (ess - edd) - two_uxuy)  # 2 σxy
        vx_vy = cov_norm * (0.5 * (ess + edd) - ux2_uy2)  # σx² + σy²
        s_map = ((two_uxuy + c1) * (two_vxy + c2)) / ((ux2_uy2 + c1) * (vx_vy + c2))  # [P, H', W']
        return s_map.sum(dim=(-2, -1), dtype=torch.float64)  # [P]

    def score_frames(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean SSIM [N] of pred vs target [N, C, H, W]."""
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(
                "expected two [N, C, H, W] tensors of one shape, got "
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)}"
            )
        n, c, h, w = pred.shape
        if h < self.win_size or w < self.win_size:
            raise ValueError(
                f"frames of {h}x{w} are smaller than the {self.win_size}x{self.win_size} SSIM window"
            )
        backend = self.backend
        if backend == "auto":
            backend = "conv2d" if pred.device.type == "cuda" and self.dtype == torch.float64 else "shift"
        x = pred.to(self.dtype).reshape(n * c, h, w)  # [P, H, W]
        y = target.to(self.dtype).reshape(n * c, h, w)  # [P, H, W]
        k = self.win_size
        rows, cols = h - k + 1, w - k + 1  # the valid region
        # On CPU, horizontal strips of STRIP_ROWS output rows (plus the window's k - 1 halo rows) keep the
        # filtered maps cache-sized; the strips' map sums add up to the whole map's sum.
        strip = STRIP_ROWS if pred.device.type == "cpu" else rows
        total = sum(
            self._map_sum(
                x[:, r : min(r + strip, rows) + k - 1], y[:, r : min(r + strip, rows) + k - 1], backend
            )
            for r in range(0, rows, strip)
        )  # [P] float64
        per_channel = (total / (rows * cols)).view(n, c)  # [N, C]
        return per_channel.mean(dim=1)  # [N]
