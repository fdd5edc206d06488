"""HMDB51 catalog: `root/<class>/<clip>.avi` + `testTrainMulti_7030_splits` (1 train, 2 test, 0 unused)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from videxp.data.records import VideoRecord

__all__ = ["CLASSES", "SPLITS_DIR", "scan"]

log = logging.getLogger(__name__)

SPLITS_DIR = "testTrainMulti_7030_splits"
# The 51 official class folders (sorted; index = label on the full dataset).
CLASSES = (
    "brush_hair",
    "cartwheel",
    "catch",
    "chew",
    "clap",
    "climb",
    "climb_stairs",
    "dive",
    "draw_sword",
    "dribble",
    "drink",
    "eat",
    "fall_floor",
    "fencing",
    "flic_flac",
    "golf",
    "handstand",
    "hit",
    "hug",
    "jump",
    "kick",
    "kick_ball",
    "kiss",
    "laugh",
    "pick",
    "pour",
    "pullup",
    "punch",
    "push",
    "pushup",
    "ride_bike",
    "ride_horse",
    "run",
    "shake_hands",
    "shoot_ball",
    "shoot_bow",
    "shoot_gun",
    "sit",
    "situp",
    "smile",
    "smoke",
    "somersault",
    "stand",
    "swing_baseball",
    "sword",
    "sword_exercise",
    "talk",
    "throw",
    "turn",
    "walk",
    "wave",
)
_ARCHIVES = ("hmdb51_org", "hmdb51_sta", "test_train_splits")  # .rar archives that are not class archives
_TAG_SPLIT = {"1": "train", "2": "test", "0": None}


def _rar_error(root: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{root}: {what}. HMDB51 is a nested RAR archive; extract it fully:\n"
        f"  cd {root}\n"
        "  unrar x hmdb51_org.rar                        # -> 51 per-class <class>.rar files\n"
        '  for f in *.rar; do unrar x "$f"; done         # -> <class>/<clip>.avi folders\n'
        "  unrar x test_train_splits.rar                 # -> testTrainMulti_7030_splits/\n"
        "(without unrar: `unar -f <archive>.rar` or `bsdtar -xf <archive>.rar` for each step)"
    )


def _class_folders(root: Path, splits_dir: Path | None) -> dict[str, dict[str, Path]]:
    """{class: {clip file name: path}} built with os.scandir only (names hold `[ ] ! ( ) &`, never glob)."""
    folders: dict[str, dict[str, Path]] = {}
    rars = []
    for entry in os.scandir(root):
        if entry.name.startswith("."):
            continue
        is_splits = entry.name == SPLITS_DIR or (
            splits_dir is not None and Path(entry.path).absolute() == splits_dir.absolute()
        )
        if entry.is_dir() and not is_splits:
            clips = {e.name: Path(e.path).absolute() for e in os.scandir(entry.path) if e.is_file()}
            clips = {name: p for name, p in clips.items() if name.lower().endswith(".avi")}
            if clips:
                folders[entry.name] = clips
            else:
                log.warning("HMDB51: ignoring %s (no .avi files)", entry.path)
        elif entry.is_file() and entry.name.lower().endswith(".rar"):
            rars.append(entry.name[:-4])
    class_rars = sorted(set(rars) - set(_ARCHIVES) - set(folders))
    if class_rars:
        raise _rar_error(
            root, f"found class archives {', '.join(r + '.rar' for r in class_rars[:3])}... not extracted"
        )
    if not folders:
        what = (
            "hmdb51_org.rar is not extracted"
            if "hmdb51_org" in rars
            else "no <class>/<clip>.avi folders found"
        )
        raise _rar_error(root, what)
    return folders


def _default_splits_dir(root: Path) -> Path:
    for candidate in (root / SPLITS_DIR, root.parent / SPLITS_DIR):
        if candidate.is_dir():
            return candidate
    hint = " (extract test_train_splits.rar)" if (root / "test_train_splits.rar").exists() else ""
    raise FileNotFoundError(f"{root}: no {SPLITS_DIR}/ in it or beside it{hint}; pass splits_dir=")


def _read_split_file(path: Path) -> list[tuple[str, str]]:
    """[(clip name, tag)] from `<name> <tag>` lines (any whitespace, CRLF, trailing blanks tolerated)."""
    out = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or parts[-1] not in _TAG_SPLIT:
            raise ValueError(f"{path}:{number}: expected `<video name> <0|1|2>`, got {line!r}")
        out.append((" ".join(parts[:-1]), parts[-1]))
    return out


def _check_counts(splits_dir: Path, fold_files: dict[str, Path], classes: list[str]) -> None:
    """Warn unless each split file holds 70 train / 30 test clips (only when all 153 files exist)."""
    n_files = sum(1 for e in os.scandir(splits_dir) if e.name.endswith(".txt") and "_test_split" in e.name)
    if n_files != 153:
        log.info("HMDB51: %d split files in %s (not the full 153): 70/30 check skipped", n_files, splits_dir)
        return
    if len(classes) != 51:
        log.warning("HMDB51: %d class folders, the official set has 51", len(classes))
    for path in fold_files.values():
        counts = Counter(tag for _, tag in _read_split_file(path))
        if (counts["1"], counts["2"]) != (70, 30):
            log.warning(
                "HMDB51: %s has %d train / %d test clips, expected 70 / 30", path, counts["1"], counts["2"]
            )


def scan(
    root: str | os.PathLike,
    split: str,
    fold: int = 1,
    splits_dir: str | os.PathLike | None = None,
    include_unused: bool = False,
) -> list[VideoRecord]:
    """Records of HMDB51 `split` ('train' | 'val' | 'test') for `fold` (1-3), sorted by video_id.

    Tags in `<splits_dir>/<class>_test_split<fold>.txt`: 1 train, 2 test, 0 unused (`include_unused=True`
    adds tag-0 clips to train). HMDB51 has no validation split: `val` returns the test clips. Labels index
    the sorted class folder names (torchvision's convention). video_id = `<class>/<clip name without .avi>`.
    `splits_dir` defaults to `root/testTrainMulti_7030_splits` (or a sibling folder of that name). An
    un-extracted nested RAR is a FileNotFoundError with the extraction steps; a split entry whose clip is
    missing is a FileNotFoundError naming both.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"HMDB51: unknown split {split!r} (known: train, val, test)")
    if fold not in (1, 2, 3):
        raise ValueError(f"HMDB51: fold must be 1, 2 or 3, got {fold!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: HMDB51 root folder not found (it should hold brush_hair/, cartwheel/, ...)"
        )
    folders = _class_folders(root, None if splits_dir is None else Path(splits_dir))
    sdir = Path(splits_dir) if splits_dir is not None else _default_splits_dir(root)
    classes = sorted(folders)
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        log.warning("HMDB51: class folders not in the official 51: %s", ", ".join(unknown))
    fold_files = {c: sdir / f"{c}_test_split{fold}.txt" for c in classes}
    for cls, path in fold_files.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: split file for class {cls!r} fold {fold} not found in {sdir}")
    _check_counts(sdir, fold_files, classes)
    wanted = "test" if split == "val" else split
    records = []
    for label, cls in enumerate(classes):
        for name, tag in _read_split_file(fold_files[cls]):
            tag_split = _TAG_SPLIT[tag] or ("train" if include_unused else None)
            if tag_split != wanted:
                continue
            if name not in folders[cls]:
                raise FileNotFoundError(
                    f"{fold_files[cls]} lists {name!r}, but {root / cls / name} does not exist"
                )
            records.append(
                VideoRecord(
                    video_id=f"{cls}/{name[:-4] if name.lower().endswith('.avi') else name}",
                    path=str(folders[cls][name]),
                    split=split,
                    label=label,
                    class_name=cls,
                    meta={"tag": int(tag), "fold": fold},
                )
            )
    return sorted(records, key=lambda r: r.video_id)
