"""FDM's adaptive schemes: golden per-video context choices from FDM's code, the loop's per-video calls."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REFERENCE_OUTPUTS

from videxp.inference import build_strategy
from videxp.inference.adaptive import farthest_first
from videxp.inference.generator import Capabilities, Generator
from videxp.inference.loop import complete_videos

GOLDEN = json.loads((REFERENCE_OUTPUTS / "fdm_adaptive_strategies.json").read_text())
SETTINGS = ("video_length", "obs_length", "max_frames", "step_size")


def fixture_videos(T: int) -> torch.Tensor:
    """The golden file's videos [2, T, 3, 4, 4] in [-1, 1] (its `source` says how they were made)."""
    return torch.rand(2, T, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1


def flat(videos: torch.Tensor, b: int):
    """The golden file's embedding: a frame's flattened pixels."""
    return lambda frames: videos[b, frames].flatten(1)  # [n, 48]


@pytest.mark.parametrize(
    "case", GOLDEN["cases"], ids=lambda c: f"{c['strategy']}-" + "/".join(str(c[k]) for k in SETTINGS)
)
def test_context_choices_equal_fdms(case):
    videos = fixture_videos(case["video_length"])
    strategy = build_strategy(case["strategy"], **{k: case[k] for k in SETTINGS})
    got = []
    for always, target in strategy:
        rows = [strategy.choose(flat(videos, b)) if always else [] for b in range(2)]
        got.append({"observed": rows, "target": target})
    assert got == case["steps"]


def test_farthest_first_starts_with_the_always_frames_then_spreads():
    embs = torch.tensor([[0.0], [1.0], [10.0], [2.0], [9.0]])  # [5, 1]
    assert farthest_first(embs, 3, always=[0]) == [
        0,
        2,
        3,
    ]  # 10 is farthest from 0; then 2 (dist 4 to both ends)
    assert (
        farthest_first(embs, 4, always=[1, 4])
        == [1, 4, 2, 3][:2] + farthest_first(embs, 4, always=[1, 4])[2:]
    )
    assert farthest_first(embs, 7, always=[0])[5:] == [0, 0]  # more than there are: FDM repeats the first


class _PerVideo(Generator):
    """Each generated frame = the mean of the observed frames + the row's seed / 1e9; records the calls."""

    def __init__(self) -> None:
        self.capabilities = Capabilities(max_frames=6)
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def generate(self, frames, observed, target, cond, seeds):
        self.calls.append((tuple(observed), frames.shape[0]))
        base = frames.mean(dim=1, keepdim=True)  # [B, 1, C, H, W]
        bump = torch.tensor(seeds, dtype=frames.dtype).view(-1, 1, 1, 1, 1) / 1e9
        return (base + bump).expand(-1, len(target), -1, -1, -1).clone()


def test_the_loop_chooses_per_video_and_a_video_does_not_depend_on_its_batch():
    params = {
        "name": "adaptive-autoreg",
        "video_length": 12,
        "obs_length": 4,
        "max_frames": 6,
        "step_size": 2,
    }
    videos = torch.rand(3, 12, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def embed(frames):  # frames [n, C, H, W] -> [n, D]
        return frames.flatten(1)

    gen = _PerVideo()
    together = complete_videos(
        gen, videos, params, seed=5, video_indices=[0, 1, 2], sample_index=0, embed=embed
    )
    assert any(size < 3 for _, size in gen.calls)  # the videos chose different context frames somewhere
    for b in range(3):
        alone = complete_videos(
            _PerVideo(), videos[b : b + 1], params, seed=5, video_indices=[b], sample_index=0, embed=embed
        )
        torch.testing.assert_close(alone[0], together[b], rtol=0, atol=0)
    with pytest.raises(ValueError, match="adaptive-autoreg chooses context frames by LPIPS distance"):
        complete_videos(gen, videos, params, seed=5, video_indices=[0, 1, 2], sample_index=0)


def test_adaptive_schemes_are_selectable_and_sample_end_to_end(tmp_path, alex_state):
    """inference=adaptive-autoreg with a tiny FDM: LPIPS-AlexNet picks each video's context frames."""
    from conftest import TINY, compose_cfg

    from videxp import sample
    from videxp.scoring.selection import CONF_DIR

    assert {"adaptive-autoreg", "adaptive-hierarchy-2", "adaptive-hierarchy-3"} <= {
        p.stem for p in (CONF_DIR / "inference").glob("*.yaml")
    }
    over = [*TINY, "ckpt_path=random", "inference=adaptive-autoreg", "inference.obs_length=4"]
    over += [
        "dataset.image_size=32",
        "sample.stop_index=2",
        "sample.video_format=none",
        "sample.grid_videos=0",
    ]
    over += ["metric=[psnr]", "device=cpu"]
    summary = sample.run(compose_cfg("sample", over, tmp_path))
    assert summary["written"] == 2
    manifest = json.loads((tmp_path / "samples" / "manifest.json").read_text())
    assert manifest["inference"]["name"] == "adaptive-autoreg"
