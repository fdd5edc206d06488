"""`--help` of each entry point: the groups it uses, described from the YAML headers, keys, examples."""

from __future__ import annotations

import subprocess
import sys

import pytest

from videxp.help import CONF_DIR, TASKS, header


def run_help(task: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", f"videxp.{task}", "--help"], capture_output=True, text=True, check=True
    )
    return out.stdout


@pytest.mark.parametrize("task", ["train", "evaluate"])
def test_help_lists_the_groups_of_its_entry_point_with_descriptions(task):
    text = run_help(task)
    assert text.startswith(f"videxp-{task}: ")
    used = TASKS[task]["groups"]
    listed = [
        line.strip().rstrip(":") for line in text.splitlines() if line.startswith("  ") and line.endswith(":")
    ]
    assert listed == used
    if task == "train":
        assert "trainer" in listed and "inference" not in listed
    else:
        assert "trainer" not in listed and "model" not in listed
    # every option of a listed group, with the first line of its YAML header comment
    for option in sorted((CONF_DIR / "metric").glob("*.yaml")):
        line = next(x for x in text.splitlines() if x.strip().startswith(option.stem + " "))
        assert header(option)[:40] in line, option.stem
    assert "Most used keys" in text and "Examples:" in text
    assert all(example in text for example in TASKS[task]["examples"])
    assert "$TORCH_HOME" in text  # a literal $ in a description survives Hydra's template
    assert "shell-completion" not in text  # no wall of Hydra flags


def test_every_option_file_has_a_header_comment():
    groups = {g for t in TASKS.values() for g in t["groups"]}
    missing = [
        f"{g}/{p.name}" for g in sorted(groups) for p in (CONF_DIR / g).glob("*.yaml") if not header(p)
    ]
    assert not missing, f"config files without a header comment: {missing}"
