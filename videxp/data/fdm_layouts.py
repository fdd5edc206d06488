"""FDM's released dataset layouts (Harvey et al. 2022): MineRL and GQN-Mazes npy folders, CARLA .pt + CSV."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from videxp.data.records import VideoRecord

__all__ = ["LAYOUTS", "scan"]

# name -> (train folder / list, test folder / list): FDM's video_datasets.py; FDM has no validation split
LAYOUTS = {
    "minerl": ("train", "test"),  # <root>/{train,test}/<i>.npy, uint8 [500, 64, 64, 3]
    "mazes_cwvae": ("train", "test"),  # <root>/{train,test}/<i>.npy, uint8 [300, 64, 64, 3]
    "carla_no_traffic": (
        "video_train.csv",
        "video_test.csv",
    ),  # <root>/video_<k>.pt, uint8 [1000, 128, 128, 3]
}
_INDEX_NPY = re.compile(r"^(\d+)\.npy$")


def _numbered_npy(folder: Path) -> list[Path]:
    """`<i>.npy` files of `folder` in index order; FDM reads `<i>.npy` for i < len(folder), so the indices
    must run 0..n-1 without gaps, and nothing else may lie there."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: FDM split folder not found")
    found, other = {}, []
    for path in folder.iterdir():
        match = _INDEX_NPY.match(path.name)
        if match:
            found[int(match.group(1))] = path
        elif not path.name.startswith("."):
            other.append(path.name)
    if other:
        raise ValueError(f"{folder}: FDM's layout holds only <i>.npy files; also found {sorted(other)[:3]}")
    if sorted(found) != list(range(len(found))):
        missing = sorted(set(range(max(found, default=-1) + 1)) - set(found))
        raise ValueError(f"{folder}: <i>.npy indices must run 0..{len(found) - 1}; missing {missing[:5]}")
    return [found[i] for i in range(len(found))]


def _carla_list(root: Path, name: str) -> list[Path]:
    """The `.pt` files a CARLA split CSV lists (rows `i,<path>`; FDM keeps each row holding '.pt' and takes
    the file name from its last path part, in `root`)."""
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FDM's CARLA split list not found")
    files = []
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            cell = next((c for c in row if ".pt" in c), None)
            if cell is None:
                continue  # the header (",path") and blank rows
            file = root / cell.strip().replace("\\", "/").split("/")[-1]
            if not file.is_file():
                raise FileNotFoundError(f"{path}:{n} lists {cell!r}, but {file} does not exist")
            files.append(file)
    if not files:
        raise ValueError(f"{path}: lists no .pt videos")
    return files


def scan(root: str | os.PathLike, split: str, layout: str) -> list[VideoRecord]:
    """Records of `split` of one FDM dataset (`layout`: minerl | mazes_cwvae | carla_no_traffic) in FDM's own
    order (file index; CSV order for CARLA). `val` reads the test split (FDM has none)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown FDM layout {layout!r}; known: {sorted(LAYOUTS)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r} (known: train, val, test)")
    root = Path(root)
    where = LAYOUTS[layout][0 if split == "train" else 1]
    files = _carla_list(root, where) if layout == "carla_no_traffic" else _numbered_npy(root / where)
    return [
        VideoRecord(video_id=f"{Path(where).stem}/{file.stem}", path=str(file.absolute()), split=split)
        for file in files
    ]
