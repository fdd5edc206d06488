"""Tiny synthetic stand-ins for KTH, CLEVRER, HMDB51 and UCF101, written in the real on-disk formats."""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from videxp.data import kth, ucf101
from videxp.utils.io import atomic_path

__all__ = [
    "HMDB51_SHORT",
    "HMDB51_WIDE",
    "KTH_GAPPED",
    "KTH_THREE_SEGMENTS",
    "UCF101_SHORT_FRAMES",
    "moving_shapes",
    "write_avi",
    "write_clevrer",
    "write_hmdb51",
    "write_kth",
    "write_mp4",
    "write_ucf101",
]

# KTH: which stand-in videos get the irregular 00sequences.txt lines (when they are written).
KTH_GAPPED = "person02_jogging_d1"
KTH_THREE_SEGMENTS = "person21_handwaving_d2"
HMDB51_SHORT = 24  # frames of the last video of each class (< 45, too short for 45-frame clips)
HMDB51_WIDE = (240, 352)  # (H, W) of the last video of the last class
UCF101_SHORT_FRAMES = 29  # frames of the last clip written

_HMDB51_NAMES = {  # class -> clip names with the real meta-tag grammar and hostile characters
    "brush_hair": (
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
        "Brushing_Her_Hair__[_NEW_AUDIO_]_UPDATED!!!!_brush_hair_h_cm_np1_le_goo_1.avi",
        "Aussie_&_Pals_(2009)_brush_hair_f_nm_np1_fr_med_2.avi",
    ),
    "cartwheel": (
        "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_bad_0.avi",
        "Cartwheel__[HQ]_cartwheel_f_cm_np1_ri_med_1.avi",
        "Flic_&_Flac!!_cartwheel_f_nm_np1_fr_goo_2.avi",
    ),
    "wave": (
        "20060723sfjffbartsinger_wave_f_cm_np1_ba_med_0.avi",
        "Hi!_wave_u_cm_np1_fr_goo_1.avi",
        "Bye_[_2_]_wave_h_nm_np2_le_bad_2.avi",
    ),
}


# ----------------------------------------------------------------------------- content


def moving_shapes(frames: int, height: int, width: int, seed: int, gray: bool = False) -> np.ndarray:
    """Deterministic uint8 `[T, H, W, 3]`: drifting gradient, bouncing square and disc (R=G=B if gray)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(60, 256, size=(2, 3)).astype(np.uint8)
    if gray:
        colours[:] = colours[:, :1]
    size = max(4, min(height, width) // 4)
    limit = np.array([height - size, width - size], dtype=np.float64)
    pos = rng.uniform(0, limit, size=(2, 2))  # (y, x) of each shape's top-left corner
    vel = rng.uniform(1.5, 4.0, size=(2, 2)) * rng.choice([-1, 1], size=(2, 2))
    yy, xx = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    r = (size - 1) / 2
    disc = (np.arange(size)[:, None] - r) ** 2 + (np.arange(size)[None, :] - r) ** 2 <= r * r + r  # [S, S]
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        bg = (
            40 + 30 * np.sin((xx + 3 * t) / 17.0)[None, :] + 20 * np.cos((yy - 2 * t) / 11.0)[:, None]
        )  # [H, W]
        out[t] = bg.astype(np.uint8)[..., None]
        pos += vel
        bounced = (pos < 0) | (pos > limit)
        vel[bounced] = -vel[bounced]
        pos[:] = np.clip(pos, 0, limit)
        for k in range(2):
            y, x = (int(v) for v in pos[k])
            patch = out[t, y : y + size, x : x + size]  # [S, S, 3] view
            if k == 0:
                patch[:] = colours[k]
            else:
                patch[disc] = colours[k]
    return out  # [T, H, W, 3]


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


# ----------------------------------------------------------------------------- encoders


def write_avi(
    path: str | os.PathLike, frames: np.ndarray, fps: float, codec_tag: str = "XVID", max_b_frames: int = 0
) -> Path:
    """Write uint8 `[T, H, W, 3]` as AVI / MPEG-4 Part 2 (`mpeg4`), DivX/XviD FourCC, optional B-frames."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_tag = codec_tag
        stream.codec_context.max_b_frames = max_b_frames
        stream.codec_context.qscale = 4
        for frame in frames:  # [H, W, 3]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Write uint8 `[T, H, W, 3]` as MP4 / H.264 (`libx264`, yuv420p, fast preset)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "28", "preset": "ultrafast"}
        for frame in frames:  # [H, W, 3]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _write_text(path: Path, lines: Sequence[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode())


# ----------------------------------------------------------------------------- KTH


