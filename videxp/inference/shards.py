"""Sharded sampling: (batch, sample index) work units, contiguous shards and rank-as-shard."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

RANK_ENVS = (("WORLD_SIZE", "RANK"), ("SLURM_NTASKS", "SLURM_PROCID"))  # torchrun, then srun


def batch_blocks(start: int, stop: int, batch_size: int) -> list[range]:
    """Contiguous blocks of video indices aligned to multiples of `batch_size` (so shards split cleanly)."""
    if batch_size < 1 or start < 0 or stop < start:
        raise ValueError(f"bad range/batch: start={start} stop={stop} batch_size={batch_size}")
    blocks, lo = [], start
    while lo < stop:
        hi = min((lo // batch_size + 1) * batch_size, stop)
        blocks.append(range(lo, hi))
        lo = hi
    return blocks


@dataclass(frozen=True)
class Unit:
    """One generator call: sample index `sample` of the videos `videos` (one batch block, in order)."""

    sample: int
    videos: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """Every unit of a sampling run and the slice of them that this shard owns."""

    start: int  # first video index
    stop: int  # one past the last video index that has an item
    num_samples: int  # samples per video
    total: int  # (video, sample) items in the run
    batch_size: int
    units: tuple[Unit, ...]  # all units of the run, in sampling order
    shard: int
    num_shards: int
    lo: int  # this shard owns units[lo:hi]
    hi: int

    @property
    def run_id(self) -> str:
        """Names the item set (not the shard layout): shards of one run share it."""
        return f"v{self.start}-{self.stop}_s{self.num_samples}_n{self.total}_b{self.batch_size}"

    @property
    def tag(self) -> str:
        return shard_tag(self.shard, self.num_shards)

    @property
    def mine(self) -> tuple[Unit, ...]:
        return self.units[self.lo : self.hi]

    def items(self) -> list[tuple[int, int]]:
        """This shard's (video, sample) items, sorted."""
        return sorted((v, u.sample) for u in self.mine for v in u.videos)


def shard_tag(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def plan_shard(
    start: int,
    stop: int,
    num_samples: int,
    batch_size: int,
    num_samples_total: int | None = None,
    num_shards: int = 1,
    shard: int = 0,
) -> Plan:
    """Split the items of videos [start, stop) × `num_samples` into `num_shards` contiguous shards.

    Items are ordered video-major ((v, 0), (v, 1), ..., (v+1, 0), ...); `num_samples_total` keeps the
    first that many (null: all). A unit is one (batch block, sample index) generator call, and shards
    are contiguous runs of whole units, so every shard makes exactly the calls of the unsharded run.
    """
    if num_samples < 1:
        raise ValueError(f"sample.num_samples must be >= 1, got {num_samples}")
    full = (stop - start) * num_samples
    total = full if num_samples_total is None else int(num_samples_total)
    if not 1 <= total <= full:
        raise ValueError(
            f"sample.num_samples_total={num_samples_total} must be in [1, {full}] "
            f"(videos [{start}, {stop}) × num_samples={num_samples})"
        )
    stop = start - (-total // num_samples)  # ceil: the last video may have fewer samples
    units = []
    for block in batch_blocks(start, stop, batch_size):
        for k in range(num_samples):
            videos = tuple(v for v in block if (v - start) * num_samples + k < total)
            if videos:
                units.append(Unit(k, videos))
    if isinstance(num_shards, bool) or int(num_shards) < 1:
        raise ValueError(f"sample.num_shards must be >= 1, got {num_shards}")
    if not 0 <= int(shard) < int(num_shards):
        raise ValueError(f"sample.shard={shard} is out of range for num_shards={num_shards} (0-based)")
    if num_shards > len(units):
        raise ValueError(
            f"num_shards={num_shards} exceeds the {len(units)} generator calls of this run "
            f"(batch_size={batch_size}, {total} items): some shards would be empty; use fewer shards"
        )
    lo, hi = shard * len(units) // num_shards, (shard + 1) * len(units) // num_shards
    return Plan(start, stop, num_samples, total, batch_size, tuple(units), shard, num_shards, lo, hi)


def rank_from_env(distributed: str | bool, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size) of this process: torchrun's RANK/WORLD_SIZE, else SLURM_PROCID/SLURM_NTASKS.

    `distributed`: auto (use them when present), off (always (0, 1)), on (required).
    """
    env = os.environ if env is None else env
    mode = {True: "on", False: "off"}.get(distributed, str(distributed))
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"sample.distributed must be auto | on | off, got {distributed!r}")
    if mode == "off":
        return 0, 1
    for world_key, rank_key in RANK_ENVS:
        if world_key in env:
            world, rank = int(env[world_key]), int(env.get(rank_key, -1))
            if world < 1 or not 0 <= rank < world:
                raise ValueError(f"bad rank environment: {world_key}={world}, {rank_key}={env.get(rank_key)}")
            return rank, world
    if mode == "on":
        raise ValueError(
            "sample.distributed=on but neither WORLD_SIZE/RANK nor SLURM_NTASKS/SLURM_PROCID is set"
        )
    return 0, 1


def resolve_shard(num_shards: int, shard: int, distributed: str | bool = "auto", env=None) -> tuple[int, int]:
    """(shard, num_shards) after rank-as-shard: each of W ranks takes its share of the configured shard."""
    rank, world = rank_from_env(distributed, env)
    return int(shard) * world + rank, int(num_shards) * world


# ----------------------------------------------------------------------------- locks
