"""Fréchet Video Distance (FVD): streaming I3D feature statistics under a named protocol preset."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from videxp.metrics.base import DistributionMetric, _as_index, check_frame_values
from videxp.metrics.detector import INPUT_SIZE, KIND_OF_WEIGHT, Detector, load_detector
from videxp.metrics.frechet import FeatureStats, frechet_distance
from videxp.metrics.fvd_protocol import (  # noqa: F401 - re-exported: the FVD conventions live with FVD
    PROTOCOL_KEYS,
    TRUNCATE_EPS,
    _plain,
    default_protocols,
    quantize,
    resize_frames,
    resolve_protocol,
    tf_legacy_matrix,
)
from videxp.metrics.i3d import FEATURE_DIM_1024
from videxp.weights.registry import get_path, identify_file


def default_cache_dir() -> Path:
    """`$VIDEXP_CACHE/fvd_stats` (default `~/.cache/videxp/fvd_stats`), as `paths.cache_dir` in the config."""
    root = os.environ.get("VIDEXP_CACHE") or os.path.join(os.environ.get("HOME", "."), ".cache", "videxp")
    return Path(root) / "fvd_stats"


class FVD(DistributionMetric):
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
        detector: str | os.PathLike | Detector | None = None,
        detector_kind: str = "auto",
        device: str | None = None,
        batch_size: int = 8,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        name: str | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if protocols is None:
            protocols = default_protocols()
        self.protocol_name = protocol
        if detector is not None and not isinstance(detector, Detector):
            overrides = {**overrides, "detector": str(detector)}  # a name or file replaces the protocol's
        self.protocol = resolve_protocol(protocol, protocols, overrides)
        if isinstance(detector, Detector):
            self.protocol["detector"] = detector.name
        self._detector_spec = detector if detector is not None else self.protocol["detector"]
        self._detector: Detector | None = detector if isinstance(detector, Detector) else None
        self.detector_kind = detector_kind
        self.detector_weight: str | None = None  # the registered weight the detector file is, when known
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = int(batch_size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.use_cache = bool(use_cache)
        if name is not None:
            self.name = name
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
                path = get_path(spec)  # a registered weights name, verified
                self.detector_weight = spec
            else:  # a user file: named when it is a registered weight, refused when named like one but not it
                known = identify_file(path)
                self.detector_weight = None if known is None else known.name
            kind = self.detector_kind
            if kind == "auto":  # a registered weight loads the way its source uses it
                kind = KIND_OF_WEIGHT.get(self.detector_weight or "", "auto")
            self._detector = load_detector(path, kind=kind, device=self.device, batch_size=self.batch_size)
        return self._detector

    def prepare(self) -> None:
        """Load the detector now: missing weights fail before any video is read."""
        self.detector  # noqa: B018 - the property loads it

    def settings(self) -> dict[str, Any]:
        """Protocol name, every resolved protocol setting, and the detector identity (if loaded)."""
        det = self._detector
        return {
            "protocol": self.protocol_name,
            **self.protocol,
            "real_quantize": "round (reference frames are uint8 already)",
            "resolution": [INPUT_SIZE, INPUT_SIZE],
            "interpolation": "bilinear, no antialias, "
            + (
                "TF1 legacy (no half-pixel centres)"
                if self.protocol["resize"] == "tf_legacy"
                else "align_corners=False"
            ),
            "value_range": [-1.0, 1.0],
            "features": (
                "I3D average-pooled Mixed_5c, 1024-d (piergiaj extract_features)"
                if det is not None and det.feature_dim == FEATURE_DIM_1024
                else "detector output (I3D: 400-d logits averaged over time)"
            ),
            "detector": det.name if det is not None else str(self._detector_spec),
            "detector_sha256": det.file_sha256 if det is not None else None,
            "detector_weight": self.detector_weight,
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

    def cache_path(self, trial: int = 0) -> Path | None:
        """Where the reference statistics (of one trial) live on disk (None: caching off or no identity)."""
        key = self.cache_key() if self.use_cache else None
        if key is None:
            return None
        suffix = f"_trial{trial}" if self.protocol["trials"] > 1 else ""
        return self.cache_dir / f"real_{key[:32]}{suffix}.npz"

    def reference_cached(self) -> bool:
        """Whether every trial's reference statistics are on disk for the identity set last."""
        paths = [self.cache_path(t) for t in range(self.protocol["trials"])] if self.use_cache else [None]
        return all(p is not None and p.is_file() for p in paths)

    def _check_cache(self) -> None:
        """On the first update after an identity is set, load the cached reference statistics if any."""
        if self._cache_checked:
            return
        self._cache_checked = True
        paths = [self.cache_path(k) for k in range(self.protocol["trials"])]
        if all(p is not None and p.is_file() for p in paths):
            self._real = {k: FeatureStats.load(p) for k, p in enumerate(paths)}
            self._real_from_cache = True

    # ----------------------------------------------------------------- streaming

    def reset(self) -> None:
        """Forget every update (the reference identity is kept)."""
        self._real: dict[int, FeatureStats] = {}  # trial -> reference statistics
        self._fake: dict[int, FeatureStats] = {}  # sample index (per_sample) or trial -> statistics
        self._real_seen: set[int] = set()
        self._fake_seen: set[tuple[int, int]] = set()
        self._fake_count = 0  # generated clips kept (pooled modes assign trials by arrival order)
        self._real_skipped = 0
        self._fake_skipped = 0
        self._real_from_cache = False
        self._cache_checked = False
        self._scored_frames: dict[str, set[tuple[int, ...]]] = {"real": set(), "fake": set()}

    def _label(self, video: int, side: str) -> str:
        return self.video_labels.get(side, {}).get(int(video), f"video {int(video)}")

    def _real_offset(self, video: int, t: int) -> int:
        """Start of the reference clip of `video` in its T frames: 0, or seeded random (StyleGAN-V)."""
        n = self.protocol["num_frames"]
        if self.protocol["real_offset"] == "first" or n == "all":
            return 0
        room = t - ((n - 1) * self.protocol["stride"] + 1)
        if room <= 0:
            return 0  # too short: _choose_frames reports it
        rng = np.random.default_rng([int(self.protocol["offset_seed"]) & 0xFFFFFFFF, int(video)])
        return int(rng.integers(0, room + 1))

    def _limit(self, key: str) -> int:
        """`num_real` / `num_fake` of the protocol; "all" (every video handed in) as no limit."""
        value = self.protocol[key]
        return sys.maxsize if value == "all" else int(value)

    def _choose_frames(self, t: int, videos: np.ndarray, side: str) -> list[int]:
        """Positions (into the T frames handed in) of the clip to score; ValueError if T is too short."""
        n, stride = self.protocol["num_frames"], self.protocol["stride"]
        if n == "all":
            positions = list(range(t))[::stride]
        elif self.protocol["frames"] == "uniform" and t >= n:  # n frames spread evenly over the clip
            positions = np.linspace(0, t - 1, n).round().astype(int).tolist()
        else:
            positions = list(range(0, (n - 1) * stride + 1, stride))
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
        capacity = self._limit("num_real") * self.protocol["trials"]
        keep, trial = [], []
        for i, v in enumerate(videos.tolist()):
            if v in self._real_seen:
                continue
            if len(self._real_seen) >= capacity:
                self._real_skipped += 1
                continue
            trial.append(len(self._real_seen) // self._limit("num_real"))
            self._real_seen.add(v)
            keep.append(i)
        if not keep:
            return
        positions = self._choose_frames(t, videos[keep], "reference")
        offsets = [self._real_offset(int(videos[i]), t) for i in keep]
        index = torch.tensor([[o + p for p in positions] for o in offsets])  # [b, F]
        rows = target[keep]  # [b, T, C, H, W]
        clip = torch.stack([rows[j, index[j]] for j in range(len(keep))])  # [b, F, C, H, W]
        check_frame_values(clip, "target")
        feats = self.features(clip, "round").double().numpy()  # [b, D]
        for row, k in enumerate(trial):
            self._real.setdefault(k, FeatureStats()).update(feats[row : row + 1])
        for o in sorted(set(offsets)):
            self._scored_frames["real"].add(tuple(frames[[o + p for p in positions]].tolist()))

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
        per_sample = self.protocol["per_sample"]
        capacity = self._limit("num_fake") * (1 if per_sample else self.protocol["trials"])
        keep: list[int] = []
        keys: list[int] = []
        wanted = self.protocol["fake_samples"]
        for i, (v, s) in enumerate(zip(videos.tolist(), samples.tolist())):
            if (v, s) in self._fake_seen:
                raise ValueError(f"FVD: (video={v}, sample={s}) was added more than once")
            if wanted is not None and s not in wanted:
                continue  # not part of the protocol's generated side (not counted as skipped)
            if per_sample:
                key = s
                count = (self._fake[key].count if key in self._fake else 0) + keys.count(key)
            else:
                count = self._fake_count
                key = count // self._limit("num_fake")
            if count >= capacity:
                self._fake_skipped += 1
                continue
            self._fake_seen.add((v, s))
            if not per_sample:
                self._fake_count += 1
            keep.append(i)
            keys.append(key)
        if not keep:
            return
        positions = self._choose_frames(t, videos[keep], "generated")
        clip = pred[keep][:, positions]  # [b, F, C, H, W]
        check_frame_values(clip, "pred")
        feats = self.features(clip, self.protocol["quantize"]).double().numpy()  # [b, D]
        for row, key in enumerate(keys):
            self._fake.setdefault(key, FeatureStats()).update(feats[row : row + 1])
        self._scored_frames["fake"].add(tuple(frames[positions].tolist()))

    # ----------------------------------------------------------------- result

    @property
    def real_stats(self) -> FeatureStats:
        """Reference feature statistics so far, all trials pooled (loaded from the cache on a hit)."""
        pooled = FeatureStats()
        for stats in self._real.values():
            pooled.merge(stats)
        return pooled

    @property
    def fake_stats(self) -> dict[int, FeatureStats]:
        """Generated feature statistics: {sample index: stats} (per_sample) or {trial: stats}."""
        return self._fake

    def compute(self) -> dict[str, Any]:
        """FVD `value` (mean ± s.e. over sample indices with per_sample) with every setting and count."""
        if not self._real:
            raise RuntimeError("FVD: no reference clips were added")
        if not self._fake:
            raise RuntimeError("FVD: no generated clips were added")
        unbiased = self.protocol["covariance"] == "unbiased"
        need = 2 if unbiased else 1
        for label, stats in [
            *((f"reference[{k}]", s) for k, s in self._real.items()),
            *((f"generated[{k}]", s) for k, s in self._fake.items()),
        ]:
            if stats.count < need:
                raise ValueError(
                    f"FVD: {label} has {stats.count} clip(s); {self.protocol['covariance']} "
                    f"covariance needs at least {need}"
                )
        per_sample = self.protocol["per_sample"]
        missing = [] if per_sample else sorted(set(self._fake) - set(self._real))
        if missing:
            raise ValueError(
                f"FVD: generated trial(s) {missing} lack reference clips: {self.protocol['trials']} trial(s) "
                f"need {self.protocol['num_real']} reference videos each, got {self.real_stats.count}"
            )
        real_moments = {
            k: (stats.mean(), stats.cov(unbiased=unbiased)) for k, stats in sorted(self._real.items())
        }
        per_key = {
            k: frechet_distance(s.mean(), s.cov(unbiased=unbiased), *real_moments[0 if per_sample else k])
            for k, s in sorted(self._fake.items())
        }
        values = np.array(list(per_key.values()), dtype=np.float64)
        det = self.detector
        n_fake = [s.count for s in self._fake.values()]
        notes: list[str] = []
        for label, n, target_n in [
            ("reference", min(r.count for r in self._real.values()), self._limit("num_real")),
            ("generated", min(n_fake), self._limit("num_fake")),
        ]:
            if n < det.feature_dim:
                notes.append(
                    f"{label} N={n} < feature dim {det.feature_dim}: covariance is rank-deficient and FVD is "
                    "strongly biased upward; compare only numbers with the same N"
                )
            if n < target_n != sys.maxsize:  # "all" has no size to fall short of
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
            "detector_weight": self.detector_weight,
            "feature_dim": det.feature_dim,
            "num_real": int(self.real_stats.count),
            "num_fake": int(sum(n_fake)),
            "num_videos": int(self.real_stats.count),
            "real_features_shape": [int(self.real_stats.count), int(det.feature_dim)],
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
        if len(per_key) > 1 or per_sample or self.protocol["trials"] > 1:
            n = values.size
            std = float(values.std(ddof=1)) if n > 1 else math.nan
            what = "sample indices (one FVD per sample index)" if per_sample else "trials (one FVD per trial)"
            result.update(
                per_sample={str(k): v for k, v in per_key.items()} if per_sample else None,
                per_trial={str(k): v for k, v in per_key.items()} if not per_sample else None,
                num_fake_per_sample={str(k): int(s.count) for k, s in sorted(self._fake.items())}
                if per_sample
                else None,
                std=std,
                sem=std / math.sqrt(n) if n > 1 else math.nan,
                aggregation=f"mean ± s.e. over {what}",
            )
            result = {k: v for k, v in result.items() if v is not None}
        self._save_cache()
        return result

    # ----------------------------------------------------------------- partial state (generated side)

    def save_state(self, folder: str | os.PathLike, name: str) -> dict[str, Any]:
        """The generated side's statistics as `<folder>/<name>.fake-<key>.npz` (the reference side is
        computed once by whoever merges, or read from the cache)."""
        files = {}
        for key, stats in self._fake.items():
            files[str(key)] = f"{name}.fake-{key}.npz"
            stats.save(Path(folder) / files[str(key)])
        return {
            "kind": "distribution",
            "files": files,
            "skipped": self._fake_skipped,
            "scored_frames": [list(f) for f in sorted(self._scored_frames["fake"])],
        }

    def merge_saved(self, parts: Sequence[tuple[Path, Mapping[str, Any]]]) -> bool:
        """Merge the parts' generated-side statistics; False (nothing changed) when the protocol's
        per-trial capacity or arrival-order rules make merged sums differ from one process's."""
        merged: dict[int, FeatureStats] = {}
        skipped = 0
        frames: set[tuple[int, ...]] = set()
        for folder, info in parts:
            skipped += info["skipped"]
            frames |= {tuple(f) for f in info["scored_frames"]}
            for key, file in info["files"].items():
                merged.setdefault(int(key), FeatureStats()).merge(FeatureStats.load(Path(folder) / file))
        p = self.protocol
        counts = {k: s.count for k, s in merged.items()}
        exact = skipped == 0 and all(n <= self._limit("num_fake") for n in counts.values())
        if not p["per_sample"]:
            exact = exact and p["trials"] == 1 and set(counts) <= {0}
        if not exact:
            return False
        self._fake = merged
        self._fake_count = sum(counts.values()) if not p["per_sample"] else 0
        self._scored_frames["fake"] = frames
        return True

    def _save_cache(self) -> None:
        """Store freshly computed reference statistics under `cache_path()` (no-op on a hit)."""
        if self._real_from_cache or len(self._real) != self.protocol["trials"]:
            return  # loaded from the cache, or an incomplete set of trials
        for trial, stats in self._real.items():
            path = self.cache_path(trial)
            if path is None or path.is_file():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            stats.metadata.update(
                detector=self.detector.name,
                detector_sha256=self.detector.file_sha256,
                protocol=self.protocol_name,
                settings=self.protocol,
                reference=self._identity,
                trial=trial,
            )
            stats.save(path)
