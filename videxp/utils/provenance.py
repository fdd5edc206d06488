"""Where a result came from: git commit and dirty flag, package versions, device, command line."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("videxp", "torch", "torchvision", "lightning", "hydra-core", "numpy", "av", "h5py")
_REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> dict[str, Any]:
    """The commit of the videxp checkout and whether tracked files differ from it (None outside git)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def package_versions(names: tuple[str, ...] = _PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info(device: torch.device | str | None = None) -> dict[str, Any]:
    device = torch.device(device or "cpu")
    info: dict[str, Any] = {
        "device": str(device),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def provenance(device: torch.device | str | None = None) -> dict[str, Any]:
    """Everything needed to trace a number back to code, environment and invocation."""
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "packages": package_versions(),
        **device_info(device),
        "argv": sys.argv,
    }
