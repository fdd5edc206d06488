"""Weight registry: cache lookup, verified downloads from a local HTTP server, offline errors, git blobs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import LocalServer

from videxp.weights import WeightsChecksumError, WeightsDownloadError, WeightsMissingError, WeightSpec
from videxp.weights import registry as weights

CONTENT = b"videxp test weights\n" * 500  # 10 kB


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    """Cache folders in tmp; online; no real home cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("VIDEXP_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("VIDEXP_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "DOWNLOAD_TIMEOUT_S", 5.0)
    return cache


@pytest.fixture
def server(tmp_path, local_server) -> LocalServer:
    root = tmp_path / "www"
    root.mkdir()
    (root / "w.bin").write_bytes(CONTENT)
    return local_server(root, truncated=CONTENT)


def _spec(server: LocalServer, *paths: str, **kw) -> WeightSpec:
    fields = {"name": "test_w", "filename": "w.bin", "sha256": hashlib.sha256(CONTENT).hexdigest()} | kw
    return WeightSpec(urls=tuple(server.base + p for p in paths), **fields)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verify_and_cache(env, server):
    spec = _spec(server, "/w.bin")
    path = weights.get_path(spec)
    assert path == env / "w.bin"
    assert path.read_bytes() == CONTENT
    assert (env / "w.bin.verified").is_file()
    assert weights.get_path(spec) == path  # served from the cache
    assert server.hits == {"/w.bin": 1}
    assert _leftovers(env) == ["w.bin", "w.bin.verified"]


def test_verification_cached_in_sidecar(env, server, monkeypatch):
    spec = _spec(server, "/w.bin")
    weights.get_path(spec)

    def no_hashing(path):
        raise AssertionError("re-hashed a verified file")

    monkeypatch.setattr(weights, "_digests", no_hashing)
    assert weights.get_path(spec).read_bytes() == CONTENT


def test_wrong_checksum_leaves_nothing(env, server):
    spec = _spec(server, "/w.bin", sha256="0" * 64)
    with pytest.raises(WeightsChecksumError) as info:
        weights.get_path(spec)
    msg = str(info.value)
    assert "w.bin" in msg and server.base + "/w.bin" in msg
    assert "0" * 64 in msg and hashlib.sha256(CONTENT).hexdigest() in msg
    assert _leftovers(env) == []


def test_truncated_download_leaves_nothing(env, server):
    spec = _spec(server, "/truncated/w.bin")
    with pytest.raises(WeightsChecksumError) as info:
        weights.get_path(spec)
    msg = str(info.value)
    assert "w.bin" in msg and "/truncated/w.bin" in msg and str(len(CONTENT)) in msg
    assert _leftovers(env) == []


def test_first_url_404_then_second_works(env, server):
    spec = _spec(server, "/missing.bin", "/w.bin")
    assert weights.get_path(spec).read_bytes() == CONTENT
    assert server.hits == {"/missing.bin": 1, "/w.bin": 1}


def test_all_urls_fail(env, server):
    spec = _spec(server, "/missing.bin", "/gone.bin")
    with pytest.raises(WeightsDownloadError) as info:
        weights.get_path(spec)
    assert "/missing.bin" in str(info.value) and "/gone.bin" in str(info.value)
    assert _leftovers(env) == []


def test_offline_missing_names_everything(env, server, monkeypatch):
    monkeypatch.setenv("VIDEXP_OFFLINE", "1")
    spec = _spec(server, "/w.bin", "/mirror/w.bin")
    with pytest.raises(WeightsMissingError) as info:
        weights.get_path(spec)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert "test_w" in msg and "w.bin" in msg
    assert server.base + "/w.bin" in msg and server.base + "/mirror/w.bin" in msg
    assert str(env / "w.bin") in msg
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert server.hits == {}


def test_download_false_and_hf_offline(env, server, monkeypatch):
    spec = _spec(server, "/w.bin")
    with pytest.raises(WeightsMissingError, match="download=False"):
        weights.get_path(spec, download=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.is_offline()
    with pytest.raises(WeightsMissingError):
        weights.get_path(spec, download=True)
    assert server.hits == {}


def test_corrupt_cached_file_is_kept(env, server):
    env.mkdir(parents=True)
    (env / "w.bin").write_bytes(b"not the weights")
    with pytest.raises(WeightsChecksumError, match="left in place"):
        weights.get_path(_spec(server, "/w.bin"))
    assert (env / "w.bin").read_bytes() == b"not the weights"
    assert server.hits == {}


def test_git_blob_verification(env, server, tmp_path):
    small = tmp_path / "hello.txt"
    small.write_bytes(b"hello\n")
    assert weights.git_blob_sha1(small) == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert hashlib.sha1(b"blob 6\0hello\n").hexdigest() == "ce013625030ba8dba906f756967f9e9ca394464a"
    blob = hashlib.sha1(f"blob {len(CONTENT)}\0".encode() + CONTENT).hexdigest()
    assert weights.get_path(_spec(server, "/w.bin", sha256=None, git_blob=blob)).read_bytes() == CONTENT
    bad = _spec(server, "/w.bin", sha256=None, git_blob="f" * 40)
    with pytest.raises(WeightsChecksumError, match="git_blob"):
        weights.get_path(bad)


def test_size_only_and_torch_subdir(env, server, tmp_path):
    spec = _spec(server, "/w.bin", sha256=None, size=len(CONTENT), subdir="torch")
    path = weights.get_path(spec)
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / "w.bin"
    with pytest.raises(WeightsChecksumError, match="size"):
        weights.get_path(_spec(server, "/w.bin", sha256=None, size=1, filename="other.bin"))


def test_registry(env):
    for name in ("i3d_torchscript", "i3d_pretrained_400", "alexnet", "vgg16"):
        assert name in weights.WEIGHTS and weights.WEIGHTS[name].urls
    assert weights.WEIGHTS["i3d_torchscript"].git_blob == "93daef59c7ae0e9e8f76225521407e60cbafa6aa"
    assert weights.WEIGHTS["i3d_pretrained_400"].git_blob == "a867b87ac3a9097d200598b1d48a1b890d8ec744"
    assert weights.WEIGHTS["alexnet"].sha256.startswith("7be5be79")
    assert weights.WEIGHTS["alexnet"].subdir == "torch"
    spec = WeightSpec(name="user_w", filename="u.pt")
    try:
        weights.register(spec)
        assert weights.WEIGHTS["user_w"] is spec
        with pytest.raises(ValueError, match="already registered"):
            weights.register(WeightSpec(name="user_w", filename="v.pt"))
    finally:
        weights.WEIGHTS.pop("user_w", None)
    with pytest.raises(KeyError, match="unknown weight"):
        weights.get_path("no_such_weight")
    with pytest.raises(ValueError, match="hex"):
        WeightSpec(name="x", filename="x.pt", sha256="abc")
