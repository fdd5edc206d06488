"""The official archives of each dataset: where they are, their published checksums, what they unpack into."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from videxp.data import hmdb51, kth

_HEX = re.compile(r"^[0-9a-f]+$")
ExtractKind = Literal["zip", "rar"] | None


def unsafe_name(name: str) -> bool:
    """True for absolute paths, drive letters and any `..` component (either slash)."""
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return any(part == ".." for part in re.split(r"[\\/]", name))


@dataclass(frozen=True)
class Archive:
    """One archive of a dataset.

    `md5` / `sha256`: published digests (checked when given). With neither, no checksum is published:
    the sha256 of the first copy seen is recorded in ``<raw_dir>/archives/checksums.json`` and later runs
    verify against it (trust on first use). `extract`: ``"zip"`` (unpacked here), ``"rar"`` (Python's
    stdlib cannot: `download_dataset` prints the manual steps) or None (kept as is). `into`: folder,
    relative to raw_dir, that receives the archive's contents; a zip whose only top-level entry is a
    folder of that same name is unpacked without doubling it. `done`: paths relative to raw_dir that
    exist once a RAR was unpacked by hand (then it is neither downloaded nor reported again).
    `nested`: the RAR holds further RARs (HMDB51) to unpack in `into`. `alt_urls` are tried, in order,
    when `url` fails with a network / HTTP error. `note` is added to the manual-download hint,
    `unpack_note` to the RAR steps.
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    extract: ExtractKind = "zip"
    into: str = "."
    done: tuple[str, ...] = ()
    nested: bool = False
    alt_urls: tuple[str, ...] = ()
    note: str = ""
    unpack_note: str = ""

    def __post_init__(self) -> None:
        if not self.filename or Path(self.filename).name != self.filename or self.filename in (".", ".."):
            raise ValueError(f"archive filename must be a bare file name, got {self.filename!r}")
        if self.extract not in ("zip", "rar", None):
            raise ValueError(
                f"archive {self.filename}: extract must be 'zip', 'rar' or None, got {self.extract!r}"
            )
        for name, length in (("md5", 32), ("sha256", 64)):
            value = getattr(self, name)
            if value is not None:
                value = value.lower()
                if len(value) != length or not _HEX.match(value):
                    raise ValueError(
                        f"archive {self.filename}: {name} must be {length} hex digits, got {value!r}"
                    )
                object.__setattr__(self, name, value)
        object.__setattr__(self, "done", tuple(self.done))
        object.__setattr__(self, "alt_urls", tuple(self.alt_urls))
        for rel in (self.into, *self.done):
            if unsafe_name(rel):
                raise ValueError(f"archive {self.filename}: {rel!r} must be a relative path without '..'")

    @property
    def published(self) -> bool:
        """True when a checksum is published (md5 or sha256 given)."""
        return self.md5 is not None or self.sha256 is not None


KTH_CLASSES = kth.CLASSES  # one archive per action
HMDB51_CLASSES = hmdb51.CLASSES  # one nested RAR per class
_HMDB51_BASE = "http://serre-lab.clps.brown.edu/wp-content/uploads/2013/10"
_UCF101_BASE = "https://www.crcv.ucf.edu/data/UCF101"
_CLEVRER_BASE = "http://data.csail.mit.edu/clevrer/videos"

ARCHIVES: dict[str, list[Archive]] = {
    # No checksums are published for KTH: each zip's sha256 is recorded on first use. Each zip holds the
    # class's AVIs flat, so `boxing.zip` is unpacked into `<raw_dir>/boxing/`.
    "kth": [
        Archive(
            url=f"http://www.nada.kth.se/cvap/actions/{c}.zip",
            filename=f"{c}.zip",
            into=c,
            alt_urls=(f"http://www.csc.kth.se/cvap/actions/{c}.zip",),
            note="The KTH links have been reported broken (Oct 2025); any copy of the official zip works.",
        )
        for c in KTH_CLASSES
    ],
    # MD5s as published with the dataset (NVIDIA NeMo's CLEVRER class); the zips hold the 1000-video
    # buckets `video_00000-01000/...`, unpacked into `<raw_dir>/video_{train,validation,test}/`.
    "clevrer": [
        Archive(
            url=f"{_CLEVRER_BASE}/train/video_train.zip",
            filename="video_train.zip",
            md5="8bcd8cda154e813ce009b2ee226abf7c",
            into="video_train",
        ),
        Archive(
            url=f"{_CLEVRER_BASE}/validation/video_validation.zip",
            filename="video_validation.zip",
            md5="948abe8ec22083de11796919cbee36eb",
            into="video_validation",
        ),
        Archive(
            url=f"{_CLEVRER_BASE}/test/video_test.zip",
            filename="video_test.zip",
            md5="3cfa74a01e8527026a589343a4d1fd9e",
            into="video_test",
        ),
    ],
    # No checksums are published for HMDB51 (recorded on first use). Both are RARs: manual steps.
    "hmdb51": [
        Archive(
            url=f"{_HMDB51_BASE}/hmdb51_org.rar",
            filename="hmdb51_org.rar",
            extract="rar",
            nested=True,
            done=tuple(HMDB51_CLASSES),
            note="The official page now also links the Hugging Face dataset Serrelab/hmdb51.",
        ),
        Archive(
            url=f"{_HMDB51_BASE}/test_train_splits.rar",
            filename="test_train_splits.rar",
            extract="rar",
            done=("testTrainMulti_7030_splits",),
            unpack_note="It holds testTrainMulti_7030_splits/ with 153 <class>_test_split{1,2,3}.txt files; "
            "if a tool unpacks them loose, move them into <raw_dir>/testTrainMulti_7030_splits/.",
        ),
    ],
    # No checksums are published for UCF101 (recorded on first use). The video RAR needs manual steps;
    # the splits zip holds `ucfTrainTestlist/` and is unpacked here.
    "ucf101": [
        Archive(
            url=f"{_UCF101_BASE}/UCF101.rar",
            filename="UCF101.rar",
            extract="rar",
            done=("UCF-101/ApplyEyeMakeup", "UCF-101/YoYo"),
            unpack_note="It holds UCF-101/<ClassName>/v_<ClassName>_gGG_cCC.avi (101 class folders).",
            note="If Python's download fails on the server's TLS certificate, fetch it with a browser or "
            "`wget --no-check-certificate`.",
        ),
        Archive(
            url=f"{_UCF101_BASE}/UCF101TrainTestSplits-RecognitionTask.zip",
            filename="UCF101TrainTestSplits-RecognitionTask.zip",
            into="ucfTrainTestlist",
        ),
    ],
}
