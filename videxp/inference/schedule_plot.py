"""Picture of an inference schedule: frames across, steps down, one colour per frame role."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from videxp.utils.io import atomic_path

# Cell codes, in legend order.
_ROLES = ("not yet", "already done", "observed in this step", "generated in this step")
_COLOURS = ("#f2f2f2", "#b0b0b0", "#2b7bba", "#e4572e")
_NOT_YET, _DONE, _OBSERVED, _GENERATED = range(4)


def plot_schedule(
    steps: Sequence[tuple[Sequence[int], Sequence[int]]],
    video_length: int,
    obs_length: int,
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Write a PNG of `steps` ((observed, target) index lists) to `path`, atomically; return the path.

    Row s shows step s: frames observed in it, generated in it, done earlier (given or generated)
    but unused, and not generated yet. Frames [0, obs_length) count as done before step 0.
    """
    # Imported here so that importing videxp.inference stays cheap; Agg canvas, no pyplot state.
    # deferred: matplotlib is heavy and only needed when a picture is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    grid = np.full((max(len(steps), 1), video_length), _NOT_YET, dtype=np.int8)
    done = np.zeros(video_length, dtype=bool)
    done[:obs_length] = True
    for s, (observed, target) in enumerate(steps):
        bad = [i for i in (*observed, *target) if not 0 <= i < video_length]
        if bad:
            raise ValueError(f"step {s} has frame indices {bad} outside [0, {video_length})")
        grid[s, done] = _DONE
        grid[s, list(observed)] = _OBSERVED
        grid[s, list(target)] = _GENERATED
        done[list(target)] = True

    n_rows = grid.shape[0]
    fig = Figure(figsize=(min(3 + 0.12 * video_length, 24), min(1.5 + 0.3 * n_rows, 24)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(
        grid,
        cmap=ListedColormap(_COLOURS),
        vmin=0,
        vmax=len(_COLOURS) - 1,
        aspect="auto",
        interpolation="nearest",
    )
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame index")
    ax.set_ylabel("step")
    ax.set_title(title or f"{len(steps)} steps, {video_length} frames, {obs_length} given")
    if video_length <= 60:  # thin grid lines between cells while they stay readable
        ax.set_xticks(np.arange(-0.5, video_length), minor=True)
        ax.set_yticks(np.arange(-0.5, n_rows), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    ax.legend(
        handles=[
            Patch(facecolor=c, edgecolor="black", linewidth=0.3, label=r) for c, r in zip(_COLOURS, _ROLES)
        ],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        frameon=False,
    )

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path
