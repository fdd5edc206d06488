"""run_name pinning for the submitit launchers (hydra_plugins/videxp_launcher): requeues reuse a folder."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# Config keys whose value may change when a job is composed again later (run_name defaults to ${now:...}).
PINNED_KEYS = ("run_name",)
_PLAIN = re.compile(r"[\w./-]+")  # values that need no quoting in a Hydra override


def override_key(override: str) -> str:
    """'++a.b=1' -> 'a.b' (the config key an override sets)."""
    return override.split("=", 1)[0].lstrip("+~")


def quote(value: Any) -> str:
    """A resolved value as a Hydra override value that parses back to the same string."""
    text = str(value)
    if _PLAIN.fullmatch(text) and OverridesParser.create().parse_override(f"k={text}").value() == text:
        return text  # e.g. 2024-01-02_03-04-05 (not 1e3 or true, which would parse as a number or a bool)
    return "'" + text.replace("'", "\\'") + "'"


class PinningMixin:
    """Before submission, compose each job's config once, resolve the PINNED_KEYS there and append them to
    the job's overrides as literal values. submitit pickles those overrides with the job and resubmits them
    unchanged on preemption or timeout (`checkpoint()`): the job composed again at (re)start gets the same
    run folder."""

    pinned_keys: Sequence[str] = PINNED_KEYS

    def pin(self, overrides: Sequence[str]) -> list[str]:
        """Return `overrides` with `key=<value resolved now>` for every pinned key present in the config."""
        job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        pinned = [o for o in overrides if override_key(o) not in self.pinned_keys]
        for key in self.pinned_keys:
            try:
                value = OmegaConf.select(job_cfg, key)
            except Exception as err:  # e.g. a value that needs the job's own Hydra runtime
                log.warning("not pinning %s (%s): a requeued job resolves it again", key, err)
                value = None
            if value is None:
                pinned += [o for o in overrides if override_key(o) == key]
            else:
                pinned.append(f"{key}={quote(value)}")
        return pinned

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        for key in self.pinned_keys:  # resolved once here, all jobs share one ${now:} (resolver cache)
            with contextlib.suppress(Exception):
                OmegaConf.select(self.config, key)
        return super().launch([self.pin(o) for o in job_overrides], initial_job_idx)
