"""Shared test helpers: composing the real config tree with Hydra, tiny overrides, run folders, a local
HTTP server, tiny backbone checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from videxp.callbacks.checkpoints import MODULE_KEY, module_name
from videxp.video import VideoError
from videxp.weights import registry as weights

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
REFERENCE_OUTPUTS = Path(__file__).resolve().parent / "reference_outputs"  # test vectors of the papers' code

# Overrides that make every stage fast on 2 CPU cores: 16x16 frames, 8-frame videos, a 4-step sampler.
TINY = [
    "dataset.image_size=16",
    "dataset.video_length=8",
    "dataset.batch_size=2",
    "dataset.source.num_videos={train: 64, val: 4, test: 4}",
    "dataset.source.sprite_size=[3,6]",
    "model.size=tiny",
    "model.max_frames=6",
    "model.sampling.timestep_respacing='4'",
    "inference.obs_length=2",
    "inference.step_size=3",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "callbacks.sample_metrics.num_videos=2",
]


def write_samples_folder(folder: Path, dataset: dict, sample: np.ndarray) -> Path:
    """A samples folder: `sample` [T, H, W, 3] uint8 as video 0's sample 0, and a manifest whose dataset block
    is `dataset` (2 observed of 4 frames); returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "sample_0000-0.npy", sample)
    manifest = {
        "format": "videxp.samples/1",
        "dataset": dataset,
        "split": "test",
        "inference": {"name": "autoreg", "video_length": 4, "obs_length": 2},
        "samples": [{"file": "sample_0000-0.npy", "video": 0, "sample": 0, "video_id": "0"}],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path | str) -> DictConfig:
    """Compose conf/<config_name>.yaml with overrides, as the entry points do, outside a Hydra run."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def bare_trainer(max_steps: int, **kw) -> lightning.Trainer:
    """A CPU Lightning Trainer without logger, checkpoints, progress bar or model summary (unit tests)."""
    return lightning.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def fail_reading(datamodule, video: int, message: str = "corrupt stand-in") -> None:
    """Make every source of `datamodule` raise VideoError(message) when video `video` is read."""
    make = datamodule.source

    def broken(split):
        source = make(split=split)
        read = source.read

        def read_or_fail(i, indices):
            if i == video:
                raise VideoError(message)
            return read(i, indices)

        object.__setattr__(source, "read", read_or_fail)
        return source

    datamodule.source = broken


def save_lightning_checkpoint(path: Path, module, step: int = 3, record_class: bool = True) -> None:
    """A Lightning checkpoint of `module` as videxp-train writes it, without the trainer state; with
    `record_class` it names the module class as videxp's checkpoints do."""
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "global_step": step,
        "pytorch-lightning_version": lightning.__version__,
    }
    if record_class:
        ckpt[MODULE_KEY] = module_name(module)
    torch.save(ckpt, path)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in a fresh working directory (Hydra writes outputs/ relative to it)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _no_hydra_run_left_over():
    """A test that sets Hydra's run config in-process (the launcher tests) must not leak it into the next."""
    yield
    HydraConfig.instance().cfg = None


@pytest.fixture(autouse=True, scope="session")
def _offline_env():
    """Tests never reach the network: no weight downloads, wandb offline."""
    os.environ["VIDEXP_OFFLINE"] = "1"
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    yield


@pytest.fixture
def alex_state(tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    """A seeded random torchvision AlexNet saved under torchvision's file name in a tmp TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VIDEXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VIDEXP_OFFLINE", "1")  # nothing may be downloaded
    state = _random_alex_state()
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    path = folder / weights.WEIGHTS["alexnet"].filename
    torch.save(state, path)
    # the random file cannot match the real sha256: pin this file's own digest instead
    spec = dataclasses.replace(weights.WEIGHTS["alexnet"], sha256=weights.sha256_file(path))
    monkeypatch.setitem(weights.WEIGHTS, "alexnet", spec)
    return state


@functools.cache
def _random_alex_state() -> dict[str, torch.Tensor]:
    """torchvision AlexNet with seeded random weights (built once per session: init is slow)."""
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None).state_dict()


class LocalServer:
    """An HTTP server on 127.0.0.1 serving a folder; counts requests per path. `/truncated/<x>` promises
    `len(truncated)` bytes but sends the first 100 and closes (a download cut short)."""

    def __init__(self, root: Path, truncated: bytes = b"") -> None:
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path.startswith("/truncated/"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(truncated)))
                    self.end_headers()
                    self.wfile.write(truncated[:100])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def local_server() -> Iterator[Callable[..., LocalServer]]:
    """Start `LocalServer(root, truncated)`s; all are stopped after the test."""
    servers: list[LocalServer] = []

    def start(root: Path, truncated: bytes = b"") -> LocalServer:
        servers.append(LocalServer(root, truncated))
        return servers[-1]

    yield start
    for srv in servers:
        srv.stop()
