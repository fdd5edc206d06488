"""videxp-prepare: decode, resize and store a dataset's splits as HDF5 shards (or npz / mp4) + manifest."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from videxp.data.download import ManualStepsRequired
from videxp.data.prepare import PrepareError, run


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ManualStepsRequired as e:
        print(f"videxp-prepare: {e}\n{e.steps}", file=sys.stderr)
        sys.exit(2)
    except PrepareError as e:
        print(f"videxp-prepare: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
