"""experiment=naive_finetune (workflow W5): base vs per-video fine-tuned continuations of the same clips."""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from videxp.inference.generator import Generator
from videxp.inference.loop import manifest_header, run_sampling, sample_name
from videxp.models.loading import build_module, device_from
from videxp.scoring.samples import score_samples
from videxp.scoring.selection import build_metrics, evaluate_settings
from videxp.utils.io import atomic_path, write_json
from videxp.workflows.base import Workflow

log = logging.getLogger(__name__)

ARMS = ("baseline", "finetuned")  # output folders: <out>/<arm>/samples, <out>/<arm>/metrics.json


def state_checksum(module: torch.nn.Module) -> str:
    """sha256 over the module's state dict (names, dtypes, shapes, bytes): equal iff the weights are equal."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class BaseWeights:
    """The module's state dict held in host memory (what `state_dict()` returns: the LoRA only for LoRA
    modules, the trained network only for Open-Sora), restored exactly before each video's fine-tuning, never
    reloaded from disk. Held on the CPU so a large model's copy does not take accelerator memory."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        self.checksum = state_checksum(module)

    @torch.no_grad()
    def restore(self) -> str:
        """Load the held weights back (strict); returns the checksum, which equals the base's or raises."""
        self.module.load_state_dict(self.state, strict=True)
        checksum = state_checksum(self.module)
        if checksum != self.checksum:
            raise RuntimeError("restoring the base weights did not give the base weights back")
        return checksum


def check_same_base(path: Path, checksum: str, checkpoint: str | None) -> None:
    """Record the base weights' checksum; a resumed run must start from the same weights."""
    if path.is_file():
        old = json.loads(path.read_text())
        if old["checksum"] != checksum:
            raise ValueError(
                f"{path}: this run's finished videos used other base weights ({old['checkpoint']}); "
                "use another run_name or the same model and checkpoint"
            )
        return
    write_json(path, {"checksum": checksum, "checkpoint": checkpoint})


def make_generator(module: Any, use_ema: bool) -> Generator:
    """The module's generator, over its raw (not EMA) weights where it has both and `use_ema` is false."""
    if "use_ema" in inspect.signature(module.generator).parameters:
        return module.generator(use_ema=use_ema)
    return module.generator()


def finetune_one(cfg: DictConfig, module: L.LightningModule, item: dict[str, Any]) -> float:
    """Fine-tune `module` on one clip for `naive_finetune.steps` steps (batch 1); returns the last loss."""
    nf = cfg.naive_finetune
    loader = DataLoader([item] * int(nf.steps) * int(nf.accumulate_grad_batches), batch_size=1)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        max_steps=int(nf.steps),
        max_epochs=-1,
        accumulate_grad_batches=int(nf.accumulate_grad_batches),
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        val_check_interval=None,
        default_root_dir=str(Path(nf.out_dir) / "trainer"),
    )
    trainer.fit(module, train_dataloaders=loader)
    loss = trainer.callback_metrics.get("train/loss")
    return float(loss) if loss is not None else float("nan")


