"""The error a bad video raises, shared by every video reader and writer (videxp.video, videxp.data)."""


class VideoError(ValueError):
    """A video (file or array) is missing frames, corrupt, or has the wrong dtype/shape/values."""
