"""videxp-evaluate on folders that used to score silently wrong: symlink cycles, 16-bit PNG frames."""

from __future__ import annotations

import json
import os

import numpy as np
from conftest import compose_cfg
from video.test_frame_depth import wide_frames, write_png16

from videxp import evaluate
from videxp.video import scale_16_to_8, write_video


def _run(tmp_path, real, fake):
    cfg = compose_cfg("evaluate", [f"real_dir={real}", f"fake_dir={fake}", "metric=[psnr]"], tmp_path / "out")
    results = evaluate.run(cfg)
    return results, json.loads((tmp_path / "out" / "metrics.json").read_text())


def test_symlink_cycle_does_not_multiply_videos(tmp_path):
    rng = np.random.default_rng(0)
    real, fake = tmp_path / "real", tmp_path / "fake"
    for folder in (real, fake):
        folder.mkdir()
        for i in range(2):
            np.save(folder / f"v{i}.npy", rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
        os.symlink(".", folder / "cyc")  # ln -s . cyc
    results, doc = _run(tmp_path, real, fake)
    assert doc["num_real_files"] == 2 and doc["num_fake_files"] == 2
    assert results["psnr"]["num_videos"] == 2


def test_16bit_png_frames_match_their_8bit_conversion(tmp_path):
    wide = wide_frames(t=4)
    real = tmp_path / "real"
    (real / "clip").mkdir(parents=True)
    for t, frame in enumerate(wide):
        write_png16(real / "clip" / f"{t:03d}.png", frame)
    fake = tmp_path / "fake"
    write_video(fake / "clip", scale_16_to_8(wide))  # the 8-bit conversion, as 8-bit PNGs
    results, _ = _run(tmp_path, real, fake)
    assert results["psnr"]["value"] == 100.0  # identical frames: PSNR's cap (max_db)
    results, _ = _run(tmp_path, real, real)
    assert results["psnr"]["value"] == 100.0
