"""videxp's own errors: each names the file or config key at fault and what to do; the CLI prints it alone."""


class VidexpError(Exception):
    """Base of the errors videxp raises for bad input; the entry points print the message, no traceback.

    A message may span lines (they print as lines). `steps`, when set, is printed after it: what to do by
    hand (e.g. the archives to fetch).
    """

    steps: str = ""


class VideoError(VidexpError, ValueError):
    """A video (file or array) is missing frames, corrupt, or has the wrong dtype/shape/values."""


class CorruptDataError(VideoError):
    """Stored pixels fail their checksum, or a stored (compressed) chunk cannot be decoded."""


class SymlinkLoopError(VidexpError, OSError):
    """A symlink resolves back onto itself (a -> b -> a), so the file it names cannot be read."""


class ConfigError(VidexpError, ValueError):
    """A config value (or a data file describing one, e.g. a samples manifest) is missing, of the wrong type,
    out of range, or refused (the message names the file and the key)."""


class CheckpointError(VidexpError, ValueError):
    """A checkpoint is missing, empty, unreadable, of another model family, or not the one a run used."""


class WeightsError(VidexpError, RuntimeError):
    """A pretrained weight file is corrupt, not downloadable, or otherwise unusable."""


class RunFolderError(VidexpError, ValueError):
    """A run or output folder cannot be used: not writable, or it holds results made with other settings."""
