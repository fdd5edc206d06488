"""The errors videxp raises for bad inputs: each names the file, the key and the fix (all are ValueErrors)."""


class VideoError(ValueError):
    """A video (file or array) is missing frames, corrupt, or has the wrong dtype/shape/values."""


class ConfigError(ValueError):
    """A config or a data file describing one (a samples manifest) holds a value videxp refuses."""


class CheckpointError(ValueError):
    """A checkpoint is missing, empty, unreadable, of another model family, or not the one a run used."""


class RunFolderError(ValueError):
    """A run folder (samples, training) holds results made with other settings than this run's."""
