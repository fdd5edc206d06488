"""The benchmark's sampling step: one video per starting frame with one method, exported, then scored."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from videxp.inference.loop import MANIFEST, manifest_header, run_sampling
from videxp.models.loading import build_generator, device_from
from videxp.scoring.selection import CONF_DIR, build_metrics
from videxp.utils.io import write_json
from videxp.video import read_video, write_video
from videxp.workflows.i2v_benchmark.inputs import (
    GENERATED_DIR,
    METHODS_DIR,
    StartingFrames,
    prepare_inputs,
    read_rows,
)
from videxp.workflows.i2v_benchmark.summary import evaluate_method

log = logging.getLogger(__name__)

TIMINGS = ("as_generated", "resample")
METHOD_JSON = "method.json"  # per method: model settings, timing, output folders


def method_name(cfg: DictConfig) -> str:
    """This run's method label (its folder name under methods/ and generated_videos/).

    `benchmark.method` when set; otherwise the model's W1 label (`benchmark.labels`, e.g. model=wan ->
    wan2.1_i2v, else the model choice) plus one suffix per `model.*` command-line override, so a sweep
    `model.sampling.steps=10,20,50` gives wan2.1_i2v_steps10, wan2.1_i2v_steps20, wan2.1_i2v_steps50.
    """
    if cfg.benchmark.get("method"):
        return str(cfg.benchmark.method)
    if not HydraConfig.initialized() or not HydraConfig.get().runtime.choices.get("model"):
        raise ValueError("cannot tell which method this is: set benchmark.method=<name> (e.g. wan2.1_i2v)")
    hydra = HydraConfig.get()
    choice = str(hydra.runtime.choices["model"])
    label = str((cfg.benchmark.get("labels") or {}).get(choice, choice.replace("/", "_")))
    return label + "".join(override_suffix(o) for o in hydra.overrides.task if o.startswith("model."))


def override_suffix(override: str) -> str:
    """`model.sampling.steps=10` -> `_steps10`: the last key part and the value, filename-safe."""
    key, _, value = override.partition("=")
    text = key.rsplit(".", 1)[-1] + value
    return "_" + "".join(c if c.isalnum() or c in ".-" else "-" for c in text)


def model_preset(cfg: DictConfig) -> str | None:
    """The `model_preset` file this Hydra run merged (e.g. i2v_benchmark_framepack), if any."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get("model_preset")  # listed even when no file exists
    if choice is None or not (CONF_DIR / "model_preset" / f"{choice}.yaml").is_file():
        return None
    return str(choice)


def output_frames(num_frames: int, model_fps: float, fps: float, timing: str) -> list[int]:
    """Indices of the generated frames written to the evaluation video at `fps`.

    ``as_generated``: every frame, played at `fps` (W1: Wan's 81 frames at 16 fps written at 8 fps play at
    half speed); ``resample``: the frame nearest each tick of `fps` in the model's own time base, so motion
    runs at real speed like the reference clips (needs `fps` <= the model's fps).
    """
    if timing == "as_generated":
        return list(range(num_frames))
    if timing != "resample":
        raise ValueError(f"benchmark.generated_timing must be one of {TIMINGS}, got {timing!r}")
    if fps > model_fps:
        raise ValueError(f"benchmark.fps={fps} exceeds the model's {model_fps} fps: resample cannot upsample")
    ratio = model_fps / fps
    return [round(k * ratio) for k in range(int((num_frames - 1) / ratio) + 1)]


def playback_speed(frames: list[int], model_fps: float, fps: float) -> float:
    """Seconds of the model's time shown per second of playback (1 = real speed; W1's Wan videos: 0.5)."""
    step = (frames[-1] - frames[0]) / (len(frames) - 1) if len(frames) > 1 else 1.0
    return step * fps / model_fps


def export_generated(
    samples_dir: Path, out_dir: Path, rows: list[dict[str, Any]], frames: list[int], fps: float
) -> int:
    """Write each sample as <out_dir>/<category>/<stem>.mp4 with the chosen frames; returns videos written."""
    manifest = json.loads((samples_dir / MANIFEST).read_text())
    written = 0
    for entry in manifest["samples"]:
        row = rows[entry["video"]]
        target = out_dir / f"{row['id']}.mp4"
        source = samples_dir / entry["file"]
        if target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            continue  # exported after its sample was written: up to date
        video = read_video(source)  # [T, H, W, 3] uint8
        write_video(target, np.ascontiguousarray(video[frames]), fps=fps)
        written += 1
    return written


def run_benchmark_sample(cfg: DictConfig) -> dict[str, Any]:
    """Prepare the inputs (once per benchmark), generate with this run's method, export, and score it."""
    b = cfg.benchmark
    method = method_name(cfg)
    metrics = None
    if b.evaluate:  # build the metrics first: missing detector weights fail before hours of generation
        metrics = build_metrics(cfg)
    root = Path(b.root)
    inputs = prepare_inputs(cfg)
    device = device_from(cfg.device)
    generator, loaded = build_generator(cfg.model, cfg.ckpt_path, device)
    caps = generator.capabilities
    if "first_image" not in caps.conditioning:
        raise ValueError(
            f"experiment=i2v_benchmark needs an image-to-video model; {type(generator).__name__} does not "
            f"condition on a first image (conditioning: {list(caps.conditioning)})"
        )
    model_fps = float(caps.fps or cfg.sample.fps)
    T = int(cfg.inference.video_length)
    frames = output_frames(T, model_fps, float(b.fps), b.generated_timing)
    method_dir = root / METHODS_DIR / method
    summary = run_sampling(
        generator,
        StartingFrames(root, T),
        inference=OmegaConf.to_container(cfg.inference, resolve=True),
        out_dir=method_dir,
        num_samples=1,  # one video per starting frame (W1)
        batch_size=int(cfg.sample.batch_size),
        seed=int(cfg.seed),
        video_format=cfg.sample.video_format,
        fps=model_fps,
        grid_videos=0,
        manifest=manifest_header(
            {"benchmark": str(root.resolve()), "num_videos": inputs["num_videos"]}, b.split, loaded, device
        ),
    )
    generated_dir = root / GENERATED_DIR / method
    exported = export_generated(Path(summary["samples_dir"]), generated_dir, read_rows(root), frames, b.fps)
    timing = {
        "model_fps": model_fps,
        "generated_frames": T,
        "rule": b.generated_timing,
        "output_fps": float(b.fps),
        "output_frames": len(frames),
        "frame_indices": frames,
        "playback_speed": playback_speed(frames, model_fps, float(b.fps)),
        "reference": inputs["reference_resampling"],
    }
    write_json(
        method_dir / METHOD_JSON,
        {
            "method": method,
            "model_preset": model_preset(cfg),  # conf/model_preset/<name>.yaml, merged at composition
            "sampling": OmegaConf.to_container(cfg.model.get("sampling", {}), resolve=True),
            "model": summary["manifest"]["model"],
            "timing": timing,
            "samples_dir": summary["samples_dir"],
            "generated_dir": str(generated_dir),
        },
    )
    print(f"{method}: {summary['written']} generated, {exported} exported to {generated_dir}")
    if metrics is not None:
        evaluate_method(cfg, metrics, method, Path(cfg.paths.output_dir))
    return {**summary, "method": method, "generated_dir": str(generated_dir), "timing": timing}
