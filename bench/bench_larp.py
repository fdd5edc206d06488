"""LARP: AR sampler tokens/s (its KV cache vs recomputing the prefix each step) and class-conditional videos/s
end to end (AR sampling with CFG + tokenizer decode) through videxp's LARPGenerator.

Random weights (timing only). `--size tiny` (CPU default): the fixture-size networks, 16 tokens per video;
`--size paper` (GPU): LARP-L-long tokenizer + llama-abs-LP AR (632M), 1024 tokens per 16x128x128 video, AR in
bf16 and the tokenizer decoding in fp16, as LARP's sample.py runs them.
Run: .venv/bin/python bench/bench_larp.py [--device cuda --size paper --batch 16]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import ROOT  # noqa: F401 - puts the checkout on sys.path

from videxp.models.larp.module import LARPModule
from videxp.utils.seeding import row_generators


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def recompute_sample(ar, c: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """What a sampler without a KV cache does: the whole prefix through the network for every token."""
    seq = torch.zeros(len(c), 0, dtype=torch.long, device=c.device)
    for _ in range(ar.max_seq_length):
        logits = ar(idx=seq, cond_idx=c)[0][:, -1].float()  # [B, V]
        probs = torch.softmax(logits, -1)
        nxt = torch.cat([torch.multinomial(p[None], 1, generator=g) for p, g in zip(probs, generators)])
        seq = torch.cat([seq, nxt], 1)
    return seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    ar_dtype = "bfloat16" if device.type == "cuda" else "float32"
    torch.manual_seed(0)
    module = LARPModule(
        size=args.size,
        num_classes=101,
        tokenizer={"pretrained": None, "dtype": "fp16" if device.type == "cuda" else "fp32"},
        ar={"pretrained": None},
        sampling={"dtype": ar_dtype, "cfg_scale": 1.25},
    )
    generator = module.to(device).eval().generator()
    ar = generator.ar
    B, L = args.batch, ar.max_seq_length
    c = torch.arange(B, device=device) % 101  # [B] class ids
    print(
        f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}; LARP {args.size}: "
        f"{L} tokens per video, AR {ar_dtype}, batch {B}"
    )

    def gens() -> list[torch.Generator]:
        return row_generators(list(range(B)), device)

    cached = timed(lambda: ar.sample(c, cfg_scale=1.0, generators=gens()), device, args.repeats)
    cfg = timed(lambda: ar.sample(c, cfg_scale=1.25, generators=gens()), device, args.repeats)
    print(f"AR sampler, KV cache:          {B * L / cached:9.1f} tokens/s ({cached:.3f} s per batch)")
    print(f"AR sampler, KV cache, CFG 1.25: {B * L / cfg:8.1f} tokens/s (doubled batch)")
    if args.size == "tiny" or device.type == "cuda":
        plain = timed(lambda: recompute_sample(ar, c, gens()), device, 1)
        print(
            f"AR sampler, prefix recomputed: {B * L / plain:9.1f} tokens/s -> KV cache {plain / cached:.1f}x"
        )

    T, S = generator.frames, generator.size
    frames = torch.zeros(B, 0, 3, S, S, device=device)  # class-conditional: nothing observed
    cond = {"label": c}

    def videos() -> torch.Tensor:
        return generator.generate(frames, [], list(range(T)), cond, list(range(B)))

    seconds = timed(videos, device, args.repeats)
    print(f"end to end (AR + decode), {T}x{S}x{S}: {B / seconds:7.2f} videos/s ({seconds:.3f} s per batch)")


if __name__ == "__main__":
    main()
