"""Which checkpoint a training run starts from: its own last.ckpt (else last.prev.ckpt), or `ckpt_path`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from videxp.callbacks.checkpoints import PREVIOUS
from videxp.errors import CheckpointError
from videxp.models.loading import RANDOM, is_lightning_checkpoint, resolve_checkpoint
from videxp.utils.io import write_json

log = logging.getLogger(__name__)

STARTED_FROM = "started_from.json"  # checkpoints/started_from.json: the ckpt_path a run was started from
BROKEN = "last.broken.ckpt"  # an unreadable last.ckpt, moved aside when the run falls back to last.prev.ckpt


def usable_last(ckpt_dir: Path) -> Path | None:
    """The run's checkpoint to resume from: last.ckpt, or (with a warning) last.prev.ckpt when last.ckpt is
    missing or unreadable (a write cut short), which is then moved aside as last.broken.ckpt. None when
    the run has neither; CheckpointError naming the files when neither is usable."""
    last, previous = ckpt_dir / "last.ckpt", ckpt_dir / PREVIOUS
    problems = []
    for path in (last, previous):
        if not path.is_file():
            continue
        try:
            if is_lightning_checkpoint(path):
                break
            problems.append(f"{path} is not a Lightning checkpoint")
        except CheckpointError as e:
            problems.append(str(e))
    else:
        if problems:
            raise CheckpointError(
                f"{ckpt_dir} holds no usable checkpoint to resume from ({'; '.join(problems)}); delete "
                f"{ckpt_dir} to train this run from the start, or give it a new run_name"
            )
        return None
    if path == previous:
        if last.is_file():
            os.replace(last, ckpt_dir / BROKEN)
        log.warning(
            "%s; resuming from the previous checkpoint %s instead (the unreadable file is kept as %s)",
            problems[0] if problems else f"{last} is missing",
            previous,
            BROKEN,
        )
    return path


def resume_checkpoint(output_dir: str | os.PathLike, ckpt_path: str | None) -> tuple[str | None, str | None]:
    """(Lightning ckpt to resume from, other weights file to start from) for the run in `output_dir`.

    The run's own checkpoints/last.ckpt wins (a rerun or requeue continues), if `ckpt_path` is not set or
    is the one the run was started from (checkpoints/started_from.json); another `ckpt_path` is refused
    (CheckpointError naming both). Else `ckpt_path`: a Lightning checkpoint resumes its full state, any
    other file (FDM's .pt) only initialises the weights. `ckpt_path=random` is the same as none.
    """
    ckpt_dir = Path(output_dir) / "checkpoints"
    given = None if ckpt_path in (None, RANDOM) else resolve_checkpoint(ckpt_path).resolve()
    own = usable_last(ckpt_dir)
    record = ckpt_dir / STARTED_FROM
    if own is not None:
        started = json.loads(record.read_text()).get("ckpt_path") if record.is_file() else None
        if given is not None and given != own.resolve() and str(given) != started:
            raise CheckpointError(
                f"ckpt_path={ckpt_path} ({given}) conflicts with this run's own checkpoint {own}, which a "
                f"rerun resumes from (the run was started from {started or 'no ckpt_path'}). Drop ckpt_path "
                "to continue the run, or give a new run_name to start one from that checkpoint"
            )
        log.info("resuming this run from its own checkpoint %s", own)
        return str(own), None
    if given is None:
        return None, None
    write_json(record, {"ckpt_path": str(given)})
    log.info("starting from ckpt_path %s", given)
    return (str(given), None) if is_lightning_checkpoint(given) else (None, str(given))
