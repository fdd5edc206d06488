"""Weights and checkpoint files in one place: the registry of named files with checksums and downloads
(`registry`), pretrained files and components from a local path or a hub id (`files`), and strict
state-dict loading (`state_check`)."""

from videxp.weights.registry import (
    WEIGHTS,
    ChecksumError,
    WeightsChecksumError,
    WeightsDownloadError,
    WeightsError,
    WeightsMissingError,
    WeightSpec,
    cache_dir,
    file_digests,
    get_path,
    is_offline,
    register,
    verify,
)

__all__ = [
    "WEIGHTS",
    "ChecksumError",
    "WeightSpec",
    "WeightsChecksumError",
    "WeightsDownloadError",
    "WeightsError",
    "WeightsMissingError",
    "cache_dir",
    "file_digests",
    "get_path",
    "is_offline",
    "register",
    "verify",
]
