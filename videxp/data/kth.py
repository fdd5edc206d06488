"""KTH Actions catalog: `root/<action>/person{PP}_{action}_d{S}_uncomp.avi`, person splits, segments."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from videxp.data.records import VideoRecord

__all__ = ["CLASSES", "PROTOCOLS", "parse_sequences", "scan"]

log = logging.getLogger(__name__)

CLASSES = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
MISSING = "person13_handclapping_d3"  # absent from the official release; listed as `*missing*`
_FILE = re.compile(r"^person(\d{2})_([a-z]+)_d([1-4])_uncomp\.avi$")
_SEQ_LINE = re.compile(r"^(person\d{2}_[a-z]+_d[1-4])\s+frames\s+(.+?)\s*$")
_SEQ_MISSING = re.compile(r"^(person\d{2}_[a-z]+_d[1-4])\s+\*missing\*\s*$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")

# persons per split; `prediction` (SVG/SRVP/MCVD/ExtDM) has no validation split: val = test.
PROTOCOLS: dict[str, dict[str, tuple[int, ...]]] = {
    "prediction": {"train": tuple(range(1, 21)), "val": tuple(range(21, 26)), "test": tuple(range(21, 26))},
    "official": {
        "train": tuple(range(11, 19)),
        "val": (19, 20, 21, 23, 24, 25, 1, 4),
        "test": (22, 2, 3, 5, 6, 7, 8, 9, 10),
    },
}


def parse_sequences(path: str | os.PathLike) -> dict[str, list[tuple[int, int]]]:
    """`00sequences.txt` -> {`personPP_action_dS`: [(start, stop), ...]} 0-based half-open, in file order.

    The file's 1-based inclusive ranges (`1-95, 96-185, ...`, 3 or 4 per line, possibly with gaps) become
    `[start - 1, stop)`. Header prose is skipped, `*missing*` lines give no entry; a line that starts like
    an entry but does not parse is a ValueError naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: KTH sequences file not found (download 00sequences.txt from the KTH site)"
        )
    out: dict[str, list[tuple[int, int]]] = {}
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("person") or _SEQ_MISSING.match(line):
            continue
        match = _SEQ_LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: cannot parse KTH sequence line {raw!r}")
        ranges = []
        for part in match.group(2).split(","):
            r = _RANGE.match(part.strip())
            if r is None or not 1 <= int(r.group(1)) <= int(r.group(2)):
                raise ValueError(f"{path}:{number}: bad frame range {part.strip()!r} in {raw!r}")
            ranges.append((int(r.group(1)) - 1, int(r.group(2))))
        if match.group(1) in out:
            raise ValueError(f"{path}:{number}: {match.group(1)} is listed twice")
        out[match.group(1)] = ranges
    if not out:
        raise ValueError(f"{path}: no `personPP_action_dS frames a-b, ...` lines found")
    return out


def _find_videos(root: Path) -> dict[str, tuple[Path, int, str, int]]:
    """{`personPP_action_dS`: (path, person, action, scenario)} for every grammatical AVI under root."""
    videos = {}
    for action in CLASSES:
        folder = root / action
        if not folder.is_dir():
            log.warning("KTH: %s is missing (unzip %s.zip into %s)", folder, action, root)
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            match = _FILE.match(entry.name)
            if not entry.is_file() or entry.name.startswith("."):
                continue
            if match is None or match.group(2) != action or not 1 <= int(match.group(1)) <= 25:
                log.warning("KTH: ignoring %s (not person{01-25}_%s_d{1-4}_uncomp.avi)", entry.path, action)
                continue
            key = entry.name[: -len("_uncomp.avi")]
            videos[key] = (Path(entry.path).absolute(), int(match.group(1)), action, int(match.group(3)))
    if not videos:
        raise FileNotFoundError(
            f"{root}: no KTH videos found; expected root/<action>/personPP_<action>_dS_uncomp.avi "
            f"for actions {', '.join(CLASSES)} (unzip the six <action>.zip archives into {root})"
        )
    if MISSING in videos:
        log.info("KTH: %s is present although the official release lacks it", MISSING)
    return videos


def scan(
    root: str | os.PathLike,
    split: str,
    protocol: str = "prediction",
    sequences: str | os.PathLike | None = None,
) -> list[VideoRecord]:
    """Records of KTH `split` ('train' | 'val' | 'test') under `protocol`, sorted by video_id.

    `protocol='prediction'`: persons 1-20 train, 21-25 test; it has no validation split, so `val` returns
    the test persons. `'official'` (Schuldt et al. 2004): train 11-18, val 19-21, 23-25, 01, 04, test 22,
    02, 03, 05-10. `sequences=None`: one record per video (`person01_boxing_d1`, frame_range None); a path
    to `00sequences.txt`: one record per annotated segment (`person01_boxing_d1_s2`, 0-based half-open
    frame_range). The missing `person13_handclapping_d3` is expected; files off the naming grammar are
    ignored with a warning; a video without a sequences entry is a ValueError.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"KTH: unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    if split not in PROTOCOLS[protocol]:
        raise ValueError(f"KTH: unknown split {split!r} (known: train, val, test)")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: KTH root folder not found (it should hold boxing/, handclapping/, ...)"
        )
    persons = set(PROTOCOLS[protocol][split])
    segments = parse_sequences(sequences) if sequences is not None else None
    records = []
    for key, (path, person, action, scenario) in _find_videos(root).items():
        if person not in persons:
            continue
        meta = {"person": person, "scenario": scenario}
        common = {"path": str(path), "split": split, "label": CLASSES.index(action), "class_name": action}
        if segments is None:
            records.append(VideoRecord(video_id=key, meta=meta, **common))
            continue
        if key not in segments:
            raise ValueError(
                f"{path}: no entry for {key} in {sequences}; fix the sequences file or remove the video"
            )
        for s, frame_range in enumerate(segments[key], start=1):
            seg_meta = {**meta, "segment": s}
            records.append(
                VideoRecord(video_id=f"{key}_s{s}", frame_range=frame_range, meta=seg_meta, **common)
            )
    return sorted(records, key=lambda r: r.video_id)
