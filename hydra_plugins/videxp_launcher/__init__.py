"""Hydra plugins for hydra/launcher=slurm|local: submitit launchers with sweep logic (videxp/launcher.py)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

from videxp.launcher import SweepMixin


class SlurmLauncher(SweepMixin, plugin.SlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher with videxp's sweeps (conf/hydra/launcher/slurm.yaml)."""


class LocalLauncher(SweepMixin, plugin.LocalLauncher):
    """hydra-submitit-launcher's LocalLauncher with videxp's sweeps (conf/hydra/launcher/local.yaml)."""


@dataclass
class VidexpSlurmConf(SlurmQueueConf):
    """The plugin's SLURM schema plus videxp's keys (the schema of conf/hydra/launcher/slurm.yaml)."""

    _target_: str = "hydra_plugins.videxp_launcher.SlurmLauncher"
    detach: bool = False  # return once the jobs are queued; videxp-status <sweep dir> follows them


ConfigStore.instance().store(
    group="hydra/launcher", name="videxp_slurm", node=VidexpSlurmConf(), provider="videxp"
)
