"""Structural similarity per frame: Wang et al. as JH / scikit-image (default) or FDM's legacy settings."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from videxp.metrics.base import FrameMetric
from videxp.metrics.cpu_chunks import chunks, map_chunks, merge_extremes

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
BACKENDS = ("auto", "cv2", "conv2d", "shift")
STRIP_ROWS = 32  # CPU `shift`: output rows filtered at once (cache blocking; results do not change)
CV2_CHUNK_ELEMENTS = 3 * 2**16  # CPU `cv2`: planes per task hold about this many pixels (~0.75 MB float32)
CV2_ROW_PIXELS = 512  # CPU `cv2`: narrower planes are filtered side by side in rows of up to this many pixels

_SCRATCH = threading.local()  # per thread: the cv2 backend's two large work buffers, reused between chunks


def _scratch(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Two uninitialised arrays of `shape` for this thread, views of buffers kept between calls.

    Allocating megabytes per chunk costs more than the filtering (glibc maps large blocks fresh, and
    every page faults in), so each thread keeps two buffers and grows them only when a chunk needs more.
    """
    size = int(np.prod(shape))
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None or buffers[0].size < size or buffers[0].dtype != dtype:
        buffers = (np.empty(size, dtype), np.empty(size, dtype))
        _SCRATCH.buffers = buffers
    return buffers[0][:size].reshape(shape), buffers[1][:size].reshape(shape)


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


def variance_offset(c2: float, cov_norm: float) -> float:
    """What `ssim_map` expects added to the window means of s'²: 2 c2 before the covariance scaling."""
    return 2.0 * c2 / cov_norm


def ssim_map(xp, fs, fd, ess, edd, scratch, mean_s, mean_d, c1: float, cov_norm: float):
    """The SSIM map from the window means of centred planes, in place, for numpy (`xp=np`) or torch.

    With s = x + y and d = x - y, centred per plane (s' = s - mean_s, d' = d - mean_d): `fs`, `fd` are the
    window means of s', d' and `edd` that of d'²; `ess` is that of s'² plus `variance_offset(c2, cov_norm)`
    (the cv2 backend's filter adds it for free; all maps [P, H', W'], overwritten). Since
    E[s²] - E[d²] = 4 E[xy] and E[s²] + E[d²] = 2 (E[x²] + E[y²]), these four maps give μx μy, μx² + μy²,
    σxy and σx² + σy²; the variances do not change with the centring, the means get mean_s, mean_d back,
    and the factors of 2 cancel in each ratio. The offset carries c2 into both variance terms, and c1 is
    added once to (μx + μy)², which appears in both mean terms. `scratch`: two more arrays of that
    shape; the map is returned in scratch[0].
    """
    t0, t1 = scratch
    xp.multiply(fs, fs, out=t0)
    xp.multiply(fd, fd, out=t1)
    ess -= t0  # Var(s) + offset = σx² + σy² + 2 σxy + offset per window
    edd -= t1  # Var(d) = σx² + σy² - 2 σxy
    xp.subtract(ess, edd, out=t1)  # 4 σxy + offset
    ess += edd  # 2 (σx² + σy²) + offset
    if cov_norm != 1.0:  # sample covariance
        t1 *= cov_norm  # 2 (2 σxy + c2)
        ess *= cov_norm  # 2 (σx² + σy² + c2)
    fs += mean_s  # μx + μy
    fs *= fs
    fs += 2 * c1
    fd += mean_d  # μx - μy
    fd *= fd
    xp.subtract(fs, fd, out=t0)  # 2 (2 μx μy + c1)
    fs += fd  # 2 (μx² + μy² + c1)
    t0 *= t1
    fs *= ess
    t0 /= fs
    return t0


