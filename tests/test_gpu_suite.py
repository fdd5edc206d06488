"""bench/gpu_suite.py at --tiny sizes on CPU with every module but torch's install and its WHEELS blocked."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

SUITE = ROOT / "bench" / "gpu_suite.py"
NOT_ON_THE_GPU_MACHINE = ("hydra", "omegaconf", "av", "lightning")  # the suite must run without these

# Run a script (argv[2:]) with only the stdlib and the top-level modules named in argv[1] importable: any
# other import raises ModuleNotFoundError, and importlib.util.find_spec reports it absent, as on a machine
# where it is not installed. Names starting with "_" (compiled helpers of allowed packages) pass. Exits
# early unless NOT_ON_THE_GPU_MACHINE are blocked.
BLOCKER = """
import importlib.abc, importlib.util, runpy, sys
allowed = set(sys.argv[1].split(","))

def blocked(name):
    top = name.partition(".")[0]
    return not (top in allowed or top in sys.stdlib_module_names or top.startswith("_"))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if blocked(name):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: None if blocked(name) else find_spec(name, package)
for name in NOT_ON_THE_GPU_MACHINE:
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    sys.exit(f"{name} was not blocked")
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
""".replace("NOT_ON_THE_GPU_MACHINE", repr(NOT_ON_THE_GPU_MACHINE))


def load_suite():
    """bench/gpu_suite.py as a module (its top level imports only torch)."""
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def run_blocked(allowed: set[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-c", BLOCKER, ",".join(sorted(allowed)), str(SUITE), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def table(stdout: str) -> dict[tuple[str, str], dict[str, str]]:
    """(section, case) -> {column: cell} of the printed table."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = dict(zip(columns, (c.strip() for c in line.strip().strip("|").split("|"))))
        rows[(cells["section"], cells["case"])] = cells
    return rows


def number(cell: str) -> float:
    return float(re.match(r"[-+0-9.e]+", cell).group())


@pytest.fixture(scope="module")
def suite():
    return load_suite()


@pytest.fixture(scope="module")
def tiny_run(suite, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    allowed = {*suite.TORCH_INSTALL, *suite.WHEELS.values(), "videxp"}
    assert not allowed & set(NOT_ON_THE_GPU_MACHINE)
    args = ("--tiny", "--device", "cpu", "--compile-backend", "eager")
    proc = run_blocked(allowed, *args, cwd=tmp_path_factory.mktemp("gpu_suite"))
    return proc, table(proc.stdout)


def test_tiny_run_prints_every_row_without_hydra_omegaconf_av_or_lightning(tiny_run) -> None:
    proc, rows = tiny_run
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    expected = {("env", "GPU"), ("env", "torch"), ("fvd", "fp32"), ("fvd", "bf16"), ("fvd", "tf32")}
    expected |= {("frames", f"{m} {s}") for m in ("psnr", "ssim", "lpips") for s in ("64²", "256²")}
    expected |= {
        ("fdm", c) for c in ("bare loop", "videxp step", "bare loop + compile", "videxp step + compile")
    }
    expected |= {("stdit3", "fwd+bwd bf16"), ("stdit3", "fwd+bwd bf16 + grad ckpt")}
    expected |= {("wan", "fwd bf16"), ("framepack", "fwd bf16")}
    expected |= {("larp", c) for c in ("AR fwd bf16", "AR sample bf16, CFG 1.25")}
    expected |= {("larp", f"tokenizer {c}, autocast bf16") for c in ("encode", "decode")}
    assert set(rows) == expected
    assert rows[("env", "torch")]["size"] == torch.__version__
    assert rows[("fvd", "tf32")]["notes"].startswith("skipped")  # a CUDA setting


def test_tiny_run_numbers_are_sensible(tiny_run) -> None:
    _, rows = tiny_run
    for key, cells in rows.items():
        if key[0] == "env" or key == ("fvd", "tf32"):
            continue
        seconds, rate = number(cells["seconds"]), number(cells["throughput"])
        assert math.isfinite(seconds) and seconds > 0, (key, cells)
        assert math.isfinite(rate) and rate > 0, (key, cells)
        assert cells["peak GiB"] == "", (key, cells)  # no GPU memory on a CPU run
    fvd_fp32 = number(rows[("fvd", "fp32")]["notes"].removeprefix("FVD "))
    fvd_bf16, diff = re.fullmatch(
        r"FVD (\S+); abs. diff. vs fp32 (\S+)", rows[("fvd", "bf16")]["notes"]
    ).groups()
    assert math.isfinite(fvd_fp32) and fvd_fp32 > 0
    assert math.isclose(abs(float(fvd_bf16) - fvd_fp32), float(diff), rel_tol=0.01, abs_tol=1e-3)
    assert "x bare" in rows[("fdm", "videxp step")]["notes"]
    assert rows[("stdit3", "fwd+bwd bf16")]["notes"].endswith("M params")


def test_a_missing_package_costs_only_its_section(suite, tmp_path) -> None:
    allowed = {*suite.TORCH_INSTALL, *suite.WHEELS.values(), "videxp"} - {"diffusers"}
    proc = run_blocked(allowed, "--tiny", "--device", "cpu", "--sections", "stdit3", "wan", cwd=tmp_path)
    rows = table(proc.stdout)
    assert proc.returncode == 1
    assert number(rows[("stdit3", "fwd+bwd bf16")]["seconds"]) > 0
    assert rows[("wan", "failed")]["notes"].startswith(
        "missing module 'diffusers' (pip diffusers: run with --wheelhouse"
    )


def test_fdm_loss_is_the_lightning_modules_loss(suite) -> None:
    from videxp.models.fdm.module import FDMModule
    from videxp.utils.seeding import torch_generator

    module = FDMModule(size="tiny", image_size=16, max_frames=4)
    videos = torch.rand(2, 6, 3, 16, 16) * 2 - 1  # [B, T, C, H, W]
    ours = suite.fdm_loss(module.net, module.diffusion, videos, torch_generator(7), 4)
    theirs = module._loss(videos, torch_generator(7))
    assert torch.equal(ours, theirs)


def test_wheelhouse_install_and_list(suite) -> None:
    cmd = suite.install_command(Path("wheels"), ["numpy", "lpips"])
    assert cmd[1:] == [
        "-m",
        "pip",
        "install",
        "--no-index",
        "--no-deps",
        "--find-links",
        "wheels",
        "numpy",
        "lpips",
    ]
    pinned = suite.pinned_wheels()
    assert [p.split("==")[0] for p in pinned] == list(suite.WHEELS)
    assert all(re.fullmatch(r"[\w.-]+==[\w.+-]+", p) for p in pinned)
    assert suite.missing_wheels() == []  # the dev environment has every wheel the suite carries


def test_materialise_keeps_buffers_and_shapes(suite) -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(64, 32)
            self.norm = torch.nn.LayerNorm(32)
            self.register_buffer("table", torch.arange(5.0), persistent=False)

    with suite.meta_parameters():
        net = Net()
    assert all(p.is_meta for p in net.parameters()) and not net.table.is_meta
    net = suite.materialise(net, torch.device("cpu"), torch.bfloat16)
    assert net.lin.weight.dtype == torch.bfloat16 and net.lin.weight.shape == (32, 64)
    assert torch.equal(net.lin.bias, torch.zeros(32, dtype=torch.bfloat16))
    assert torch.equal(net.norm.weight, torch.ones(32, dtype=torch.bfloat16))
    assert torch.equal(net.table, torch.arange(5.0))
    assert 0.01 < float(net.lin.weight.detach().float().std()) < 0.05
