"""Weights under attack: unverified named weights, a swapped file behind a stale sidecar, a detector file
that claims a name, and hub revisions that must be recorded."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import torch
import torch.nn as nn

from videxp.metrics.fvd import FVD
from videxp.weights import WeightsChecksumError
from videxp.weights import registry as weights
from videxp.weights.files import resolved_revision


def test_every_named_weight_is_pinned_by_content():
    for spec in weights.WEIGHTS.values():
        assert spec.sha256 or spec.git_blob, f"{spec.name} has no content hash"
    squeeze = weights.WEIGHTS["squeezenet1_1"]
    assert squeeze.sha256.startswith("b8a52dc0") and squeeze.size == 4958839  # was unverified


def test_same_size_same_mtime_swap_is_rehashed(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    first = weights.file_digests(path)
    st = path.stat()
    time.sleep(0.05)  # past the kernel's coarse timestamp tick, so the rewrite gets a new ctime
    path.write_bytes(b"b" * 1000)  # a different file of the same size ...
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... with the old mtime put back
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    second = weights.file_digests(path)
    assert second["sha256"] != first["sha256"]
    spec = weights.WeightSpec(name="t", filename="w.bin", sha256=str(first["sha256"]))
    with pytest.raises(WeightsChecksumError, match="sha256"):
        weights.verify(path, spec)


class _Features(nn.Module):
    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4)).repeat(1, 4)  # [B, 12]


def _scripted(path):
    torch.jit.script(_Features()).save(str(path))
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_user_detector_is_named_when_it_is_a_registered_weight(tmp_path, monkeypatch):
    path = _scripted(tmp_path / "my_detector.pt")
    fvd = FVD(detector=str(path), use_cache=False)
    fvd.prepare()
    assert fvd.settings()["detector_weight"] is None and len(fvd.settings()["detector_sha256"]) == 64
    spec = dataclasses.replace(
        weights.WEIGHTS["i3d_torchscript"], sha256=weights.sha256_file(path), git_blob=None
    )
    monkeypatch.setitem(weights.WEIGHTS, "i3d_torchscript", spec)
    fvd = FVD(detector=str(path), use_cache=False)
    fvd.prepare()
    assert fvd.settings()["detector_weight"] == "i3d_torchscript"


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_user_detector_named_like_a_weight_but_different_is_refused(tmp_path):
    path = _scripted(tmp_path / "i3d_torchscript.pt")  # not StyleGAN-V's file
    with pytest.raises(
        WeightsChecksumError, match=r"i3d_torchscript\.pt: named like weight 'i3d_torchscript'"
    ):
        FVD(detector=str(path), use_cache=False).prepare()


def test_hub_revision_resolved_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    refs = tmp_path / "hub" / "models--owner--model" / "refs"
    refs.mkdir(parents=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    (refs / "main").write_text(commit)
    (refs / "v1.0").write_text("f" * 40)
    assert resolved_revision("owner/model", None) == {
        "repo": "owner/model",
        "revision": None,
        "commit": commit,
    }
    assert resolved_revision("owner/model", "v1.0")["commit"] == "f" * 40
    assert resolved_revision("owner/model", "v2")["commit"] is None  # configured, not in the cache
    pinned = resolved_revision("owner/other", commit.upper())
    assert pinned["commit"] == commit and pinned["revision"] == commit.upper()
    assert resolved_revision(str(tmp_path), "main") is None  # a local folder: nothing from the hub