def _kth_segments(name: str, frames: int) -> list[tuple[int, int]]:
    """1-based inclusive ranges for the stand-in 00sequences.txt: 4 contiguous, gapped, or 3 segments."""
    if name == KTH_THREE_SEGMENTS:
        cuts = np.linspace(0, frames, 4).astype(int)
        return [(int(cuts[i]) + 1, int(cuts[i + 1])) for i in range(3)]
    cuts = np.linspace(0, frames, 5).astype(int)
    ranges = [(int(cuts[i]) + 1, int(cuts[i + 1])) for i in range(4)]
    if name == KTH_GAPPED:  # real lines look like `1-50, 120-170, 250-300, 362-415`
        ranges = [(a + (3 if i else 0), b - 2) for i, (a, b) in enumerate(ranges)]
    return ranges


def write_kth(
    root: str | os.PathLike,
    persons: Sequence[int] = (1, 2, 21, 22),
    actions: Sequence[str] = kth.CLASSES,
    scenarios: Sequence[int] = (1, 2),
    frames: int = 60,
    sequences_file: bool = True,
) -> Path:
    """KTH stand-in: `root/<action>/person{PP}_{action}_d{S}_uncomp.avi`, 160x120 gray 25 fps DX50 AVIs.

    `person13_handclapping_d3` is never written (as in the real set). With `sequences_file`, writes
    `root/00sequences.txt` with the real header, a `*missing*` line, 4-range lines, the gapped line
    `KTH_GAPPED` and the 3-range line `KTH_THREE_SEGMENTS` (when those videos are in the grid).
    """
    root = Path(root)
    lines = [
        "",
        "This database contains sequences of six classes of actions performed by",
        "25 subjects in four different conditions d1-d4 (see below).",
        "",
        "Training:   person11, 12, 13, 14, 15, 16, 17, 18",
        "Validation: person19, 20, 21, 23, 24, 25, 01, 04",
        "Test:       person22, 02, 03, 05, 06, 07, 08, 09, 10 ",
        "",
    ]
    for person in persons:
        for action in actions:
            for scenario in scenarios:
                name = f"person{person:02d}_{action}_d{scenario}"
                if name == "person13_handclapping_d3":
                    lines.append(f"{name}    *missing*")
                    continue
                video = moving_shapes(frames, 120, 160, _seed(name), gray=True)  # [T, 120, 160, 3]
                write_avi(root / action / f"{name}_uncomp.avi", video, fps=25, codec_tag="DX50")
                ranges = ", ".join(f"{a}-{b}" for a, b in _kth_segments(name, frames))
                lines.append(f"{name}\t\tframes\t{ranges}")
        lines.append("")
    if sequences_file:
        if not any("*missing*" in line for line in lines):
            lines.append("person13_handclapping_d3    *missing*")
        _write_text(root / "00sequences.txt", lines)
    return root


# ----------------------------------------------------------------------------- CLEVRER


def write_clevrer(
    root: str | os.PathLike, ids: Sequence[int] = (0, 1, 10000, 10001, 15000), frames: int = 128
) -> Path:
    """CLEVRER stand-in: `root/video_{train,validation,test}/video_{lo}-{hi}/video_{id:05d}.mp4`.

    H.264 MP4, 480x320, 25 fps, `frames` frames (128 in the real set) of coloured shapes.
    """
    root = Path(root)
    for vid in ids:
        folder = "video_train" if vid < 10000 else "video_validation" if vid < 15000 else "video_test"
        lo = vid // 1000 * 1000
        video = moving_shapes(frames, 320, 480, seed=vid)  # [T, 320, 480, 3]
        write_mp4(root / folder / f"video_{lo:05d}-{lo + 1000:05d}" / f"video_{vid:05d}.mp4", video, fps=25)
    return root


# ----------------------------------------------------------------------------- HMDB51


def hmdb51_tag(index: int, fold: int) -> int:
    """Stand-in split tag of the `index`-th clip of a class in `fold`: 1 train, 2 test, 0 unused (rotates)."""
    return (1, 2, 0)[(index + fold - 1) % 3]