class SSIM(FrameMetric):
    """Mean SSIM per frame: SSIM map per channel over the valid region, mean per channel, mean over channels.

    ``variant="wang"`` (default): Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, population covariance,
    data_range 1: identical to JH (`cv2.filter2D` + `[5:-5, 5:-5]`) and to
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1, channel_axis=...)``. It is *not* torchmetrics ≥ 1.5, which also averages the padded border.
    ``variant="fdm"``: FDM's skimage < 0.20 float defaults: 7×7 uniform window, sample covariance
    (N/(N-1) with N = 49), data_range 2. `data_range=None` takes the variant's value; it is always recorded.

    Computed batched over all frames and channels in `dtype`: float32 by default, float64 for exact
    agreement. Each plane is centred on its mean before the window sums, so float32's cancellation in
    E[x²] - E[x]² scales with the plane's contrast, not its brightness: natural, noisy, smooth, flat and
    low-contrast frames score within 1e-6 of float64, but flat windows at full contrast from the plane's
    mean next to a hard edge (black/white halves against a blurred copy) can be off by a few 1e-6 (up
    to 3.4e-6 in the tests).
    `backend`: ``"cv2"`` (CPU: `cv2.sepFilter2D` over planes laid side by side and stacked into one image,
    numpy for the rest, plane chunks spread over `torch.get_num_threads()` threads, all frames of an update
    in one call), ``"conv2d"`` (depthwise separable
    `torch.nn.functional.conv2d`), ``"shift"`` (shifted-slice sums; what `compile=True` compiles) or
    ``"auto"`` (cv2 on CPU without compile, shift with it; on CUDA conv2d for float64, else shift: float32
    cuDNN convs may use TF32). All give the same values up to float rounding.
    """

    name = "ssim"
    higher_is_better = True
    takes_uint8 = True  # uint8 pairs: converted inside the kernel (cv2: by the centring subtraction)
    # CPU slices of ~64 MB (float64-sized) input: many cv2 chunks per slice for the threads to share
    # (the shift backend blocks its filtering in strips of STRIP_ROWS rows within a slice)
    slice_bytes = 64 * 2**20

    def __init__(
        self,
        *,
        variant: str = "wang",
        data_range: float | None = None,
        k1: float = 0.01,
        k2: float = 0.03,
        dtype: torch.dtype | str = torch.float32,
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
        if backend == "cv2" and compile:
            raise ValueError("the cv2 SSIM backend runs OpenCV and numpy, which torch.compile cannot compile")
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

    def _constants(self, scale: float) -> tuple[float, float, float]:
        """(c1, the variance offset of `ssim_map`, covariance normalisation) of these settings for frames
        holding `scale` · the values."""
        npix = self.win_size**2
        cov_norm = npix / (npix - 1) if self.sample_covariance else 1.0
        value_range = self.data_range * scale
        c2 = (self.k2 * value_range) ** 2
        return (self.k1 * value_range) ** 2, variance_offset(c2, cov_norm), cov_norm

    def _map_sum(self, x, y, mean_s, mean_d, backend: str, scale: float) -> torch.Tensor:
        """Sum [P] (float64) of the valid SSIM map of centred planes x, y [P, H, W] (torch filtering)."""
        s = x + y
        d = x - y
        c1, offset, cov_norm = self._constants(scale)
        # the window weights sum to 1, so the offset added to s² comes through the filter unchanged
        z = torch.stack([s, d, s * s + offset, d * d], dim=1)  # [P, 4, H, W]
        filtered = filter_valid(z, self._weights, backend)  # [P, 4, H', W']
        # four separate maps: torch.compile fuses ssim_map's in-place passes poorly on views of one tensor
        fs, fd, ess, edd = (m.contiguous() for m in filtered.unbind(dim=1))  # each [P, H', W']
        scratch = [torch.empty_like(fs) for _ in range(2)]
        s_map = ssim_map(torch, fs, fd, ess, edd, scratch, mean_s, mean_d, c1, cov_norm)
        return s_map.sum(dim=(-2, -1), dtype=torch.float64)  # [P]

    def _map_sum_cv2(self, x: np.ndarray, y: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Sum [P] (float64) of the valid SSIM map of planes x, y [P, H, W] (numpy), filtered by OpenCV, and
        the planes' extremes [4] (min and max of x, of y; NaN if any value is; 0 and 1 for uint8).

        Each map is laid out as G groups of k planes side by side ([G, H, k, W], rows of k·W pixels, about
        `CV2_ROW_PIXELS`: OpenCV filters wide rows faster than narrow ones), and the four maps are stacked
        into one tall image [4·G·H, k·W] for two `cv2.sepFilter2D` calls. A valid output pixel reads only
        pixels of its own plane, so the layout changes nothing in the cropped region. numpy and OpenCV
        release the GIL, so chunks of planes run in parallel threads. Planes of another dtype than the
        compute dtype (uint8 at `scale` 255, float64) are converted by the first sum and difference.
        """
        p, h, w = x.shape
        r = (self.win_size - 1) // 2
        dtype = np.float32 if self.dtype == torch.float32 else np.float64
        extremes = np.array([0.0, 1.0, 0.0, 1.0])  # uint8: valid by type
        if scale == 1.0:  # np.min / np.max propagate NaN
            extremes = np.array([x.min(), x.max(), y.min(), y.max()], dtype=np.float64)
        k = max(d for d in range(1, max(1, CV2_ROW_PIXELS // w) + 1) if p % d == 0)  # planes side by side
        g = p // k
        xs = x.reshape(g, k, h, w).transpose(0, 2, 1, 3)  # [G, H, k, W] views
        ys = y.reshape(g, k, h, w).transpose(0, 2, 1, 3)
        z, filtered = _scratch((4, g, h, k, w), dtype)  # z: s'², s', d', d'² of the centred planes
        s, d = z[1], z[2]
        np.add(xs, ys, out=s, dtype=dtype)  # in the compute dtype (uint8 sums would wrap)
        np.subtract(xs, ys, out=d, dtype=dtype)
        # centring constants: any value near the plane's mean does (the same value is added back). numpy
        # sums whole rows (axis 1) much faster than along them, so rows go first in every reduction here
        mean_s = (s.sum(axis=1).sum(axis=-1) / (h * w)).reshape(g, 1, k, 1)  # [G, 1, k, 1]
        mean_d = (d.sum(axis=1).sum(axis=-1) / (h * w)).reshape(g, 1, k, 1)
        s -= mean_s
        d -= mean_d
        np.multiply(s, s, out=z[0])
        np.multiply(d, d, out=z[3])
        import cv2  # deferred: only the CPU backend needs OpenCV (GPU runs go without it)

        kernel = np.asarray(self._weights, dtype=dtype)
        c1, offset, cov_norm = self._constants(scale)
        for first, last, delta in ((0, 1, offset), (1, 4, 0.0)):  # the filter adds the offset to s'²'s map
            rows = (last - first) * g * h
            src, dst = z[first:last].reshape(rows, k * w), filtered[first:last].reshape(rows, k * w)
            cv2.sepFilter2D(src, -1, kernel, kernel, dst=dst, delta=delta)
        # the valid rows of each filtered group (whole rows: contiguous blocks, no copy), with z's memory as
        # the temporaries; the border columns of each plane are computed too and left out of the sum
        ess, fs, fd, edd = filtered[:, :, r : h - r]  # each [G, H', k, W]
        scratch = z[:2, :, r : h - r]
        s_map = ssim_map(np, fs, fd, ess, edd, scratch, mean_s, mean_d, c1, cov_norm)
        column_sums = s_map.sum(axis=1, dtype=np.float64)  # [G, k, W]
        return column_sums[..., r : w - r].sum(axis=-1).reshape(p), extremes  # [P], [4]

    def _score_cv2(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(extremes [4] float64, mean SSIM [N]) of CPU frames [N, C, H, W] with the cv2 backend: chunks of
        planes spread over `torch.get_num_threads()` threads, each also finding its planes' extremes (so no
        torch reduction runs before the threads; see `FrameMetric.extremes_and_scores`)."""
        if pred.device.type != "cpu":
            raise ValueError(f"the cv2 SSIM backend runs on CPU tensors, got {pred.device}")
        n, c, h, w = pred.shape
        # uint8 frames are scored on their own 0..255 scale with the constants scaled to match (SSIM
        # does not change when values and data range scale together)
        scale = 255.0 if pred.dtype == torch.uint8 else 1.0
        if pred.dtype not in (torch.uint8, torch.float32, torch.float64):  # numpy has no bfloat16
            pred, target = pred.to(self.dtype), target.to(self.dtype)
        xs = pred.reshape(n * c, h, w).contiguous().numpy()  # [P, H, W]
        ys = target.reshape(n * c, h, w).contiguous().numpy()
        parts = chunks(n * c, h * w, CV2_CHUNK_ELEMENTS)
        results = map_chunks(lambda part: self._map_sum_cv2(xs[part], ys[part], scale), parts)
        total = np.concatenate([sums for sums, _ in results])  # [P]
        extremes = merge_extremes([e for _, e in results])  # [4]
        per_channel = torch.from_numpy(total / ((h - self.win_size + 1) * (w - self.win_size + 1))).view(n, c)
        return torch.from_numpy(extremes), per_channel.mean(dim=1)  # [4], [N]

    def frames_per_call(self, frames: torch.Tensor) -> int:
        """The cv2 backend scores all frames of an update in one call: its threads stream through
        cache-sized chunks of planes (converting each chunk), so slices would only add a wait for the
        slowest thread per slice. Other backends slice as `FrameMetric`."""
        if self._backend_for(frames.device) == "cv2":
            return len(frames)
        return super().frames_per_call(frames)

    def _backend_for(self, device: torch.device) -> str:
        """The filtering backend `auto` resolves to on `device` (see the class docstring)."""
        if self.backend != "auto":
            return self.backend
        if device.type == "cpu":
            return "shift" if self.compile else "cv2"
        return "conv2d" if self.dtype == torch.float64 else "shift"

    def _check_frames(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """ValueError unless pred and target are [N, C, H, W] of one shape, at least the window's size."""
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(
                "expected two [N, C, H, W] tensors of one shape, got "
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)}"
            )
        h, w = pred.shape[-2:]
        if h < self.win_size or w < self.win_size:
            raise ValueError(
                f"frames of {h}x{w} are smaller than the {self.win_size}x{self.win_size} SSIM window"
            )

    def extremes_and_scores(
        self, pred: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cv2 backend finds the extremes in its own threads; other backends as `FrameMetric`."""
        if self._backend_for(pred.device) != "cv2":
            return super().extremes_and_scores(pred, target)
        self._check_frames(pred, target)
        return self._score_cv2(pred, target)

    def score_frames(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean SSIM [N] of pred vs target [N, C, H, W] (both float, or both uint8 read as x / 255)."""
        self._check_frames(pred, target)
        backend = self._backend_for(pred.device)
        if backend == "cv2":
            return self._score_cv2(pred, target)[1]
        n, c, h, w = pred.shape
        scale = 255.0 if pred.dtype == torch.uint8 else 1.0  # uint8: constants scaled (as `_score_cv2`)
        k = self.win_size
        rows, cols = h - k + 1, w - k + 1  # the valid region
        x = pred.to(self.dtype).reshape(n * c, h, w)  # [P, H, W]
        y = target.to(self.dtype).reshape(n * c, h, w)  # [P, H, W]
        mean_x = x.mean(dim=(1, 2), keepdim=True)  # [P, 1, 1] centring constants
        mean_y = y.mean(dim=(1, 2), keepdim=True)
        x, y = x - mean_x, y - mean_y  # centred planes (see the class docstring)
        mean_s, mean_d = mean_x + mean_y, mean_x - mean_y
        # On CPU, horizontal strips of STRIP_ROWS output rows (plus the window's k - 1 halo rows) keep
        # the filtered maps cache-sized; the strips' map sums add up to the whole map's sum.
        strip = STRIP_ROWS if pred.device.type == "cpu" else rows
        total = sum(
            self._map_sum(
                x[:, r : min(r + strip, rows) + k - 1],
                y[:, r : min(r + strip, rows) + k - 1],
                mean_s,
                mean_d,
                backend,
                scale,
            )
            for r in range(0, rows, strip)
        )  # [P] float64
        per_channel = (total / (rows * cols)).view(n, c)  # [N, C]
        return per_channel.mean(dim=1)  # [N]
