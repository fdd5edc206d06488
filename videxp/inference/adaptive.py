"""FDM's adaptive sampling schemes: per video, context frames chosen far apart in an LPIPS embedding space.

FDM (`sampling_schemes.py`, `AdaptiveSamplingSchemeBase`) keeps the targets of its autoregressive and
hierarchical schemes but chooses the observed frames per video: a few frames are always observed (the latest
one; for the hierarchy the done frames inside the target span, the two nearest before it and the nearest
after), and the rest of the K - S context is filled greedily with the done frame whose smallest embedding
distance to the frames chosen so far is largest. The embedding is LPIPS's (`videxp.metrics.lpips.LPIPS.embed`:
squared distances are LPIPS distances); the sampling loop hands it in. The schemes are registered in
`strategies` with the others (`adaptive-autoreg`, `adaptive-hierarchy-2|3`); this module, their shared part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Embed = Callable[[torch.Tensor], torch.Tensor]  # frames [N, C, H, W] in [-1, 1] -> [N, D]


def farthest_first(embs: torch.Tensor, count: int, always: Sequence[int]) -> list[int]:
    """Positions (into `embs` [n, D]) of `count` frames: `always` first, in order, then each time the frame
    whose smallest squared distance to the chosen ones is largest (ties: the lowest position), as FDM's
    `select_obs_indices` (which starts from `always[0]` and may repeat a frame when `count` exceeds n)."""
    chosen = [always[0]]
    nearest = np.full(len(embs), np.inf)
    for i in range(1, count):
        newest = embs[chosen[-1]]
        dist = ((embs - newest) ** 2).sum(dim=1).cpu().numpy()  # [n] to the frame chosen last
        nearest = np.minimum(nearest, dist)
        chosen.append(always[i] if i < len(always) else int(np.argmax(nearest)))
    return chosen


class Adaptive:
    """Mixin: after each step, `candidates` (done frames in FDM's order) and `always` (positions in it) say
    how each video's observed frames are chosen; the step's own `observed` lists the always-observed ones."""

    adaptive = True
    candidates: list[int]
    always: list[int]
    count: int  # observed frames per video (K - S of the step; less S when FDM's hierarchy retried)

    def choose(self, embed_row: Callable[[list[int]], torch.Tensor]) -> list[int]:
        """One video's observed frames of the last step, given a function embedding its frames by index."""
        embs = embed_row(self.candidates)  # [n, D]
        return [self.candidates[i] for i in farthest_first(embs, self.count, self.always)]
