"""videxp-sample: complete test videos with a model and an inference strategy, written to disk."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from videxp.inference.loop import run_sampling
from videxp.inference.schedule_plot import plot_schedule
from videxp.inference.strategies import schedule
from videxp.models.loading import build_generator, device_from
from videxp.utils.provenance import provenance

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Sample per `cfg.sample`; returns the loop's summary (paths, counts, manifest)."""
    device = device_from(cfg.device)
    datamodule = instantiate(cfg.dataset)
    dataset = datamodule.dataset(cfg.sample.split)
    generator, loaded = build_generator(cfg.model, cfg.ckpt_path, device)
    inference = OmegaConf.to_container(cfg.inference, resolve=True)
    manifest = {
        "format": "videxp.samples/1",
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "split": cfg.sample.split,
        "model": generator.describe(),
        "checkpoint": loaded.get("checkpoint"),
        "checkpoint_step": loaded.get("step"),
        "seed_rule": "derive_seed(seed, video, sample, step)",
        "provenance": provenance(device),
    }
    s = cfg.sample
    summary = run_sampling(
        generator,
        dataset,
        inference=inference,
        out_dir=s.out_dir,
        num_samples=s.num_samples,
        batch_size=s.batch_size,
        start_index=s.start_index,
        stop_index=s.stop_index,
        seed=cfg.seed,
        video_format=s.video_format,
        fps=s.fps,
        grid_videos=s.grid_videos,
        manifest=manifest,
    )
    if s.schedule_png:
        params = summary["manifest"]["inference"]
        steps = schedule(
            params["name"],
            **{k: params[k] for k in ("video_length", "obs_length", "max_frames", "step_size")},
        )
        plot_schedule(steps, params["video_length"], params["obs_length"], Path(s.out_dir) / "schedule.png")
    print(f"samples: {summary['samples_dir']} ({summary['written']} new, {summary['skipped']} done before)")
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