def run_naive_finetune(cfg: DictConfig) -> dict[str, Any]:
    """(1) baselines for every video with the base weights; (2) per video: restore the base weights, fine-tune
    on that clip, generate its continuation; (3) score both arms against the clips. Resumable per video."""
    nf = cfg.naive_finetune
    out = Path(nf.out_dir)
    build_metrics(cfg)  # fail now, not after hours of fine-tuning, when a metric's weights are missing
    device = device_from(cfg.device)
    dataset = instantiate(cfg.dataset).dataset(cfg.sample.split, evaluation=True)
    stop = min(len(dataset), int(cfg.sample.start_index) + int(nf.num_videos))
    videos = range(int(cfg.sample.start_index), stop)
    torch.manual_seed(int(cfg.seed))  # a model without a checkpoint starts from the same random weights
    module, loaded = build_module(cfg.model, cfg.ckpt_path)
    if not isinstance(module, L.LightningModule) or not hasattr(module, "generator"):
        raise ValueError(
            f"experiment=naive_finetune needs a fine-tunable model; {type(module).__name__} is not"
        )
    module = module.to(device)
    base = BaseWeights(module)
    check_same_base(out / "base_weights.json", base.checksum, loaded.get("checkpoint"))
    inference = OmegaConf.to_container(cfg.inference, resolve=True)
    dataset_doc = OmegaConf.to_container(cfg.dataset, resolve=True)

    def sample(arm: str, block: range) -> dict[str, Any]:
        module.eval()
        generator = make_generator(module, bool(nf.use_ema))
        return run_sampling(
            generator,
            dataset,
            inference=inference,
            out_dir=out / arm,
            batch_size=int(cfg.sample.batch_size),
            start_index=block.start,
            stop_index=block.stop,
            seed=int(cfg.seed),
            video_format=cfg.sample.video_format,
            fps=cfg.sample.fps,
            grid_videos=0,
            manifest=manifest_header(
                dataset_doc,
                cfg.sample.split,
                loaded,
                device,
                model={"arm": arm},  # + generator.describe()
            ),
        )

    sample("baseline", videos)  # every baseline first, with the base weights loaded once
    log_path = out / "finetune_log.jsonl"
    for v in videos:
        if (out / "finetuned" / "samples" / f"{sample_name(v, 0)}.npy").is_file():
            continue  # finished before an interruption
        checksum = base.restore()
        module.train()
        loss = finetune_one(cfg, module, dataset[v])
        sample("finetuned", range(v, v + 1))
        with open(log_path, "a") as f:  # one line per finished video
            f.write(json.dumps({"video": v, "base_checksum": checksum, "last_loss": loss}) + "\n")
        log.info("video %d: fine-tuned %d steps (last loss %.4g) and sampled", v, nf.steps, loss)
    base.restore()  # leave the module as it was given

    results = {}
    settings = evaluate_settings(cfg)
    for arm in ARMS:
        results[arm] = score_samples(
            out / arm / "samples", build_metrics(cfg), settings, out / arm, device, extra={"label": arm}
        )
    summary = write_tables(out, results)
    summary["base_checksum"] = base.checksum
    write_json(out / "naive_finetune.json", summary)
    print(f"naive fine-tuning: {out / 'naive_finetune.json'}, per video: {out / 'per_video.csv'}")
    return summary


def _per_video(result: dict[str, Any]) -> dict[int, float]:
    """Mean over frames per video from a frame metric's result (its per-video means)."""
    return {int(v): float(m) for v, m in zip(result["videos"], result["per_video"], strict=True)}


def write_tables(out: Path, results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """per_video.csv (per video and metric: baseline, fine-tuned, difference) and metrics.json (both arms'
    averages per metric and their difference); returns the latter."""
    metrics = [m for m in results["baseline"] if "per_video" in results["baseline"][m]]
    per_video = {m: {arm: _per_video(results[arm][m]) for arm in ARMS} for m in metrics}
    videos = sorted(set().union(*(per_video[m]["baseline"] for m in metrics))) if metrics else []
    with atomic_path(out / "per_video.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", *[f"{m}_{col}" for m in metrics for col in (*ARMS, "delta")]])
        for v in videos:
            row: list[Any] = [v]
            for m in metrics:
                b, t = per_video[m]["baseline"].get(v), per_video[m]["finetuned"].get(v)
                row += [b, t, None if b is None or t is None else t - b]
            writer.writerow(["" if c is None else c for c in row])
    averaged = {}
    for m in results["baseline"]:
        base, tuned = results["baseline"][m]["value"], results["finetuned"][m]["value"]
        higher = bool(results["baseline"][m].get("higher_is_better", True))
        averaged[m] = {
            "baseline": base,
            "finetuned": tuned,
            "delta": tuned - base,  # fine-tuned minus baseline
            "higher_is_better": higher,
            "finetuned_better": (tuned > base) if higher else (tuned < base),
        }
    summary = {
        "metrics": averaged,
        "num_videos": len(videos),
        "per_video": str(out / "per_video.csv"),
        "metrics_files": {arm: str(out / arm / "metrics.json") for arm in ARMS},
    }
    write_json(out / "metrics.json", summary)  # W5's results/metrics.json: both arms side by side
    return summary


class NaiveFinetune(Workflow):
    """experiment=naive_finetune: videxp-sample runs both arms and scores them (no separate evaluation)."""

    name = "naive_finetune"

    def sample(self, cfg: DictConfig) -> dict[str, Any]:
        return run_naive_finetune(cfg)
