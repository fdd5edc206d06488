"""`--help` of the entry points: the config groups each one uses, described by their YAML header comments."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parent / "conf"
WIDTH = 100  # characters per help line

# per entry point: what it does, the groups it reads, its most used keys, example commands
TASKS: dict[str, dict] = {
    "train": {
        "purpose": "fit a model with Lightning; checkpoints, logs and sampled metrics in outputs/train/<run>",
        "groups": [
            "experiment",
            "dataset",
            "model",
            "trainer",
            "logger",
            "callbacks",
            "metric",
            "debug",
            "cluster",
        ],
        "keys": {
            "trainer.max_steps": "training length in optimiser steps",
            "dataset.source.root": "where a real dataset lies (raw tree or videxp-prepare output)",
            "run_name": "outputs/train/<run_name>; reuse a name to resume that run",
            "ckpt_path": "start from / resume a checkpoint",
        },
        "examples": [
            "videxp-train model=fdm dataset=kth dataset.source.root=/data/kth",
            "videxp-train experiment=demo trainer.max_steps=2000",
            "videxp-train -m hydra/launcher=slurm cluster=<site> optim.lr=1e-4,2e-4",
        ],
    },
    "sample": {
        "purpose": "continue or generate test videos with a trained model; scores them when it finishes",
        "groups": ["experiment", "dataset", "model", "inference", "metric", "logger", "cluster"],
        "keys": {
            "ckpt_path": "a run folder, a .ckpt or an FDM .pt (random: untrained weights)",
            "sample.num_samples": "samples per video",
            "inference.obs_length": "observed frames given to the model",
            "sample.num_shards / sample.shard": "split one run over jobs (a finaliser merges the scores)",
        },
        "examples": [
            "videxp-sample ckpt_path=outputs/train/<run> inference=hierarchy-2",
            "videxp-sample -m experiment=kth_srvp ckpt_path=<run> sample.num_shards=4 sample.shard=0,1,2,3",
            "videxp-sample -m experiment=i2v_benchmark model=wan,framepack dataset.source.root=/data/hmdb51",
        ],
    },
    "evaluate": {
        "purpose": "score samples (or two video folders) with the selected metrics, beside trivial baselines",
        "groups": ["experiment", "dataset", "metric", "logger", "cluster"],
        "keys": {
            "eval_dir": "a samples/ folder written by videxp-sample",
            "real_dir / fake_dir": "or two folders of videos (frame metrics pair them by id)",
            "metric": "one or several: metric=[psnr,ssim,lpips,fvd]",
            "evaluate.drop_observed": "score only the generated frames (default true)",
        },
        "examples": [
            "videxp-evaluate eval_dir=outputs/sample/<run>/samples metric=[psnr,ssim,lpips]",
            "videxp-evaluate real_dir=ref/ fake_dir=gen/ metric=[fvd] metric.fvd.protocol=tats",
            "videxp-evaluate experiment=i2v_benchmark dataset.source.root=/data/hmdb51",
        ],
    },
}


def header(path: Path) -> str:
    """The first line of a YAML file's header comment (`# @package` lines skipped), '' without one."""
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            return ""
        text = text.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text
    return ""


def _short(text: str, room: int) -> str:
    """`text` cut to `room` characters (an ellipsis marks the cut)."""
    return text if len(text) <= room else text[: room - 1].rstrip() + "…"


def describe_groups(groups: list[str], conf_dir: Path = CONF_DIR) -> str:
    """One block per group: `group=option  description` per option file, from the header comments."""
    lines = []
    for group in groups:
        options = sorted((conf_dir / group).glob("*.yaml"))
        lines.append(f"  {group}:")
        width = max((len(p.stem) for p in options), default=0)
        for path in options:
            lines.append(f"    {path.stem:<{width}}  {_short(header(path), WIDTH - width - 6)}")
    return "\n".join(lines)


def render(task: str) -> str:
    """The help text of `videxp-<task>`, as a `hydra.help.template`."""
    t = TASKS[task]
    keys = "\n".join(f"  {k:<33} {v}" for k, v in t["keys"].items())
    text = "\n".join(
        [
            f"videxp-{task}: {t['purpose']}.",
            "",
            "Config groups (pick one with group=option; metric takes several, metric=[psnr,ssim]):",
            describe_groups(t["groups"]),
            "",
            "Most used keys (any key of the config can be set as key=value):",
            keys,
            "",
            "Examples:",
            *(f"  {e}" for e in t["examples"]),
            "",
            "Flags: -m / --multirun (sweeps: key=a,b), --cfg job (print the composed config), --info,",
            "--hydra-help (all of Hydra's flags). Docs: README.md, docs/.",
        ]
    )
    return text.replace("$", "$$")  # a string.Template for Hydra: a literal $ is $$


if not OmegaConf.has_resolver("videxp_help"):
    OmegaConf.register_new_resolver("videxp_help", render)  # hydra.help.template: ${videxp_help:<task>}
