"""videxp: a Hydra-configured experiment framework for video generation research."""

__version__ = "0.1.0"
