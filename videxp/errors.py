"""The errors videxp raises for bad inputs, shared across packages (a handler prints them as one line)."""


class VideoError(ValueError):
    """A video (file or array) is missing frames, corrupt, or has the wrong dtype/shape/values."""


class CorruptDataError(VideoError):
    """Stored pixels fail their checksum, or a stored (compressed) chunk cannot be decoded."""


class SymlinkLoopError(OSError):
    """A symlink resolves back onto itself (a -> b -> a), so the file it names cannot be read."""
