"""One entry of a dataset catalog: which file, which frames, which class, which split."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")
DEFAULT_PROMPT = "a video of {name}"  # `{name}` = readable class name, `{class_name}` = the raw folder name


@dataclass(frozen=True)
class VideoRecord:
    """A video (or an annotated segment of one) in a dataset catalog.

    `path` is the source file, absolute. `frame_range` is ``[start, stop)`` in 0-based decode order
    within that file (None = the whole file). `label` is the 0-based class index where the dataset has
    classes. `meta` holds dataset-specific fields (KTH person/scenario, UCF101 group/clip, HMDB51 tag).
    """

    video_id: str
    path: str
    split: str
    label: int | None = None
    class_name: str | None = None
    frame_range: tuple[int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"{self.video_id}: split must be one of {SPLITS}, got {self.split!r}")
        if self.frame_range is not None:
            start, stop = self.frame_range
            if not 0 <= start < stop:
                raise ValueError(
                    f"{self.video_id}: frame_range must satisfy 0 <= start < stop, got {self.frame_range}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (frame_range as a list)."""
        d = asdict(self)
        d["frame_range"] = None if self.frame_range is None else list(self.frame_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoRecord:
        """Inverse of `to_dict`."""
        d = dict(d)
        if d.get("frame_range") is not None:
            d["frame_range"] = tuple(int(x) for x in d["frame_range"])
        return cls(**d)


def readable_class(class_name: str) -> str:
    """Class folder name as words: 'brush_hair' -> 'brush hair', 'ApplyEyeMakeup' -> 'apply eye makeup'."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|_+", " ", class_name).split()
    return " ".join(w.lower() for w in words)


def class_prompt(class_name: str | None, template: str = DEFAULT_PROMPT) -> str:
    """Text prompt for a clip of `class_name` from `template` ('' when the dataset has no classes)."""
    if class_name is None:
        return ""
    return template.format(name=readable_class(class_name), class_name=class_name)
