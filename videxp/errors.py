"""videxp's own errors: each names the file or config key at fault and what to do; the CLI prints it alone."""


class VidexpError(Exception):
    """Base of the errors videxp raises for bad input; the entry points print the message, no traceback.

    A message may span lines (they print as lines). `steps`, when set, is printed after it: what to do by
    hand (e.g. the archives to fetch).
    """

    steps: str = ""


class VideoError(VidexpError, ValueError):
    """A video (file or array) is missing frames, corrupt, or has the wrong dtype/shape/values."""


class ConfigError(VidexpError, ValueError):
    """A config value is missing, of the wrong type, or out of range (the message names the key)."""


class CheckpointError(VidexpError, ValueError):
    """A checkpoint file is missing, unreadable, or not one this model can load."""


class WeightsError(VidexpError, RuntimeError):
    """A pretrained weight file is corrupt, not downloadable, or otherwise unusable."""


class RunFolderError(VidexpError, PermissionError):
    """An output or run folder cannot be created or written (read-only, not a folder, ...)."""
