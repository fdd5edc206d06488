"""How the entry points fail: a known error prints one message (no traceback) and exits 1; bugs keep theirs.

Known errors, printed as `<prog>: error: <message>` on stderr:

1. videxp's own (`videxp.errors.VidexpError` and subclasses: VideoError, ConfigError, CheckpointError, ...);
2. a ValueError or OSError raised by a `raise` statement in videxp's code: videxp's convention for a
   message written for a person (`raise ValueError(f"{path}: ...")`);
3. an OSError that names its file (permission denied, no such file, ...): the OS names the culprit;
4. OmegaConf's errors about a value the user set (a `???` value left unset, a broken interpolation, a
   value of the wrong type): they name the key;
5. Hydra's InstantiationException around one of the above (a constructor refusing its config): the
   wrapped error is printed.

Anything else (TypeError, KeyError, a library's ValueError raised deep in its own code) is a bug or a gap
to close where it happens: it keeps its traceback. `HYDRA_FULL_ERROR=1` or `VIDEXP_DEBUG=1` shows the full
traceback of every error. Every failure, known or not, is written with its traceback to the run's log
files (Hydra's `<run folder>/<task>.log`), so a failed run's log says why.
"""

from __future__ import annotations

import functools
import linecache
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from hydra.errors import InstantiationException
from omegaconf.errors import (
    GrammarParseError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    ValidationError,
)

from videxp.errors import VidexpError

_F = TypeVar("_F", bound=Callable)
_TRUE = {"1", "true", "yes", "on"}
_OMEGACONF_USER_ERRORS = (
    MissingMandatoryValue,
    InterpolationResolutionError,
    ValidationError,
    GrammarParseError,
)
log = logging.getLogger(__name__)


def debug_requested() -> bool:
    """True when HYDRA_FULL_ERROR or VIDEXP_DEBUG asks for full tracebacks."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HYDRA_FULL_ERROR", "VIDEXP_DEBUG"))


def _raised_by_videxp(err: BaseException) -> bool:
    """The innermost frame of `err`'s traceback is a `raise` statement in a videxp module."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    if not str(frame.f_globals.get("__name__", "")).startswith("videxp."):
        return False
    return linecache.getline(frame.f_code.co_filename, tb.tb_lineno).lstrip().startswith("raise")


def _unwrap(err: BaseException) -> BaseException:
    """The error Hydra's `instantiate` wrapped (its InstantiationException names only the target)."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def is_known(err: BaseException) -> bool:
    """Whether `err` is an error for a person (message only) rather than a bug (traceback); see above."""
    err = _unwrap(err)
    if isinstance(err, (VidexpError, *_OMEGACONF_USER_ERRORS)):
        return True
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return True
    return isinstance(err, (ValueError, OSError)) and _raised_by_videxp(err)


def message(err: BaseException) -> str:
    """The text to print for `err`: its message (lines kept), an OSError as `<file>: <reason>`, + steps."""
    err = _unwrap(err)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    key = getattr(err, "full_key", None) if isinstance(err, _OMEGACONF_USER_ERRORS) else None
    if key and key not in text:
        text = f"{key}: {text}"
    steps = getattr(err, "steps", "")
    return f"{text}\n{steps}" if isinstance(steps, str) and steps.strip() else text


def _log_to_files(prog: str, err: BaseException) -> None:
    """Record the failure with its traceback in the log files only (the console gets the short line)."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not handlers:
        return
    record = log.makeRecord(
        log.name,
        logging.ERROR,
        __file__,
        0,
        "%s failed: %s",
        (prog, message(err)),
        (type(err), err, err.__traceback__),
    )
    for handler in handlers:
        handler.handle(record)
        handler.flush()


def fail(prog: str, err: BaseException, code: int = 1) -> NoReturn:
    """Log `err` to the run's log files, print `<prog>: error: <message>` on stderr, exit with `code`."""
    _log_to_files(prog, err)
    sys.stdout.flush()
    print(f"{prog}: error: {message(err)}", file=sys.stderr, flush=True)
    sys.exit(code)


def reports_errors(prog: str) -> Callable[[_F], _F]:
    """Decorate an entry point's task function: known errors end in `fail(prog, err)`; others re-raise."""

    def deco(task: _F) -> _F:
        @functools.wraps(task)
        def wrapper(*args, **kwargs):
            try:
                return task(*args, **kwargs)
            except Exception as err:
                if debug_requested() or not is_known(err):
                    _log_to_files(prog, err)
                    raise
                fail(prog, err)

        return wrapper  # type: ignore[return-value]

    return deco
