"""How entry points fail (videxp/utils/cli.py), the config type check, writable folders and file modes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cfg
from omegaconf import OmegaConf

from videxp.data.hdf5 import ShardWriter
from videxp.errors import ConfigError, RunFolderError, VideoError, VidexpError
from videxp.utils import cli
from videxp.utils.config_check import check_config, type_errors
from videxp.utils.io import atomic_path, current_umask, ensure_writable, write_json, write_npy, write_text
from videxp.video import write_filmstrip, write_video


def _raise(err: Exception) -> None:
    raise err


def _caught(fn, *args) -> BaseException:
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the test inspects whatever was raised
        return e
    raise AssertionError("nothing raised")


def test_known_errors_are_videxps_own_or_raised_by_videxp_code():
    assert cli.is_known(_caught(_raise, ConfigError("x")))  # a videxp class, raised anywhere
    assert cli.is_known(_caught(ensure_writable, "/proc/no/such/dir", "k"))  # videxp's RunFolderError
    assert cli.is_known(_caught(open, "/no/such/file"))  # an OSError that names its file
    assert cli.is_known(_caught(lambda: OmegaConf.create({"a": "${nope}"}).a))  # names the key
    # a ValueError raised by a library's own code, a TypeError, a KeyError: bugs or gaps, keep the traceback
    assert not cli.is_known(_caught(np.zeros(3).reshape, 2))
    assert not cli.is_known(_caught(lambda: np.load(__file__, allow_pickle=False)))
    assert not cli.is_known(_caught(_raise, TypeError("bug")))
    assert not cli.is_known(_caught(lambda: {}["k"]))


def test_a_known_error_prints_one_message_and_exits_1(tmp_path, capsys):
    handler = logging.FileHandler(tmp_path / "run.log")
    logging.getLogger().addHandler(handler)
    try:

        @cli.reports_errors("videxp-x")
        def task() -> None:
            raise VideoError("a.mp4: first line\nsecond line")

        with pytest.raises(SystemExit) as info:
            task()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert err == "videxp-x: error: a.mp4: first line\nsecond line\n" and out == ""
    log = (tmp_path / "run.log").read_text()
    assert "videxp-x failed: a.mp4: first line" in log and "Traceback" in log  # the log keeps the trace


def test_bugs_and_debug_keep_the_traceback(monkeypatch):
    @cli.reports_errors("videxp-x")
    def bug() -> None:
        raise TypeError("a bug")

    @cli.reports_errors("videxp-x")
    def known() -> None:
        raise ConfigError("bad value")

    with pytest.raises(TypeError):
        bug()
    monkeypatch.setenv("VIDEXP_DEBUG", "1")
    with pytest.raises(ConfigError):
        known()


def test_message_of_an_oserror_and_of_steps():
    err = _caught(open, "/no/such/file")
    assert cli.message(err) == "/no/such/file: No such file or directory"
    steps = VidexpError("cannot fetch x")
    steps.steps = "download x by hand into y"
    assert cli.message(steps) == "cannot fetch x\ndownload x by hand into y"


def test_config_types_name_the_key_and_the_type(tmp_path):
    cfg = compose_cfg("sample", ["sample.num_samples=abc", "evaluate.batch_size=2.5", "seed=1"], tmp_path)
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    text = str(info.value)
    assert "sample.num_samples='abc': expected an integer, got str" in text
    assert "evaluate.batch_size=2.5: expected an integer, got float" in text
    assert "seed" not in text
    assert type_errors(compose_cfg("train", ["dataset.image_size=[24,32]"], tmp_path)) == []


def test_every_shipped_config_passes_the_check(tmp_path):
    for name in ("train", "sample", "evaluate", "prepare"):
        assert type_errors(compose_cfg(name, [], tmp_path)) == [], name
    for exp in sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "experiment").glob("*.yaml")):
        assert type_errors(compose_cfg("sample", [f"experiment={exp}"], tmp_path)) == [], exp


def test_ensure_writable_names_the_folder_and_the_key(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        RunFolderError, match=r"file/out: cannot write there .*choose another sample.out_dir="
    ):
        ensure_writable(tmp_path / "file" / "out", "sample.out_dir")
    assert ensure_writable(tmp_path / "new" / "dir", "k").is_dir()
    assert list((tmp_path / "new" / "dir").iterdir()) == []  # the probe file is gone


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_ensure_writable_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(RunFolderError, match="ro: cannot write there"):
            ensure_writable(ro, "evaluate.out_dir")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        clip = np.zeros((4, 8, 8, 3), np.uint8)
        write_json(tmp_path / "a.json", {"x": 1})
        write_npy(tmp_path / "a.npy", clip)
        write_text(tmp_path / "a.txt", "x")
        for suffix in (".gif", ".mp4", ".npy"):
            write_video(tmp_path / f"v{suffix}", clip)
        write_video(tmp_path / "frames", clip)  # a folder of PNGs
        write_filmstrip(tmp_path / "strip.png", [clip])
        with ShardWriter(tmp_path / "h5") as writer:
            writer.add(clip)
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 12 and any(p.suffix == ".hdf5" for p in files)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
