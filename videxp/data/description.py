"""A dataset description read from a data file (a samples manifest) mapped onto videxp's own data classes."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from videxp.data.datamodule import VideoDataModule
from videxp.data.moving_shapes import MovingShapes
from videxp.data.sources import build_source
from videxp.errors import ConfigError

# the only classes a stored description may name (conf/dataset/*.yaml use exactly these)
DATAMODULES: dict[str, type] = {"videxp.data.datamodule.VideoDataModule": VideoDataModule}
SOURCES: dict[str, Any] = {
    "videxp.data.sources.build_source": build_source,
    "videxp.data.moving_shapes.MovingShapes": MovingShapes,
}
AUGMENT_PREFIX = "albumentations."  # transform.augment entries (training split only; never built here)
_HYDRA_FLAGS = ("_convert_", "_recursive_")  # instantiate options that carry no code: ignored


def datamodule_from_description(desc: Mapping[str, Any], origin: str | os.PathLike) -> VideoDataModule:
    """The data module `desc` describes (the resolved `dataset` config a samples manifest stores), built
    without instantiating anything the file names: `_target_` must be one of DATAMODULES and
    `source._target_` one of SOURCES (partial: one source per split). Augmentations are left out: they
    apply to the training split only and reference clips are never augmented.

    `origin` is the file the description came from; every refusal (ConfigError) names it and the key.
    """
    if not isinstance(desc, Mapping):
        raise ConfigError(f"{origin}: `dataset` must be a mapping, got {type(desc).__name__}")
    kwargs = _plain(desc, "dataset", origin, DATAMODULES)
    cls = DATAMODULES[desc["_target_"]]
    source = desc.get("source")
    if not isinstance(source, Mapping):
        raise ConfigError(f"{origin}: `dataset.source` must be a mapping naming one of {sorted(SOURCES)}")
    source_kwargs = _plain(source, "dataset.source", origin, SOURCES)
    if source.get("_partial_") is not True:
        raise ConfigError(
            f"{origin}: `dataset.source._partial_` must be true (the data module builds one source per "
            "split), as in conf/dataset/*.yaml"
        )
    transform = dict(kwargs.pop("transform", None) or {})
    for i, entry in enumerate(transform.pop("augment", None) or []):
        target = entry.get("_target_") if isinstance(entry, Mapping) else None
        if not (isinstance(target, str) and target.startswith(AUGMENT_PREFIX)):
            raise ConfigError(
                f"{origin}: `dataset.transform.augment[{i}]._target_`={target!r} is not an albumentations "
                "transform; remove it from the file (reference clips are never augmented)"
            )
    kwargs.pop("source", None)
    for key, value in [*kwargs.items(), ("transform", transform)]:
        _no_targets(value, f"dataset.{key}", origin)
    for key, value in source_kwargs.items():
        _no_targets(value, f"dataset.source.{key}", origin)
    kwargs["transform"] = transform
    kwargs["source"] = functools.partial(SOURCES[source["_target_"]], **source_kwargs)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{origin}: `dataset` does not describe a {cls.__name__} ({e})") from e


def _plain(node: Mapping[str, Any], key: str, origin: str | os.PathLike, known: Mapping[str, Any]) -> dict:
    """`node` without its Hydra keys, after checking that `node._target_` is one of `known`."""
    target = node.get("_target_")
    if not isinstance(target, str) or target not in known:
        raise ConfigError(
            f"{origin}: `{key}._target_`={target!r} is not a videxp dataset class; a samples manifest may "
            f"name only {sorted(known)} (nothing is run from a data file): fix or remake the file"
        )
    plain = {}
    for k, v in node.items():
        if k in ("_target_", "_partial_", *_HYDRA_FLAGS):
            continue
        if k.startswith("_") and k.endswith("_"):
            raise ConfigError(f"{origin}: `{key}.{k}` is not allowed in a stored dataset description")
        plain[k] = v
    return plain


def _no_targets(value: Any, key: str, origin: str | os.PathLike) -> None:
    """ConfigError if `value` holds a `_target_` anywhere: a stored description names no other code."""
    if isinstance(value, Mapping):
        if "_target_" in value:
            raise ConfigError(
                f"{origin}: `{key}._target_`={value['_target_']!r}: a stored dataset description may name "
                "code only at `dataset._target_` and `dataset.source._target_`; fix or remake the file"
            )
        for k, v in value.items():
            _no_targets(v, f"{key}.{k}", origin)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _no_targets(v, f"{key}[{i}]", origin)
