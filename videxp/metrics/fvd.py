"""Fréchet Video Distance (FVD): streaming I3D feature statistics under a named protocol preset."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from videxp.metrics.base import Metric, _as_index, check_frame_values, check_video_batch
from videxp.metrics.detector import INPUT_SIZE, Detector, load_detector
from videxp.metrics.frechet import FeatureStats, frechet_distance

# Every key a protocol preset must define, with the values each key accepts (None: any positive int).
PROTOCOL_KEYS: dict[str, tuple | None] = {
    "num_real": None,  # reference videos the protocol uses (at most; more are skipped)
    "num_fake": None,  # generated videos per FVD (at most; per sample index with per_sample)
    "num_frames": None,  # frames per clip, or "all" (the whole clip handed in)
    "stride": None,  # step between the chosen frames
    "quantize": ("round", "truncate", "none"),  # generated frames → uint8 (reals are uint8 already)
    "resize": ("direct", "short_side_crop"),  # direct bilinear 224×224 | short side → 224 + centre crop
    "covariance": ("population", "unbiased"),  # ÷N (StyleGAN-V) | ÷(N−1) (TF-GAN, np.cov)
    "include_context": (True, False),  # score the full video incl. the observed prefix
    "per_sample": (True, False),  # one FVD per sample index, reported as mean ± s.e.
}
TRUNCATE_EPS = 1e-3  # in 0–255 units: float32 round-off of uint8-derived values never truncates a level down


def default_cache_dir() -> Path:
    """`$VIDEXP_CACHE/fvd_stats` (default `~/.cache/videxp/fvd_stats`), as `paths.cache_dir` in the config."""
    root = os.environ.get("VIDEXP_CACHE") or os.path.join(os.environ.get("HOME", "."), ".cache", "videxp")
    return Path(root) / "fvd_stats"


def _plain(obj: Any) -> Any:
    """OmegaConf containers → plain dicts/lists (instantiate may hand us DictConfig)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


