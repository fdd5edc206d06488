"""Bad inputs through the entry points: each ends in a non-zero exit, a message naming the culprit (file or
config key), no traceback, and no file left behind. Run in-process (argv patched) for speed; two cases
run as real subprocesses to prove the console path prints one line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import TINY, compose_cfg, save_lightning_checkpoint, write_samples_folder
from hydra.utils import instantiate
from PIL import Image

from videxp import compare, evaluate, prepare, sample, train
from videxp.data.hdf5 import write_shards
from videxp.data.sources import MANIFEST, PREPARED_FORMAT

T, SIZE = 8, 16
ENTRIES = {"evaluate": evaluate, "sample": sample, "train": train, "prepare": prepare, "compare": compare}
TRACEBACK = "Traceback (most recent call last)"


class TinyDetector(nn.Module):
    """A TorchScript detector with StyleGAN-V's signature: pooled pixels -> 400 features."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x.mean(2), 1).flatten(1).repeat(1, 134)[:, :400]


def clip(seed: int, t: int = T, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, size, size, 3), dtype=np.uint8)


def videos(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        np.save(folder / f"v{i}.npy", clip(i))
    return folder


def _npy_bytes(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Every bad input of the corpus, each a copy of the good fake folder with one file broken."""
    d = tmp_path_factory.mktemp("bad")
    videos(d / "real")
    (d / "afile").write_text("a file where a folder is expected")
    (d / "empty").mkdir()
    bad = {
        "corrupt_mp4": ("v1.mp4", b"not a video at all" * 20),
        "garbage_gif": ("v1.gif", b"GIF89a" + b"\x00" * 40),
        "truncated_npy": ("v1.npy", _npy_bytes(clip(1))[:300]),
        "empty_npy": ("v1.npy", b""),
        "nan_npy": ("v1.npy", _npy_bytes(np.full((T, SIZE, SIZE, 3), np.nan, np.float32))),
        "float_npy": ("v1.npy", _npy_bytes(clip(1).astype(np.float32) / 255)),
        "int16_npy": ("v1.npy", _npy_bytes(clip(1).astype(np.int16))),
        "pickled_npy": ("v1.npy", _npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True)),
        "flat_npy": ("v1.npy", _npy_bytes(np.zeros((SIZE, SIZE), np.uint8))),
        "rgba_npy": ("v1.npy", _npy_bytes(np.zeros((T, SIZE, SIZE, 4), np.uint8))),
        "no_frames_npy": ("v1.npy", _npy_bytes(np.zeros((0, SIZE, SIZE, 3), np.uint8))),
        "bigger_frames": ("v1.npy", _npy_bytes(clip(1, size=20))),
        "shorter_clip": ("v1.npy", _npy_bytes(clip(1, t=4))),
        "extra_video": ("v3.npy", _npy_bytes(clip(3))),
    }
    for name, (file, payload) in bad.items():
        folder = videos(d / name)
        if name != "extra_video":
            (folder / "v1.npy").unlink()
        (folder / file).write_bytes(payload)
    folder = videos(d / "unicode")
    (folder / "v1.npy").rename(folder / "vidéo 😀.npy")
    folder = videos(d / "bad_png")
    (folder / "v1.npy").unlink()
    (folder / "v1").mkdir()
    for t in range(T):
        Image.fromarray(clip(1)[t]).save(folder / "v1" / f"{t:03d}.png")
    (folder / "v1" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (d / "no_manifest").mkdir()
    torch.jit.save(torch.jit.script(TinyDetector()), str(d / "detector.pt"))
    for name, content in {
        "good": json.dumps({"psnr": {"value": 30.0}}),
        "bad_json": "{not json",
        "empty_json": "",
        "list_json": "[1, 2]",
        "no_metrics": json.dumps({"note": 1}),
        "text_value": json.dumps({"psnr": {"value": "high"}}),
    }.items():
        (d / "runs_in" / name).mkdir(parents=True)
        (d / "runs_in" / name / "metrics.json").write_text(content)
    _trust_inputs(d)
    return d


DATA_TINY = [o for o in TINY if not o.startswith(("model.", "dataset.source."))]  # any dataset / model


def _samples_with(folder: Path, dataset: dict) -> None:
    """A samples folder: one sample of video 0 and a manifest whose dataset block is `dataset`."""
    write_samples_folder(folder, dataset, clip(0, t=4, size=8))


def _trust_inputs(d: Path) -> None:
    """The inputs of the trust checks: crafted manifests, checkpoints, loops, corrupt shards, detectors."""
    _samples_with(d / "system_manifest", {"_target_": "os.system", "command": f"touch {d}/pwned"})
    (d / "empty.ckpt").touch()
    (d / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    fdm = compose_cfg("sample", TINY, d).model
    save_lightning_checkpoint(d / "fdm.ckpt", instantiate(fdm))
    # samples made with seed 0 (random weights) and with a checkpoint later replaced at the same path
    for name, ckpt in (("sampled_random", "random"), ("sampled_ckpt", str(d / "swap.ckpt"))):
        if ckpt != "random":
            save_lightning_checkpoint(Path(ckpt), instantiate(fdm), step=1)
        sample.run(compose_cfg("sample", [*SAMPLE, "sample.stop_index=1", f"ckpt_path={ckpt}"], d / name))
    torch.manual_seed(1)
    save_lightning_checkpoint(d / "swap.ckpt", instantiate(fdm), step=1)  # same path, other weights
    loop = videos(d / "symloop")
    (loop / "v1.npy").unlink()
    (loop / "v1.npy").symlink_to(loop / "v1b.npy")
    (loop / "v1b.npy").symlink_to(loop / "v1.npy")
    # an HDF5 test split with one flipped pixel byte, named by a samples manifest scored by evaluate
    write_shards([clip(i, t=4, size=8) for i in range(2)], d / "shards" / "test", compress=False)
    shard = d / "shards" / "test" / "shard_0001.hdf5"
    with h5py.File(shard, "r") as h5:
        offset = h5["0/1"].id.get_offset() + 5
    data = bytearray(shard.read_bytes())
    data[offset] ^= 0xFF
    shard.write_bytes(bytes(data))
    source = {"_target_": "videxp.data.sources.build_source", "_partial_": True, "name": "hdf5"}
    hdf5 = {
        "_target_": "videxp.data.datamodule.VideoDataModule",
        "name": "hdf5",
        "video_length": 4,
        "image_size": 8,
        "batch_size": 1,
        "num_workers": 0,
        "source": {**source, "root": str(d / "shards"), "format": "prepared"},
        "clips": {"eval_mode": "first"},
    }
    _samples_with(d / "corrupt_shard_samples", hdf5)
    (d / "prepared").mkdir()
    (d / "prepared" / MANIFEST).write_text(json.dumps({"format": PREPARED_FORMAT}))
    torch.jit.save(torch.jit.script(TinyDetector()), str(d / "i3d_torchscript.pt"))  # not StyleGAN-V's


FOLDERS = ["real_dir={d}/real"]
FVD = ["metric=[fvd]", "metric.fvd.detector={d}/detector.pt", "metric.fvd.num_frames=10"]
SAMPLE = [*TINY, "sample.stop_index=2", "sample.batch_size=2"]
RANDOM = [*SAMPLE, "ckpt_path=random"]  # sampling with random weights on purpose
TRAIN = [*TINY, "trainer.max_steps=2"]
# (id, entry point, arguments ({d}: the data folder), text the message must hold: the culprit)
CASES = [
    # evaluate: broken videos in the fake folder, scored against a good real folder
    *[
        ("evaluate-" + name, "evaluate", [*FOLDERS, "fake_dir={d}/" + name], culprit)
        for name, culprit in [
            ("corrupt_mp4", "v1.mp4"),
            ("garbage_gif", "v1.gif"),
            ("truncated_npy", "v1.npy"),
            ("empty_npy", "v1.npy"),
            ("nan_npy", "v1.npy"),
            ("float_npy", "v1.npy"),
            ("int16_npy", "v1.npy"),
            ("pickled_npy", "v1.npy"),
            ("flat_npy", "v1.npy"),
            ("rgba_npy", "v1.npy"),
            ("no_frames_npy", "v1.npy"),
            ("bigger_frames", "v1.npy"),
            ("shorter_clip", "v1.npy"),
            ("extra_video", "v3"),
            ("unicode", "vidéo 😀"),
            ("bad_png", "003.png"),
            ("empty", "empty"),
            ("missing", "missing"),
        ]
    ],
    ("evaluate-fvd_short_clips", "evaluate", [*FOLDERS, "fake_dir={d}/real", *FVD], "real/v0.npy"),
    ("evaluate-no_manifest", "evaluate", ["eval_dir={d}/no_manifest"], "no_manifest"),
    ("evaluate-two_modes", "evaluate", [*FOLDERS, "fake_dir={d}/real", "eval_dir={d}/real"], "eval_dir"),
    ("evaluate-no_mode", "evaluate", [], "eval_dir"),
    (
        "evaluate-batch_abc",
        "evaluate",
        [*FOLDERS, "fake_dir={d}/real", "evaluate.batch_size=abc"],
        "evaluate.batch_size",
    ),
    (
        "evaluate-batch_float",
        "evaluate",
        [*FOLDERS, "fake_dir={d}/real", "evaluate.batch_size=2.5"],
        "evaluate.batch_size",
    ),
    (
        "evaluate-batch_0",
        "evaluate",
        [*FOLDERS, "fake_dir={d}/real", "evaluate.batch_size=0"],
        "evaluate.batch_size",
    ),
    (
        "evaluate-first_abc",
        "evaluate",
        [*FOLDERS, "fake_dir={d}/real", "evaluate.first_frame=abc"],
        "evaluate.first_frame",
    ),
    (
        "evaluate-first_late",
        "evaluate",
        [*FOLDERS, "fake_dir={d}/real", "evaluate.first_frame=20"],
        "[20, 8)",
    ),
    (
        "evaluate-blank_grey",
        "evaluate",
        [*FOLDERS, "fake_dir={d}/real", "evaluate.blank=grey"],
        "evaluate.blank",
    ),
    ("evaluate-device", "evaluate", [*FOLDERS, "fake_dir={d}/real", "device=banana"], "device"),
    ("evaluate-metric", "evaluate", [*FOLDERS, "fake_dir={d}/real", "metric=[nope]"], "metric/nope"),
    (
        "evaluate-interpolation",
        "evaluate",
        [*FOLDERS, "fake_dir={d}/real", "evaluate.batch_size=${nope}"],
        "nope",
    ),
    (
        "evaluate-out_dir_file",
        "evaluate",
        [*FOLDERS, "fake_dir={d}/real", "evaluate.out_dir={d}/afile/x"],
        "afile",
    ),
    # sample: settings refused before (or as) the model is built
    ("sample-num_abc", "sample", [*RANDOM, "sample.num_samples=abc"], "sample.num_samples"),
    ("sample-num_float", "sample", [*RANDOM, "sample.num_samples=1.5"], "sample.num_samples"),
    ("sample-batch_0", "sample", [*RANDOM, "sample.batch_size=0"], "sample.batch_size"),
    ("sample-shard", "sample", [*RANDOM, "sample.shard=3", "sample.num_shards=2"], "sample.shard"),
    ("sample-range", "sample", [*RANDOM, "sample.start_index=3", "sample.stop_index=1"], "[3, 1)"),
    ("sample-format", "sample", [*RANDOM, "sample.video_format=avi"], "sample.video_format"),
    ("sample-split", "sample", [*RANDOM, "sample.split=nope"], "nope"),
    ("sample-obs_length", "sample", [*RANDOM, "inference.obs_length=20"], "obs_length"),
    ("sample-step_0", "sample", [*RANDOM, "inference.step_size=0"], "inference.step_size"),
    ("sample-device", "sample", [*RANDOM, "device=banana"], "device"),
    ("sample-model_size", "sample", [*RANDOM, "model.size=huge"], "huge"),
    ("sample-unknown_key", "sample", [*RANDOM, "sample.nope=1"], "sample.nope"),
    ("sample-out_dir_file", "sample", [*RANDOM, "sample.out_dir={d}/afile/x"], "afile"),
    # train
    ("train-max_steps", "train", [*TRAIN, "trainer.max_steps=abc"], "trainer.max_steps"),
    ("train-batch_0", "train", [*TRAIN, "dataset.batch_size=0"], "dataset.batch_size"),
    ("train-image_size", "train", [*TRAIN, "dataset.image_size=abc"], "dataset.image_size"),
    ("train-ckpt_missing", "train", [*TRAIN, "ckpt_path={d}/missing.ckpt"], "missing.ckpt"),
    ("train-output_dir_file", "train", [*TRAIN, "paths.output_dir={d}/afile/x"], "afile"),
    ("train-model", "train", [*TRAIN, "model=nope"], "model/nope"),
    # prepare
    ("prepare-no_raw_dir", "prepare", ["out_dir={d}/p"], "raw_dir"),
    ("prepare-raw_missing", "prepare", ["raw_dir={d}/missing", "out_dir={d}/p"], "missing"),
    ("prepare-format", "prepare", ["raw_dir={d}/real", "out_dir={d}/p", "format=zip"], "format"),
    ("prepare-workers", "prepare", ["raw_dir={d}/real", "out_dir={d}/p", "workers=abc"], "workers"),
    (
        "prepare-per_shard",
        "prepare",
        ["raw_dir={d}/real", "out_dir={d}/p", "videos_per_shard=0"],
        "videos_per_shard",
    ),
    ("prepare-splits", "prepare", ["raw_dir={d}/real", "out_dir={d}/p", "splits=[nope]"], "splits"),
    ("prepare-out_dir_file", "prepare", ["raw_dir={d}/real", "out_dir={d}/afile/x"], "afile"),
    # trust: data files are data, identities are checked, weights are what they claim
    ("evaluate-system_target", "evaluate", ["eval_dir={d}/system_manifest"], "os.system"),
    (
        "sample-other_seed",
        "sample",
        [*RANDOM, "seed=7", "sample.stop_index=1", "sample.out_dir={d}/sampled_random"],
        "seed",
    ),
    (
        "sample-ckpt_replaced",
        "sample",
        [*SAMPLE, "ckpt_path={d}/swap.ckpt", "sample.stop_index=1", "sample.out_dir={d}/sampled_ckpt"],
        "checkpoint_sha256",
    ),
    ("sample-no_ckpt", "sample", SAMPLE, "ckpt_path=random"),
    ("sample-empty_ckpt", "sample", [*SAMPLE, "ckpt_path={d}/empty.ckpt"], "empty.ckpt"),
    ("sample-random_ckpt", "sample", [*SAMPLE, "ckpt_path={d}/random.ckpt"], "random.ckpt"),
    (
        "sample-other_family",
        "sample",
        [*DATA_TINY, "model=interpolant", "ckpt_path={d}/fdm.ckpt"],
        "fdm.ckpt",
    ),
    ("evaluate-symlink_loop", "evaluate", [*FOLDERS, "fake_dir={d}/symloop"], "v1"),
    ("evaluate-corrupt_shard", "evaluate", ["eval_dir={d}/corrupt_shard_samples"], "shard_0001.hdf5"),
    (
        "sample-raw_on_prepared",
        "sample",
        [
            *DATA_TINY,
            "dataset=video_folder",
            "ckpt_path=random",
            "dataset.source.root={d}/prepared",
            "dataset.source.format=raw",
        ],
        "dataset.source.format=auto",
    ),
    (
        "evaluate-detector_impostor",
        "evaluate",
        [*FOLDERS, "fake_dir={d}/real", "metric=[fvd]", "metric.fvd.detector={d}/i3d_torchscript.pt"],
        "i3d_torchscript.pt",
    ),
    ("train-video_length_short", "train", [*TRAIN, "dataset.video_length=4"], "model.max_frames"),
    # compare
    ("compare-missing", "compare", ["{d}/missing"], "missing"),
    ("compare-empty_folder", "compare", ["{d}/empty"], "empty"),
    ("compare-bad_json", "compare", ["{d}/runs_in/bad_json"], "bad_json/metrics.json"),
    ("compare-empty_json", "compare", ["{d}/runs_in/empty_json"], "empty_json/metrics.json"),
    ("compare-list_json", "compare", ["{d}/runs_in/list_json"], "list_json/metrics.json"),
    ("compare-no_metrics", "compare", ["{d}/runs_in/no_metrics"], "no_metrics/metrics.json"),
    ("compare-text_value", "compare", ["{d}/runs_in/text_value"], "psnr.value"),
    ("compare-names", "compare", ["{d}/runs_in/good", "--names", "a,b"], "--names"),
    ("compare-out_file", "compare", ["{d}/runs_in/good", "--out", "{d}/afile/x"], "afile"),
]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "runs_out" not in p.parts}


def run_entry(entry: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run an entry point in-process as its console script would; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [f"videxp-{entry}", *args])
    code = 0
    try:
        ENTRIES[entry].main(args) if entry == "compare" else ENTRIES[entry].main()
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_cached_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEXP_CACHE", str(tmp_path / "cache"))  # no cached FVD / LPIPS weights join in
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for key in ("HYDRA_FULL_ERROR", "VIDEXP_DEBUG"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.parametrize(("case", "entry", "args", "culprit"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(data, case, entry, args, culprit, monkeypatch, capsys):
    run_dir = data / "runs_out" / case
    argv = [a.replace("{d}", str(data)) for a in args]
    if entry != "compare":
        argv.append(f"hydra.run.dir={run_dir}")
    before = _files(data)
    code, out, err = run_entry(entry, argv, monkeypatch, capsys)
    assert code not in (0, None), f"{case}: exit {code}\n{out}\n{err}"
    assert TRACEBACK not in out + err, err
    assert culprit in err, f"{case}: {culprit!r} not in the message:\n{err}"
    assert _files(data) == before, f"{case}: files left behind: {_files(data) ^ before}"
    assert not (data / "pwned").exists(), "a manifest ran a command"
    if err.startswith(f"videxp-{entry}: error: ") and entry != "compare":
        assert len(err.splitlines()) <= 4, err
        log = (run_dir / f"{entry}.log").read_text()
        assert culprit in log, f"{case}: the run's log does not record the failure"
        left = {p.name for p in run_dir.iterdir()} - {".hydra", f"{entry}.log"}
        assert not left, f"{case}: partial output {left}"


def test_debug_switch_shows_the_traceback(data, monkeypatch, capsys):
    monkeypatch.setenv("VIDEXP_DEBUG", "1")
    args = [f"real_dir={data}/real", f"fake_dir={data}/int16_npy", f"hydra.run.dir={data}/runs_out/debug"]
    code, _, err = run_entry("evaluate", args, monkeypatch, capsys)
    assert code == 1 and TRACEBACK in err and "int16" in err


@pytest.mark.parametrize(
    ("module", "args", "culprit"),
    [
        (
            "evaluate",
            ["real_dir={d}/real", "fake_dir={d}/corrupt_mp4", "hydra.run.dir={d}/runs_out/cli"],
            "v1.mp4",
        ),
        ("compare", ["{d}/runs_in/bad_json"], "bad_json/metrics.json"),
    ],
)
def test_console_prints_one_line(data, module, args, culprit):
    """The real console path: one `videxp-<entry>: error:` line on stderr, exit 1, nothing else."""
    env = {**os.environ, "VIDEXP_CACHE": str(data / "cache"), "TORCH_HOME": str(data / "torch")}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", f"videxp.{module}", *[a.replace("{d}", str(data)) for a in args]],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"videxp-{module}: error: ") and culprit in lines[0], (
        proc.stderr
    )
    assert TRACEBACK not in proc.stdout
