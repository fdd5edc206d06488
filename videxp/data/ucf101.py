"""UCF101 catalog: `root/UCF-101/<Class>/v_*.avi` + `ucfTrainTestlist` (classInd, train/test lists, CRLF)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from videxp.data.records import VideoRecord

__all__ = ["CLASSES", "EXPECTED_COUNTS", "LISTS_DIR", "read_class_index", "scan"]

log = logging.getLogger(__name__)

LISTS_DIR = "ucfTrainTestlist"
EXPECTED_COUNTS = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}  # (train, test) per official fold
# classInd.txt order: CLASSES[i] has 1-based index i + 1 (37 = HandstandPushups, 101 = YoYo).
CLASSES = (
    "ApplyEyeMakeup",
    "ApplyLipstick",
    "Archery",
    "BabyCrawling",
    "BalanceBeam",
    "BandMarching",
    "BaseballPitch",
    "Basketball",
    "BasketballDunk",
    "BenchPress",
    "Biking",
    "Billiards",
    "BlowDryHair",
    "BlowingCandles",
    "BodyWeightSquats",
    "Bowling",
    "BoxingPunchingBag",
    "BoxingSpeedBag",
    "BreastStroke",
    "BrushingTeeth",
    "CleanAndJerk",
    "CliffDiving",
    "CricketBowling",
    "CricketShot",
    "CuttingInKitchen",
    "Diving",
    "Drumming",
    "Fencing",
    "FieldHockeyPenalty",
    "FloorGymnastics",
    "FrisbeeCatch",
    "FrontCrawl",
    "GolfSwing",
    "Haircut",
    "Hammering",
    "HammerThrow",
    "HandstandPushups",
    "HandstandWalking",
    "HeadMassage",
    "HighJump",
    "HorseRace",
    "HorseRiding",
    "HulaHoop",
    "IceDancing",
    "JavelinThrow",
    "JugglingBalls",
    "JumpingJack",
    "JumpRope",
    "Kayaking",
    "Knitting",
    "LongJump",
    "Lunges",
    "MilitaryParade",
    "Mixing",
    "MoppingFloor",
    "Nunchucks",
    "ParallelBars",
    "PizzaTossing",
    "PlayingCello",
    "PlayingDaf",
    "PlayingDhol",
    "PlayingFlute",
    "PlayingGuitar",
    "PlayingPiano",
    "PlayingSitar",
    "PlayingTabla",
    "PlayingViolin",
    "PoleVault",
    "PommelHorse",
    "PullUps",
    "Punch",
    "PushUps",
    "Rafting",
    "RockClimbingIndoor",
    "RopeClimbing",
    "Rowing",
    "SalsaSpin",
    "ShavingBeard",
    "Shotput",
    "SkateBoarding",
    "Skiing",
    "Skijet",
    "SkyDiving",
    "SoccerJuggling",
    "SoccerPenalty",
    "StillRings",
    "SumoWrestling",
    "Surfing",
    "Swing",
    "TableTennisShot",
    "TaiChi",
    "TennisSwing",
    "ThrowDiscus",
    "TrampolineJumping",
    "Typing",
    "UnevenBars",
    "VolleyballSpiking",
    "WalkingWithDog",
    "WallPushups",
    "WritingOnBoard",
    "YoYo",
)
_CLIP = re.compile(r"_g(\d+)_c(\d+)\.avi$", re.IGNORECASE)


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of the non-blank lines; CRLF and trailing blanks tolerated."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: UCF101 list file not found")
    rows = enumerate(path.read_text(errors="replace").splitlines(), start=1)
    return [(n, line.split()) for n, line in rows if line.strip()]


def read_class_index(path: str | os.PathLike) -> dict[str, int]:
    """`classInd.txt` (`<1-based idx> <ClassName>` lines) -> {ClassName: 0-based label}."""
    path = Path(path)
    out: dict[str, int] = {}
    for n, fields in _lines(path):
        if len(fields) != 2 or not fields[0].isdigit():
            raise ValueError(f"{path}:{n}: expected `<index> <ClassName>`, got {' '.join(fields)!r}")
        out[fields[1]] = int(fields[0]) - 1
    if sorted(out.values()) != list(range(len(out))):
        raise ValueError(f"{path}: class indices are not 1..{len(out)} without gaps or repeats")
    if tuple(sorted(out, key=out.get)) != CLASSES:
        log.warning("UCF101: %s differs from the official 101-class classInd.txt", path)
    return out


def _videos_root(root: Path) -> Path:
    nested = root / "UCF-101"
    if nested.is_dir():
        return nested
    if any(e.is_dir() and e.name in CLASSES for e in os.scandir(root)):
        return root
    raise FileNotFoundError(
        f"{root}: no UCF-101/<Class>/ or <Class>/ video folders (unrar x UCF101.rar in {root})"
    )


def _check_counts(lists_dir: Path, fold: int, train: list, test: list, labels: dict[str, int]) -> None:
    """Warn when complete official lists do not hold the published train/test counts."""
    classes = {fields[0].replace("\\", "/").split("/")[0] for _, fields in train + test}
    if len(labels) != 101 or len(classes) != 101:
        log.warning(
            "UCF101: lists in %s cover %d classes (not all 101): train/test counts not validated",
            lists_dir,
            len(classes),
        )
        return
    expected = EXPECTED_COUNTS[fold]
    if (len(train), len(test)) != expected:
        log.warning(
            "UCF101: fold %d lists have %d/%d train/test clips, expected %d/%d",
            fold,
            len(train),
            len(test),
            *expected,
        )


def scan(
    root: str | os.PathLike, split: str, fold: int = 1, lists_dir: str | os.PathLike | None = None
) -> list[VideoRecord]:
    """Records of UCF101 `split` ('train' | 'val' | 'test') for `fold` (1-3), sorted by video_id.

    Videos live in `root/UCF-101/<Class>/` (or `root/<Class>/`); lists in `lists_dir` (default
    `root/ucfTrainTestlist`): `trainlist0<fold>.txt` (`Class/file.avi label`), `testlist0<fold>.txt`
    (`Class/file.avi`). UCF101 has no validation split: `val` returns the test clips. The label comes from
    `classInd.txt` (1-based -> 0-based) via the FOLDER part of each list path, never the file-name token
    (`HandstandPushups/v_HandStandPushups_g01_c01.avi`); a train-list label that disagrees is a ValueError.
    video_id = `Class/v_..._gGG_cCC`; meta {group, clip}. A listed clip that is missing is a
    FileNotFoundError.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"UCF101: unknown split {split!r} (known: train, val, test)")
    if fold not in EXPECTED_COUNTS:
        raise ValueError(f"UCF101: fold must be 1, 2 or 3, got {fold!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: UCF101 root folder not found")
    ldir = Path(lists_dir) if lists_dir is not None else root / LISTS_DIR
    if not ldir.is_dir():
        raise FileNotFoundError(
            f"{ldir}: not found (unzip UCF101TrainTestSplits-RecognitionTask.zip into {root})"
        )
    labels = read_class_index(ldir / "classInd.txt")
    train, test = _lines(ldir / f"trainlist0{fold}.txt"), _lines(ldir / f"testlist0{fold}.txt")
    _check_counts(ldir, fold, train, test, labels)
    list_path = ldir / f"{'train' if split == 'train' else 'test'}list0{fold}.txt"
    videos = _videos_root(root)
    records = []
    for n, fields in train if split == "train" else test:
        rel = fields[0].replace("\\", "/")
        cls = rel.split("/")[0]
        if "/" not in rel or cls not in labels:
            raise ValueError(
                f"{list_path}:{n}: {rel!r} is not `<Class>/<file>.avi` with a class from classInd.txt"
            )
        if split == "train" and len(fields) > 1 and fields[1] != str(labels[cls] + 1):
            raise ValueError(
                f"{list_path}:{n}: label {fields[1]} for {rel} but classInd.txt says {labels[cls] + 1}"
            )
        path = videos / rel
        if not path.is_file():
            raise FileNotFoundError(f"{list_path}:{n} lists {rel}, but {path} does not exist")
        clip = _CLIP.search(rel)
        meta = {"group": int(clip.group(1)), "clip": int(clip.group(2))} if clip else {}
        records.append(
            VideoRecord(
                video_id=rel[: -len(Path(rel).suffix)] if Path(rel).suffix else rel,
                path=str(path.absolute()),
                split=split,
                label=labels[cls],
                class_name=cls,
                meta=meta,
            )
        )
    return sorted(records, key=lambda r: r.video_id)
