"""videxp-prepare: decode, resize and store a dataset's splits as HDF5 shards (or npz / mp4) + manifest."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from videxp.data.download import ManualStepsRequired
from videxp.data.prepare import run
from videxp.utils.cli import fail, reports_errors
from videxp.utils.config_check import check_config


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
@reports_errors("videxp-prepare")
def main(cfg: DictConfig) -> None:
    check_config(cfg)
    try:
        run(cfg)
    except ManualStepsRequired as e:  # exit 2: not an error of the input, steps to do by hand
        fail("videxp-prepare", e, code=2)


if __name__ == "__main__":
    main()
