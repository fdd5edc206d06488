"""FDM inference strategies: golden schedules from FDM's own code, properties, validation, plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE_OUTPUTS

from videxp.inference import STRATEGIES, Strategy, build_strategy, plot_schedule
from videxp.inference.generator import Capabilities, Generator
from videxp.inference.strategies import ScheduleError, Step, schedule, schedule_for

FIXTURE = REFERENCE_OUTPUTS / "fdm_strategies.json"
CASES = json.loads(FIXTURE.read_text())
SETTINGS = ("video_length", "obs_length", "max_frames", "step_size")


def _settings(case: dict) -> dict[str, int]:
    return {k: case[k] for k in SETTINGS}


def _case_id(case: dict) -> str:
    return f"{case['strategy']}-" + "/".join(str(case[k]) for k in SETTINGS)


def _assert_steps_equal(got: list[Step], expected: list[Step]) -> None:
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g[0] == e[0], f"step {n}: observed {g[0]} != FDM {e[0]}"
        assert g[1] == e[1], f"step {n}: target {g[1]} != FDM {e[1]}"
    assert len(got) == len(expected), f"{len(got)} steps, FDM has {len(expected)}"


# --- golden: FDM's own output ----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_fdm_fixture(case: dict) -> None:
    expected = [(s["observed"], s["target"]) for s in case["steps"]]
    got = list(build_strategy(case["strategy"], **_settings(case)))
    _assert_steps_equal(got, expected)
    for observed, target in got:
        assert all(type(i) is int for i in observed + target)


def test_fixture_covers_required_strategies() -> None:
    # every non-adaptive scheme of FDM's sampling_schemes.py, each a config of conf/inference
    fdm = {"autoreg", "long-range", "hierarchy-2", "hierarchy-3", "hierarchy-4", "hierarchy-5"}
    assert {c["strategy"] for c in CASES} >= fdm
    conf = Path(__file__).resolve().parents[2] / "videxp" / "conf" / "inference"
    assert {p.stem for p in conf.glob("*.yaml")} >= fdm


def test_long_range_worked_example() -> None:
    """Reference §1.8: long-range 40/10/20/10 keeps the latest 5 given frames as long-range context."""
    got = schedule("long-range", video_length=40, obs_length=10, max_frames=20, step_size=10)
    expected = [
        (list(range(10)), list(range(10, 20))),
        ([5, 6, 7, 8, 9, *range(15, 20)], list(range(20, 30))),
        ([5, 6, 7, 8, 9, *range(25, 30)], list(range(30, 40))),
    ]
    _assert_steps_equal(got, expected)


def test_hierarchy_retry_keeps_within_max_frames() -> None:
    """FDM's S-1 retry (hierarchy-2 40/0/20/10, steps 1 and 2) gives up one target and allows one more
    context frame (n_cond = K-(S-1) = 11 > K-S), so a step never exceeds max_frames but may fill it."""
    steps = schedule("hierarchy-2", video_length=40, obs_length=0, max_frames=20, step_size=10)
    assert [(len(o), len(t)) for o, t in steps[1:3]] == [(10, 9), (11, 9)]


def test_hierarchy_level_one_observes_repeats() -> None:
    """With 2 given frames, level 1 spreads 4 context slots over them: FDM emits [0, 0, 1, 1]."""
    strategy = build_strategy("hierarchy-2", video_length=16, obs_length=2, max_frames=8, step_size=4)
    observed, target = next(strategy)
    assert observed == [0, 0, 1, 1]
    assert target == [2, 6, 11, 15]


def test_autoreg_next_frame_with_large_context() -> None:
    """RIVER/PFI usage: autoreg with S=1 and K >= T observes every done frame."""
    steps = schedule("autoreg", video_length=6, obs_length=2, max_frames=10, step_size=1)
    assert steps == [([0, 1], [2]), ([0, 1, 2], [3]), ([0, 1, 2, 3], [4]), ([0, 1, 2, 3, 4], [5])]


@pytest.mark.parametrize("name", ["autoreg", "long-range", "hierarchy-2"])
def test_unconditional_start_is_clipped_to_video(name: str) -> None:
    steps = schedule(name, video_length=5, obs_length=0, max_frames=8, step_size=4)
    assert steps == [([], [0, 1, 2, 3, 4])]


# --- properties over a grid of settings --------------------------------------------------------

GRID = [  # (video_length, obs_length, max_frames, step_size)
    (40, 10, 20, 10),
    (16, 2, 8, 4),
    (20, 0, 8, 4),
    (40, 0, 20, 10),
    (300, 36, 20, 10),
    (1000, 36, 20, 10),
    (101, 5, 12, 3),
    (37, 0, 16, 5),
    (64, 3, 10, 7),
    (9, 1, 6, 2),
    (33, 32, 8, 4),
    (23, 1, 20, 17),
    (7, 0, 32, 4),
    (50, 7, 9, 2),
]
# Settings where FDM's own hierarchy code fails too (its S-1 retry reaches step size 1 and divides by
# zero); here build_strategy's dry run reports them as a ScheduleError.
FDM_STUCK = {("hierarchy-4", (9, 1, 6, 2)), ("hierarchy-5", (16, 2, 8, 4))}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("settings", GRID, ids=lambda s: "/".join(map(str, s)))
def test_schedule_properties(name: str, settings: tuple[int, int, int, int]) -> None:
    T, n_obs, K, S = settings
    if (name, settings) in FDM_STUCK:
        with pytest.raises(ScheduleError, match="increase max_frames"):
            build_strategy(name, video_length=T, obs_length=n_obs, max_frames=K, step_size=S)
        return
    if name.startswith("adaptive-hierarchy") and n_obs < 2:  # FDM's code loops forever there
        with pytest.raises(ValueError, match="obs_length=.* must be >= 2"):
            build_strategy(name, video_length=T, obs_length=n_obs, max_frames=K, step_size=S)
        return
    strategy = build_strategy(name, video_length=T, obs_length=n_obs, max_frames=K, step_size=S)
    assert iter(strategy) is strategy
    assert strategy.params() == {
        "name": name,
        "video_length": T,
        "obs_length": n_obs,
        "max_frames": K,
        "step_size": S,
    }
    done = set(range(n_obs))
    generated: list[int] = []
    for n, (observed, target) in enumerate(strategy):
        assert all(type(i) is int for i in observed + target), n
        assert set(observed) <= done, f"step {n} observes frames not done yet"
        assert target, f"step {n} has no target"
        assert len(set(target)) == len(target), f"step {n} repeats a target"
        assert all(0 <= i < T for i in target), f"step {n} targets {target}"
        assert not set(target) & done, f"step {n} regenerates done frames"
        # FDM counts repeated observed frames too; even through the S-1 retry it stays within K.
        assert len(observed) + len(target) <= K, f"step {n}: {len(observed)} + {len(target)} > {K}"
        generated += target
        done |= set(target)
    assert sorted(generated) == list(range(n_obs, T)), "every frame is given or generated exactly once"
    assert strategy.is_done()
    assert list(strategy) == []


# --- validation ----------------------------------------------------------------------------------

GOOD = {"video_length": 40, "obs_length": 10, "max_frames": 20, "step_size": 10}


@pytest.mark.parametrize(
    ("name", "changes", "match"),
    [
        ("autoreg", {"step_size": 20}, r"step_size=20 must be < max_frames=20"),
        ("autoreg", {"step_size": 25}, r"step_size=25 must be < max_frames=20"),
        ("long-range", {"step_size": 20}, r"step_size=20 must be < max_frames=20"),
        ("long-range", {"step_size": 19}, r"max_frames-step_size=1 must be >= 2"),
        ("hierarchy-2", {"step_size": 1}, r"step_size=1 must be >= 2"),
        ("hierarchy-3", {"step_size": 1}, r"step_size=1 must be >= 2"),
        ("autoreg", {"obs_length": 41}, r"obs_length=41 exceeds video_length=40"),
        ("hierarchy-2", {"obs_length": 40}, r"obs_length=40 equals video_length=40; there is nothing"),
        ("autoreg", {"obs_length": -1}, r"obs_length must be >= 0, got -1"),
        ("autoreg", {"video_length": 0}, r"video_length must be positive, got 0"),
        ("autoreg", {"max_frames": -3}, r"max_frames must be positive, got -3"),
        ("hierarchy-2", {"step_size": 0}, r"step_size must be positive, got 0"),
        ("autoreg", {"step_size": 2.5}, r"step_size must be an integer, got 2.5"),
        ("autoreg", {"max_frames": True}, r"max_frames must be an integer, got True"),
        # FDM's retry runs out: no room for context before and after the targets.
        ("hierarchy-2", {"max_frames": 3, "step_size": 2}, r"max_frames=3.*increase max_frames"),
        # hierarchy-4's next level starts past the only missing frames (FDM: min() of an empty list).
        (
            "hierarchy-4",
            {"video_length": 5, "obs_length": 2, "max_frames": 4, "step_size": 2},
            r"level 2 finds no frame to generate at step 1",
        ),
    ],
)
def test_invalid_settings_raise(name: str, changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_strategy(name, **{**GOOD, **changes})


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown inference strategy 'hierarchy'.*autoreg, hierarchy-2"):
        build_strategy("hierarchy", **GOOD)
    with pytest.raises(ValueError, match="unknown inference strategy"):
        schedule("nope", **GOOD)


def test_numpy_integer_settings_are_accepted() -> None:
    strategy = build_strategy("autoreg", **{k: np.int64(v) for k, v in GOOD.items()})
    assert all(type(v) is int for k, v in strategy.params().items() if k != "name")


def test_registry() -> None:
    required = {"autoreg", "long-range", "hierarchy-2", "hierarchy-3", "hierarchy-4", "hierarchy-5"}
    assert required <= set(STRATEGIES)
    for name, cls in STRATEGIES.items():
        assert issubclass(cls, Strategy) and cls.name == name


class _Stuck(Strategy):
    """Always re-targets frame 0: the base class must stop it instead of looping forever."""

    name = "stuck"

    def next_indices(self) -> Step:
        return [0], [0]


class _Peeking(Strategy):
    """Observes a frame that is not done yet."""

    name = "peeking"

    def next_indices(self) -> Step:
        return [self.video_length - 1], [max(self.done) + 1]


def test_step_without_new_frames_is_an_error() -> None:
    with pytest.raises(ScheduleError, match=r"step 0 generates no new frame"):
        list(_Stuck(video_length=4, obs_length=1, max_frames=2, step_size=1))


def test_observing_undone_frame_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"observes frames \[3\]"):
        list(_Peeking(video_length=4, obs_length=1, max_frames=2, step_size=1))


# --- plot ------------------------------------------------------------------------------------------


def test_plot_writes_png(tmp_path: Path) -> None:
    steps = schedule("hierarchy-2", video_length=40, obs_length=10, max_frames=20, step_size=10)
    out = plot_schedule(steps, 40, 10, tmp_path / "sub" / "schedule.png")
    assert out == tmp_path / "sub" / "schedule.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert [p.name for p in out.parent.iterdir()] == ["schedule.png"]  # no temp file left behind


def test_plot_rejects_out_of_range_indices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"step 0 has frame indices \[12\]"):
        plot_schedule([([0], [12])], 10, 1, tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())


def test_schedule_for_reads_the_resolved_inference_settings() -> None:
    params = {"name": "hierarchy-2", "video_length": 30, "obs_length": 4, "max_frames": 10, "step_size": 5}
    assert schedule_for(params) == schedule(
        "hierarchy-2", video_length=30, obs_length=4, max_frames=10, step_size=5
    )
    with pytest.raises(ValueError, match="lack \\['max_frames'\\].*resolve_inference"):
        schedule_for({**params, "max_frames": None})


class _Recorder(Generator):
    """Copies the last observed frame; records what the sampling loop hands over and asks, in order."""

    def __init__(self, max_frames: int = 6) -> None:
        self.capabilities = Capabilities(max_frames=max_frames)
        self.events: list[tuple] = []
        self.calls: list[int] | None = None

    def accept_schedule(self, steps, *, video_length, obs_length):
        self.events.append(("schedule", [tuple(map(tuple, s)) for s in steps], video_length, obs_length))
        self.calls = sorted({len(target) for _, target in steps})

    def generate(self, frames, observed, target, cond, seeds):
        self.events.append(("generate", tuple(observed), tuple(target)))
        return frames[:, -1:].expand(-1, len(target), -1, -1, -1).clone()

    def describe(self):
        self.events.append(("describe",))
        return {**super().describe(), "effective": self.calls}


def test_the_loop_hands_the_whole_schedule_over_once_then_records_describe(tmp_path: Path) -> None:
    import torch

    from videxp.inference.loop import run_sampling

    videos = [{"video": torch.rand(8, 1, 4, 4) * 2 - 1, "video_id": f"v{i}"} for i in range(3)]
    inference = {"name": "autoreg", "video_length": 8, "obs_length": 2, "step_size": 4, "max_frames": None}
    gen = _Recorder()
    summary = run_sampling(
        gen, videos, inference=inference, out_dir=tmp_path, batch_size=2, video_format="none",
        grid_videos=0, manifest={"model": {"arm": "x"}}, schedule_png=True,
    )  # fmt: skip
    steps = schedule("autoreg", video_length=8, obs_length=2, max_frames=6, step_size=4)
    assert gen.events[0] == ("schedule", [tuple(map(tuple, s)) for s in steps], 8, 2)
    assert gen.events[1] == ("describe",)  # after the hand-over, before any call
    assert [e[0] for e in gen.events[2:]] == ["generate"] * (2 * len(steps))  # 2 batches, no second hand-over
    model = json.loads((tmp_path / "samples" / "manifest.json").read_text())["model"]
    assert model["effective"] == [2, 4] and model["arm"] == "x"  # describe() with the caller's entries
    assert summary["manifest"]["inference"]["max_frames"] == 6
    assert (tmp_path / "schedule.png").stat().st_size > 0


def test_a_rejected_schedule_fails_before_any_call(tmp_path: Path) -> None:
    import torch

    from videxp.inference.loop import run_sampling

    class Refuses(_Recorder):
        def accept_schedule(self, steps, *, video_length, obs_length):
            raise ValueError("cannot run this schedule")

    gen = Refuses()
    videos = [{"video": torch.zeros(8, 1, 4, 4), "video_id": "v0"}]
    inference = {"name": "autoreg", "video_length": 8, "obs_length": 2, "step_size": 4, "max_frames": None}
    with pytest.raises(ValueError, match="cannot run this schedule"):
        run_sampling(gen, videos, inference=inference, out_dir=tmp_path, video_format="none")
    assert gen.events == [] and not (tmp_path / "samples").exists()
