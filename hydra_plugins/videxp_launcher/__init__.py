"""Hydra plugins for hydra/launcher=slurm|local: submitit launchers that pin run_name (videxp/launcher.py)."""

from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin

from videxp.launcher import PinningMixin


class SlurmLauncher(PinningMixin, plugin.SlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher with run_name pinning (conf/hydra/launcher/slurm.yaml)."""


class LocalLauncher(PinningMixin, plugin.LocalLauncher):
    """hydra-submitit-launcher's LocalLauncher with run_name pinning (conf/hydra/launcher/local.yaml)."""