def resolve_protocol(
    protocol: str, protocols: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Preset `protocols[protocol]` with every non-null entry of `overrides` on top, validated."""
    protocols = _plain(protocols) or {}
    if protocol not in protocols:
        raise ValueError(f"unknown FVD protocol {protocol!r}; presets: {sorted(protocols)}")
    resolved = dict(protocols[protocol])
    missing = sorted(set(PROTOCOL_KEYS) - set(resolved))
    extra = sorted(set(resolved) - set(PROTOCOL_KEYS))
    if missing or extra:
        raise ValueError(f"FVD protocol {protocol!r}: missing keys {missing}, unknown keys {extra}")
    for key, value in (overrides or {}).items():
        if key not in PROTOCOL_KEYS:
            raise ValueError(f"unknown FVD protocol key {key!r}; keys: {sorted(PROTOCOL_KEYS)}")
        if value is not None:
            resolved[key] = value
    for key, allowed in PROTOCOL_KEYS.items():
        value = resolved[key]
        if allowed is not None:
            if value not in allowed:
                raise ValueError(f"FVD {key}={value!r} (protocol {protocol!r}); expected one of {allowed}")
        elif key == "num_frames" and value == "all":
            continue
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"FVD {key}={value!r} (protocol {protocol!r}); expected a positive int")
    return resolved


def quantize(x: torch.Tensor, mode: str) -> torch.Tensor:
    """[0, 1] floats → values on the 0–255 scale: `round` (StyleGAN-V: uint8(x·255 + 0.5)), `truncate`
    (VideoGPT / FDM: uint8(x·255), with `TRUNCATE_EPS` slack for float round-off) or `none` (x·255)."""
    y = x * 255.0
    if mode == "round":
        return torch.floor((y + 0.5).clamp(0.0, 255.0))
    if mode == "truncate":
        return torch.floor((y + TRUNCATE_EPS).clamp(0.0, 255.0))
    if mode == "none":
        return y
    raise ValueError(f"quantize must be round | truncate | none, got {mode!r}")


def resize_frames(x: torch.Tensor, mode: str, size: int = INPUT_SIZE) -> torch.Tensor:
    """Resize frames [N, C, H, W] to [N, C, size, size], bilinear, `align_corners=False`, no antialias.

    `direct`: both sides to `size` (TF / TATS / StyleGAN-V); `short_side_crop`: short side to `size`, long
    side `ceil` (VideoGPT), then the centre `size`×`size` crop.
    """
    h, w = x.shape[-2:]
    if mode == "direct":
        if (h, w) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if mode != "short_side_crop":
        raise ValueError(f"resize must be direct | short_side_crop, got {mode!r}")
    scale = size / min(h, w)
    th, tw = (size, math.ceil(w * scale)) if h <= w else (math.ceil(h * scale), size)
    if (th, tw) != (h, w):
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=False)
    top, left = (th - size) // 2, (tw - size) // 2
    return x[..., top : top + size, left : left + size]


class FVD(Metric):
    """Fréchet Video Distance between generated (`pred`) and reference (`target`) videos.

    Settings come from a protocol preset (`protocols[protocol]`, see `conf/metric/fvd.yaml`) with single
    keys overridden by the non-null keyword arguments of the same name. Per clip: choose frames (first
    `num_frames` at `stride`, or all), quantise to the 0–255 grid, resize each frame to 224×224, map to
    [−1, 1], run the detector (`[B, 3, T, 224, 224]` → `[B, D]`). Features stream into float64
    `FeatureStats` (never the videos); reference statistics are taken once per video index and cached on
    disk, keyed by detector + protocol + the reference identity that the caller sets.
    """

    name = "fvd"
    higher_is_better: ClassVar[bool] = False

    def __init__(
        self,
        *,
        protocol: str = "styleganv",
        protocols: Mapping[str, Mapping[str, Any]] | None = None,
        detector: str | os.PathLike | Detector = "i3d_pretrained_400",
        detector_kind: str = "auto",
        device: str | None = None,
        batch_size: int = 8,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        name: str | None = None,
        **overrides: Any,
    ) -> None:
        if protocols is None:
            protocols = default_protocols()
        self.protocol_name = protocol
        self.protocol = resolve_protocol(protocol, protocols, overrides)
        self._detector_spec = detector
        self._detector: Detector | None = detector if isinstance(detector, Detector) else None
        self.detector_kind = detector_kind
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = int(batch_size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.use_cache = bool(use_cache)
        if name is not None:
            self.name = name
        # optional names for error messages (e.g. file paths): {"reference"|"generated": {index: name}}
        self.video_labels: dict[str, dict[int, str]] = {"reference": {}, "generated": {}}
        self._identity: dict[str, Any] | None = None
        self.reset()

    # ----------------------------------------------------------------- configuration

    @property
    def wants_full_video(self) -> bool:
        """True when the protocol scores the whole clip incl. the observed prefix (evaluate honours it)."""
        return bool(self.protocol["include_context"])

    @property
    def detector(self) -> Detector:
        """The feature detector, loaded on first use (a weights name via `videxp.weights`, or a file)."""
        if self._detector is None:
            spec = str(self._detector_spec)
            path = Path(spec).expanduser()
            if not path.is_file():
                if os.sep in spec or spec.endswith((".pt", ".pth", ".pkl")):
                    raise FileNotFoundError(f"FVD detector file not found: {spec}")
                from videxp.weights import get_path  # a registered weights name

                path = get_path(spec)
            self._detector = load_detector(
                path, kind=self.detector_kind, device=self.device, batch_size=self.batch_size
            )
        return self._detector

    def settings(self) -> dict[str, Any]:
        """Protocol name, every resolved protocol setting, and the detector identity (if loaded)."""
        det = self._detector
        return {
            "protocol": self.protocol_name,
            **self.protocol,
            "real_quantize": "round (reference frames are uint8 already)",
            "resolution": [INPUT_SIZE, INPUT_SIZE],
            "interpolation": "bilinear, align_corners=False, no antialias",
            "value_range": [-1.0, 1.0],
            "features": "detector output (I3D: 400-d logits averaged over time)",
            "detector": det.name if det is not None else str(self._detector_spec),
            "detector_sha256": det.file_sha256 if det is not None else None,
            "feature_dim": det.feature_dim if det is not None else None,
            "fake_statistics": "per sample index" if self.protocol["per_sample"] else "all samples pooled",
        }

    def set_reference_identity(self, identity: Mapping[str, Any]) -> None:
        """Name the reference set (dataset config, clip ids / files) so its statistics can be cached."""
        self._identity = json.loads(json.dumps(_plain(dict(identity)), sort_keys=True, default=str))
        self._cache_checked = False

    def cache_key(self) -> str | None:
        """sha256 of detector identity + resolved protocol + reference identity; None without identity."""
        if self._identity is None:
            return None
        det = self.detector
        doc = {
            "detector": det.file_sha256 or det.name,
            "feature_dim": det.feature_dim,
            "protocol": self.protocol,
            "reference": self._identity,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def cache_path(self) -> Path | None:
        """Where the reference statistics live on disk (None when caching is off or no identity)."""
        key = self.cache_key() if self.use_cache else None
        return None if key is None else self.cache_dir / f"real_{key[:32]}.npz"

    def _check_cache(self) -> None:
        """On the first update after an identity is set, load the cached reference statistics if any."""
        if self._cache_checked:
            return
        self._cache_checked = True
        path = self.cache_path()
        if path is not None and path.is_file():
            self._real = FeatureStats.load(path)
            self._real_from_cache = True

    # ----------------------------------------------------------------- streaming

    def reset(self) -> None:
        """Forget every update (the reference identity is kept)."""
        self._real = FeatureStats()
        self._fake: dict[int, FeatureStats] = {}
        self._real_seen: set[int] = set()
        self._fake_seen: set[tuple[int, int]] = set()
        self._real_skipped = 0
        self._fake_skipped = 0
        self._real_from_cache = False
        self._cache_checked = False
        self._scored_frames: dict[str, set[tuple[int, ...]]] = {"real": set(), "fake": set()}

    def _label(self, video: int, side: str) -> str:
        return self.video_labels.get(side, {}).get(int(video), f"video {int(video)}")

    def _choose_frames(self, t: int, videos: np.ndarray, side: str) -> list[int]:
        """Positions (into the T frames handed in) of the clip to score; ValueError if T is too short."""
        n, stride = self.protocol["num_frames"], self.protocol["stride"]
        positions = list(range(t))[::stride] if n == "all" else list(range(0, (n - 1) * stride + 1, stride))
        need = max((positions[-1] + 1) if positions else 1, 1)
        names = ", ".join(self._label(v, side) for v in videos[:3]) + (" ..." if len(videos) > 3 else "")
        if t < need:
            raise ValueError(
                f"FVD ({self.protocol_name}): {side} clip of {names} has T={t} frames; the protocol needs "
                f"{n} frames at stride {stride} (span {need})"
            )
        if len(positions) < self.detector.min_frames:
            raise ValueError(
                f"FVD: {side} clip of {names} gives {len(positions)} frames; detector {self.detector.name} "
                f"needs at least {self.detector.min_frames}"
            )
        return positions

    @torch.no_grad()
    def features(self, videos: torch.Tensor, quantize_mode: str) -> torch.Tensor:
        """Detector features float32 [B, D] of clips [B, T, C, H, W] in [0, 1] (frames already chosen)."""
        b, t, c = videos.shape[:3]
        out = []
        for chunk in videos.split(self.batch_size):
            n = chunk.shape[0]
            x = quantize(chunk.float(), quantize_mode)  # [n, T, C, H, W] on the 0–255 grid
            if c == 1:
                x = x.expand(-1, -1, 3, -1, -1)
            elif c != 3:
                raise ValueError(f"FVD expects 1 or 3 channels, got {c}")
            x = resize_frames(x.reshape(n * t, 3, *x.shape[-2:]), self.protocol["resize"])  # [n*T, 3, S, S]
            x = x / 127.5 - 1.0  # [-1, 1]
            x = x.reshape(n, t, 3, INPUT_SIZE, INPUT_SIZE).permute(0, 2, 1, 3, 4)  # [n, 3, T, S, S]
            out.append(self.detector(x.contiguous()))  # [n, D]
        return torch.cat(out)

    def update_real(
        self,
        target: torch.Tensor,
        *,
        video_index: Sequence[int] | torch.Tensor | np.ndarray,
        frame_index: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add reference clips [B, T, C, H, W] in [0, 1]; each video index is counted once."""
        self._check_cache()
        if self._real_from_cache:
            return
        b, t = target.shape[:2]
        videos = _as_index(video_index, "video_index", b)
        frames = np.arange(t) if frame_index is None else _as_index(frame_index, "frame_index", t)
        keep = []
        for i, v in enumerate(videos.tolist()):
            if v in self._real_seen:
                continue
            if len(self._real_seen) >= self.protocol["num_real"]:
                self._real_skipped += 1
                continue
            self._real_seen.add(v)
            keep.append(i)
        if not keep:
            return
        positions = self._choose_frames(t, videos[keep], "reference")
        clip = target[keep][:, positions]  # [b, F, C, H, W]
        check_frame_values(clip, "target")
        self._real.update(self.features(clip, "round").double().numpy())
        self._scored_frames["real"].add(tuple(frames[positions].tolist()))

    def update_fake(
        self,
        pred: torch.Tensor,
        *,
        video_index: Sequence[int] | torch.Tensor | np.ndarray,
        sample_index: Sequence[int] | torch.Tensor | np.ndarray,
        frame_index: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add generated clips [B, T, C, H, W] in [0, 1] (one row per (video, sample))."""
        b, t = pred.shape[:2]
        videos = _as_index(video_index, "video_index", b)
        samples = _as_index(sample_index, "sample_index", b)
        frames = np.arange(t) if frame_index is None else _as_index(frame_index, "frame_index", t)
        keep: list[int] = []
        for i, (v, s) in enumerate(zip(videos.tolist(), samples.tolist())):
            key = s if self.protocol["per_sample"] else 0
            if (v, s) in self._fake_seen:
                raise ValueError(f"FVD: (video={v}, sample={s}) was added more than once")
            count = self._fake[key].count if key in self._fake else 0
            count += sum(1 for j in keep if (samples[j] if self.protocol["per_sample"] else 0) == key)
            if count >= self.protocol["num_fake"]:
                self._fake_skipped += 1
                continue
            self._fake_seen.add((v, s))
            keep.append(i)
        if not keep:
            return
        positions = self._choose_frames(t, videos[keep], "generated")
        clip = pred[keep][:, positions]  # [b, F, C, H, W]
        check_frame_values(clip, "pred")
        feats = self.features(clip, self.protocol["quantize"]).double().numpy()  # [b, D]
        for row, i in enumerate(keep):
            key = int(samples[i]) if self.protocol["per_sample"] else 0
            self._fake.setdefault(key, FeatureStats()).update(feats[row : row + 1])
        self._scored_frames["fake"].add(tuple(frames[positions].tolist()))

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        *,
        video_index: Sequence[int] | torch.Tensor | np.ndarray,
        sample_index: Sequence[int] | torch.Tensor | np.ndarray,
        frame_index: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Fakes from `pred`; reals from `target`, once per video index (samples share their reference)."""
        video, sample, frame = check_video_batch(
            pred, target, video_index, sample_index, frame_index, check_values=False
        )
        self.update_real(target, video_index=video, frame_index=frame)
        self.update_fake(pred, video_index=video, sample_index=sample, frame_index=frame)

    # ----------------------------------------------------------------- result

    @property
    def real_stats(self) -> FeatureStats:
        """Reference feature statistics so far (loaded from the cache on a hit)."""
        return self._real

    @property
    def fake_stats(self) -> dict[int, FeatureStats]:
        """Generated feature statistics: {sample index: stats} (per_sample) or {0: all samples}."""
        return self._fake

    def compute(self) -> dict[str, Any]:
        """FVD `value` (mean ± s.e. over sample indices with per_sample) with every setting and count."""
        if self._real.count == 0:
            raise RuntimeError("FVD: no reference clips were added")
        if not self._fake:
            raise RuntimeError("FVD: no generated clips were added")
        unbiased = self.protocol["covariance"] == "unbiased"
        need = 2 if unbiased else 1
        for label, stats in [
            ("reference", self._real),
            *((f"generated[{k}]", s) for k, s in self._fake.items()),
        ]:
            if stats.count < need:
                raise ValueError(
                    f"FVD: {label} has {stats.count} clip(s); {self.protocol['covariance']} "
                    f"covariance needs at least {need}"
                )
        mu_r, sigma_r = self._real.mean(), self._real.cov(unbiased=unbiased)
        per_key = {
            k: frechet_distance(s.mean(), s.cov(unbiased=unbiased), mu_r, sigma_r)
            for k, s in sorted(self._fake.items())
        }
        values = np.array(list(per_key.values()), dtype=np.float64)
        det = self.detector
        n_fake = [s.count for s in self._fake.values()]
        notes: list[str] = []
        for label, n, target_n in [
            ("reference", self._real.count, self.protocol["num_real"]),
            ("generated", min(n_fake), self.protocol["num_fake"]),
        ]:
            if n < det.feature_dim:
                notes.append(
                    f"{label} N={n} < feature dim {det.feature_dim}: covariance is rank-deficient and FVD is "
                    "strongly biased upward; compare only numbers with the same N"
                )
            if n < target_n:
                notes.append(
                    f"{label} N={n} < the {self.protocol_name} protocol's {target_n}: not comparable with "
                    "published numbers (FD is biased ~1/N)"
                )
        for note in notes:
            warnings.warn(f"FVD: {note}", stacklevel=2)
        result: dict[str, Any] = {
            "value": float(values.mean()),
            "higher_is_better": False,
            "protocol": self.protocol_name,
            "detector": det.name,
            "detector_sha256": det.file_sha256,
            "feature_dim": det.feature_dim,
            "num_real": int(self._real.count),
            "num_fake": int(sum(n_fake)),
            "num_videos": int(self._real.count),
            "real_features_shape": [int(self._real.count), int(det.feature_dim)],
            "generated_features_shape": [int(sum(n_fake)), int(det.feature_dim)],
            "num_real_skipped": self._real_skipped,
            "num_fake_skipped": self._fake_skipped,
            "real_from_cache": self._real_from_cache,
            "scored_frames": {
                side: [list(f) for f in sorted(fs)] for side, fs in self._scored_frames.items()
            },
            "warnings": notes,
            "settings": self.settings(),
        }
        if self.protocol["per_sample"]:
            n = values.size
            std = float(values.std(ddof=1)) if n > 1 else math.nan
            result.update(
                per_sample={str(k): v for k, v in per_key.items()},
                num_fake_per_sample={str(k): int(s.count) for k, s in sorted(self._fake.items())},
                std=std,
                sem=std / math.sqrt(n) if n > 1 else math.nan,
                aggregation="mean ± s.e. over sample indices (one FVD per sample index)",
            )
        self._save_cache()
        return result

    def _save_cache(self) -> None:
        """Store freshly computed reference statistics under `cache_path()` (no-op on a hit)."""
        path = self.cache_path()
        if path is None or self._real_from_cache or self._real.count == 0 or path.is_file():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._real.metadata.update(
            detector=self.detector.name,
            detector_sha256=self.detector.file_sha256,
            protocol=self.protocol_name,
            settings=self.protocol,
            reference=self._identity,
        )
        self._real.save(path)


def default_protocols() -> dict[str, dict[str, Any]]:
    """The presets of `conf/metric/fvd.yaml` (the config is the source; read from the packaged file)."""
    import yaml

    conf = Path(__file__).resolve().parents[1] / "conf" / "metric" / "fvd.yaml"
    return dict(yaml.safe_load(conf.read_text())["protocols"])
