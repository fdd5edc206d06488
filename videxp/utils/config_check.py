"""The types and ranges of the config values people override most, checked before a run does any work."""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from omegaconf import DictConfig, OmegaConf

from videxp.errors import ConfigError

_ABSENT = object()

# key: (kind, smallest allowed value or None). Kinds: int, number (int or float), bool, size (an int or
# [height, width]); a trailing "?" = may be null.
TYPES: dict[str, tuple[str, float | None]] = {
    "seed": ("int", None),
    "sample.num_samples": ("int", 1),
    "sample.batch_size": ("int", 1),
    "sample.start_index": ("int", 0),
    "sample.stop_index": ("int?", 0),
    "sample.num_samples_total": ("int?", 1),
    "sample.num_shards": ("int", 1),
    "sample.shard": ("int", 0),
    "sample.grid_videos": ("int", 0),
    "sample.fps": ("number?", 0),
    "sample.lock_stale_s": ("number", 0),
    "sample.finalise": ("bool", None),
    "sample.schedule_png": ("bool", None),
    "evaluate.batch_size": ("int", 1),
    "evaluate.first_frame": ("int?", 0),
    "evaluate.last_frame": ("int?", 1),
    "evaluate.drop_observed": ("bool", None),
    "dataset.video_length": ("int", 1),
    "dataset.image_size": ("size", 1),
    "dataset.batch_size": ("int", 1),
    "dataset.num_workers": ("int", 0),
    "dataset.fps": ("number?", 0),
    "inference.obs_length": ("int", 0),
    "inference.step_size": ("int", 1),
    "inference.max_frames": ("int?", 1),
    "trainer.max_steps": ("int", -1),
    "trainer.log_every_n_steps": ("int", 1),
    "videos_per_shard": ("int", 1),
    "workers": ("int", 0),
    "mp4_crf": ("int", 0),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "evaluate.blank": ("black", "observed_mean"),
    "sample.video_format": ("gif", "mp4", "none"),
    "format": ("hdf5", "npz", "mp4"),
}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_EXAMPLE = {"int": "4", "number": "2.5", "bool": "true", "size": "64"}
_NAMES = {
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "size": "an integer or [height, width]",
}


def _value(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)


def _type_ok(kind: str, value) -> bool:
    if value is None:
        return kind.endswith("?")
    base = kind.rstrip("?")
    if base == "bool":
        return isinstance(value, bool)
    if base == "size" and OmegaConf.is_list(value):
        return len(value) == 2 and all(_type_ok("int", v) and v >= 1 for v in value)
    if base == "size":
        base = "int"
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if base == "int" else isinstance(value, (int, float))


def type_errors(cfg: DictConfig, keys: Iterable[str] | None = None) -> list[str]:
    """One line per config value (of TYPES / CHOICES / `device`) with the wrong type or out of range."""
    errors = []
    for key in TYPES if keys is None else keys:
        kind, low = TYPES[key]
        value = _value(cfg, key)
        if value is _ABSENT:
            continue
        base = kind.rstrip("?")
        if not _type_ok(kind, value):
            null = " or null" if kind.endswith("?") else ""
            errors.append(
                f"{key}={value!r}: expected {_NAMES[base]}{null}, "
                f"got {type(value).__name__} (e.g. {key}={_EXAMPLE[base]})"
            )
        elif low is not None and isinstance(value, (int, float)) and value < low:
            errors.append(f"{key}={value!r}: must be >= {low}")
    for key, allowed in CHOICES.items():
        value = _value(cfg, key)
        if value is not _ABSENT and value not in allowed:
            errors.append(f"{key}={value!r}: expected one of {', '.join(allowed)}")
    device = _value(cfg, "device")
    if device is not _ABSENT and device is not None:
        errors.extend(_device_errors(str(device)))
    return errors


def _device_errors(device: str) -> list[str]:
    if not _DEVICE.match(device):
        return [f"device={device!r}: expected auto, cpu, mps, cuda or cuda:N"]
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            return [f"device={device}: no CUDA device is available here (use device=auto or device=cpu)"]
        if index >= torch.cuda.device_count():
            return [f"device={device}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0..)"]
    return []


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every known config value of the wrong type or out of range."""
    errors = type_errors(cfg)
    if errors:
        raise ConfigError(
            "bad config value" + ("s" if len(errors) > 1 else "") + ":\n  " + "\n  ".join(errors)
        )
