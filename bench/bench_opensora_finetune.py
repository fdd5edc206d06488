"""Open-Sora fine-tuning cost: step time and peak memory of the tiny preset on CPU (W5's per-video loop),
and where CUDA is available, a full-size randomly initialised STDiT3-XL/2 forward/backward at 49 x 360p.

CPU: one fine-tuning step = VAE encode of a 45-frame clip (padded to 49) + T5 + STDiT3 forward/backward
+ AdamW, as `OpenSoraModule.training_step` does it; each setting runs in its own process so its peak
resident memory (ru_maxrss) is its own. GPU: STDiT3 alone on 360p latents [1, 16, 15, 45, 80] in bf16.
Run: .venv/bin/python bench/bench_opensora_finetune.py [--steps N] [--size 32] [--gpu-only]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_case(name: str, kwargs: dict, size: int, steps: int, warmup: int, out) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from videxp.models.opensora.module import OpenSoraModule
    from videxp.utils.seeding import torch_generator

    kwargs = {**kwargs, "training": {"condition_frames": 8, **kwargs.get("training", {})}}
    module = OpenSoraModule(size="tiny", max_frames=49, **kwargs).train()
    opt = module.configure_optimizers()["optimizer"]
    video = torch.rand(1, 45, 3, size, size) * 2 - 1
    built = rss_mib()
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        loss = module.flow_loss(video, ["a person waving"], torch_generator(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        module.on_train_batch_end(None, None, step)
    dt = (time.perf_counter() - t0) / steps
    clip, _ = module.model_clip(video)
    t1 = time.perf_counter()
    with torch.no_grad():
        module.vae.encode(clip, sample=True)
    encode = time.perf_counter() - t1
    trainable = sum(p.numel() for p in module.stdit.parameters() if p.requires_grad)
    out.put((name, dt, encode, rss_mib(), rss_mib() - built, trainable))


def run_cpu(args) -> None:
    cases = {
        "full": {},
        "full + grad ckpt": {"gradient_checkpointing": True},
        "full + EMA": {"ema": {"enabled": True}},
        "LoRA r16": {"lora": {}},
        "full + clip cache": {"training": {"cache_clip_latents": True}},  # naive_finetune's setting
    }
    ctx = mp.get_context("spawn")
    print(
        f"Open-Sora tiny fine-tuning step on CPU ({torch.get_num_threads()} threads): 45 frames at "
        f"{args.size}x{args.size} (-> 49), v2v_head on 8 observed frames, {args.steps} timed steps"
    )
    print(
        f"{'setting':<20} {'s/step':>8} {'VAE encode s':>13} {'peak RSS MiB':>13} {'step peak MiB':>14} "
        f"{'trainable':>10}"
    )
    for name, kw in cases.items():
        q = ctx.Queue()
        p = ctx.Process(target=cpu_case, args=(name, kw, args.size, args.steps, args.warmup, q))
        p.start()
        name, dt, encode, peak, step_peak, trainable = q.get()
        p.join()
        print(f"{name:<20} {dt:>8.3f} {encode:>13.3f} {peak:>13.0f} {step_peak:>14.0f} {trainable:>10,}")


def run_gpu(args) -> None:
    from videxp.models.opensora.stdit3 import STDiT3, stdit3_config

    dev = torch.device("cuda")
    print(
        f"\nSTDiT3-XL/2 (random init) forward/backward on {torch.cuda.get_device_name(dev)}, bf16, "
        "latents [1, 16, 15, 45, 80] = 49 frames at 360x640"
    )
    for ckpt in (False, True):
        torch.cuda.empty_cache()
        net = STDiT3(stdit3_config("xl")).to(dev, torch.bfloat16).train()
        net.enable_gradient_checkpointing(ckpt)
        x = torch.randn(1, 16, 15, 45, 80, device=dev)
        y = torch.randn(1, 1, 300, 4096, device=dev)
        t = torch.full((1,), 500.0, device=dev)
        torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for step in range(args.warmup + args.steps):
            torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            out = net(x, t, y, height=360.0, width=640.0)
            out.float().pow(2).mean().backward()
            net.zero_grad(set_to_none=True)
            torch.cuda.synchronize(dev)
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30
        label = "with" if ckpt else "without"
        print(f"  {label:>7} grad checkpointing: {sum(times) / len(times):.3f} s/step, peak {peak:.1f} GiB")
        del net, out
    # (weights alone: 1.208e9 params x 2 bytes = 2.25 GiB; grads the same again)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, default=32, help="frame side on CPU (multiple of 16)")
    ap.add_argument("--gpu-only", action="store_true")
    args = ap.parse_args()
    if not args.gpu_only:
        run_cpu(args)
    if torch.cuda.is_available():
        run_gpu(args)
    else:
        print("\nno CUDA device: the full-size 49 x 360p bf16 STDiT3 figure needs one (--gpu-only there)")


if __name__ == "__main__":
    main()