def write_hmdb51(
    root: str | os.PathLike,
    classes: Sequence[str] = ("brush_hair", "cartwheel", "wave"),
    frames: int = 48,
    rar_placeholder: bool = False,
) -> Path:
    """HMDB51 stand-in: `root/<class>/<clip>.avi` (XVID, B-frames, 320x240, 30 fps) + split files.

    Split files go to `root/testTrainMulti_7030_splits/`. Three clips per class with hostile names
    (`[ ] ! ( ) &`, double underscores); clip i has tag `hmdb51_tag(i, fold)`; split lines end in trailing
    whitespace like the real files. The last clip of each class has `HMDB51_SHORT` frames; the last clip
    of the last class is `HMDB51_WIDE` (352x240). With `rar_placeholder`, each class is a `<class>.rar`
    file instead of a folder (only the outer archive extracted), to test the error message.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for c, cls in enumerate(classes):
        names = _HMDB51_NAMES.get(cls) or tuple(f"Clip_{i}_{cls}_f_cm_np1_fr_med_{i}.avi" for i in range(3))
        for fold in (1, 2, 3):
            lines = [f"{name} {hmdb51_tag(i, fold)} " for i, name in enumerate(names)]
            _write_text(root / "testTrainMulti_7030_splits" / f"{cls}_test_split{fold}.txt", lines)
        if rar_placeholder:
            (root / f"{cls}.rar").write_bytes(b"Rar!\x1a\x07\x00 placeholder, not a real archive")
            continue
        for i, name in enumerate(names):
            last = i == len(names) - 1
            h, w = HMDB51_WIDE if last and c == len(classes) - 1 else (240, 320)
            video = moving_shapes(HMDB51_SHORT if last else frames, h, w, _seed(name))  # [T, H, W, 3]
            write_avi(root / cls / name, video, fps=30, codec_tag="XVID", max_b_frames=2)
    return root


# ----------------------------------------------------------------------------- UCF101


def ucf101_file(cls: str, group: int, clip: int) -> str:
    """`Class/v_Class_gGG_cCC.avi`, with the real `HandStandPushups` spelling in that class's file names."""
    stem = "HandStandPushups" if cls == "HandstandPushups" else cls
    return f"{cls}/v_{stem}_g{group:02d}_c{clip:02d}.avi"


def write_ucf101(
    root: str | os.PathLike,
    classes: Sequence[str] = ("ApplyEyeMakeup", "HandstandPushups", "PlayingDaf", "YoYo"),
    groups: Sequence[int] = (1, 8, 15),
    clips: Sequence[int] = (1,),
    frames: int = 32,
) -> Path:
    """UCF101 stand-in: `root/UCF-101/<Class>/v_<Class>_gGG_cCC.avi` (XVID, B-frames, 320x240 25 fps).

    Writes `root/ucfTrainTestlist/` with the full real 101-line `classInd.txt` and `trainlist0k.txt`
    (`path label`) / `testlist0k.txt` (`path`) for folds 1-3 (test groups 1-7, 8-14, 15-21), all CRLF.
    The last clip written has `UCF101_SHORT_FRAMES` frames.
    """
    root = Path(root)
    label = {name: i + 1 for i, name in enumerate(ucf101.CLASSES)}
    files = [(cls, g, ucf101_file(cls, g, c)) for cls in classes for g in groups for c in clips]
    for j, (_, _, rel) in enumerate(files):
        n = UCF101_SHORT_FRAMES if j == len(files) - 1 else frames
        video = moving_shapes(n, 240, 320, _seed(rel))  # [T, 240, 320, 3]
        write_avi(root / "UCF-101" / rel, video, fps=25, codec_tag="XVID", max_b_frames=2)
    lists = root / "ucfTrainTestlist"
    _write_text(lists / "classInd.txt", [f"{i} {name}" for name, i in label.items()], "\r\n")
    for fold in (1, 2, 3):
        test_groups = range(7 * fold - 6, 7 * fold + 1)
        _write_text(lists / f"testlist0{fold}.txt", [rel for _, g, rel in files if g in test_groups], "\r\n")
        train = [f"{rel} {label[cls]}" for cls, g, rel in files if g not in test_groups]
        _write_text(lists / f"trainlist0{fold}.txt", train, "\r\n")
    return root


def write_fdm(
    root: str | os.PathLike,
    layout: str,
    counts: tuple[int, int] = (3, 2),
    frames: int = 24,
    size: int = 16,
) -> Path:
    """An FDM dataset in its released layout: `minerl` / `mazes_cwvae` as `<root>/{train,test}/<i>.npy`,
    `carla_no_traffic` as `<root>/video_<k>.pt` (a torch uint8 tensor [T, H, W, 3]) listed by
    `video_train.csv` / `video_test.csv` (header `,path`, rows `i,<path>`; the last videos are the test ones).
    `counts` = (train, test) videos of `frames` frames at `size`² (moving shapes)."""
    root = Path(root)
    videos = [moving_shapes(frames, size, size, _seed(f"{layout}/{k}")) for k in range(sum(counts))]
    if layout == "carla_no_traffic":
        root.mkdir(parents=True, exist_ok=True)
        for k, video in enumerate(videos):
            torch.save(torch.from_numpy(video), root / f"video_{k}.pt")
        train, test = range(counts[0]), range(counts[0], sum(counts))
        for name, ids in (("video_train.csv", train), ("video_test.csv", test)):
            rows = [",path"] + [f"{i},datasets/carla/no-traffic/video_{k}.pt" for i, k in enumerate(ids)]
            _write_text(root / name, rows)
        return root
    for split, ids in (("train", range(counts[0])), ("test", range(counts[0], sum(counts)))):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i, k in enumerate(ids):
            np.save(root / split / f"{i}.npy", videos[k])
    return root
