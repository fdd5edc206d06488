"""videxp-demo: a failed step ends the demo with one line naming the step and the step's own exit code."""

from __future__ import annotations

import subprocess

import pytest

from videxp import demo

TRACEBACK = "Traceback (most recent call last)"


@pytest.mark.parametrize(("code", "exit_code"), [(3, 3), (-9, 137)])
def test_a_failed_step_is_one_line_with_its_exit_code(code, exit_code, monkeypatch, capsys):
    calls = []

    def fake_run(cmd, *args, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, code if "videxp.sample" in cmd else 0)

    monkeypatch.setattr(demo.subprocess, "run", fake_run)
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--run-name", "x"])
    assert exit_.value.code == exit_code
    assert [c[2] for c in calls] == ["videxp.train", "videxp.sample"]  # evaluate never ran
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "videxp-demo: error: step 2/3 sample (videxp-sample) failed with exit code "
        f"{code}; its error is above"
    ]
    assert TRACEBACK not in out + err
