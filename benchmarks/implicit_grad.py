"""grad="implicit" against grad="plan" and against autograd through the unrolled einops
reference, on the CPU: the backward alone (interleaved rounds, the forward untimed), forward +
backward, and the peak extra memory of one forward + backward.

    python benchmarks/implicit_grad.py --classes 51,400 --frames 8,32 --rounds 20

Goal (issue 25): the implicit backward at most 2x the plan backward. Times are medians of
per-round ratios (benchmarks/interleaved.py); memory from benchmarks/memory.py (host RSS peak).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from interleaved import run_case  # noqa: E402
from memory import peak_extra_bytes  # noqa: E402
from ost_kernels import clip_like_inputs  # noqa: E402
from providers import scores_fn  # noqa: E402


def _peak_mib(provider: str, B, A, T, N, d) -> float | None:
    video, desc, _ = clip_like_inputs(B, A, T, N, d)
    video.requires_grad_(True)
    desc.requires_grad_(True)
    fn = scores_fn(provider, "fixed100")
    _, peak = peak_extra_bytes(lambda: fn(video, desc).sum().backward(), torch.device("cpu"))
    return None if peak is None else peak / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", default="51,400")
    parser.add_argument("--frames", default="8,32")
    parser.add_argument("--descriptors", type=int, default=4)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    cpu = torch.device("cpu")
    print(f"B={args.batch}, N={args.descriptors}, d={args.dim}, float32, cpu, 100 iterations (tol = 0), "
          f"{args.rounds} interleaved rounds, torch threads {torch.get_num_threads()}")
    print("| A | T | implicit bwd / plan bwd (25-75%) | ms implicit, plan | fwd+bwd implicit / plan | "
          "fwd+bwd implicit / einops unrolled | peak MiB implicit, plan, einops unrolled |")
    print("|---|---|---|---|---|---|---|")
    for A in map(int, args.classes.split(",")):
        for T in map(int, args.frames.split(",")):
            shape = (args.batch, A, T, args.descriptors, args.dim)
            bwd = run_case(["cpu+implicit", "cpu"], *shape, "fixed100", args.rounds, args.warmup, cpu,
                           torch.float32, backward_only=True)
            both = run_case(["cpu+implicit", "einops-unrolled", "cpu"], *shape, "fixed100", max(4, args.rounds // 4),
                            1, cpu, torch.float32, backward=True)
            imp = both["cpu+implicit"]["median_s"]
            peaks = [_peak_mib(p, *shape) for p in ("cpu+implicit", "cpu", "einops-unrolled")]
            b = bwd["cpu+implicit"]
            print(f"| {A} | {T} | {b['ratio']:.2f}x ({b['q25']:.2f}-{b['q75']:.2f}) | "
                  f"{1e3 * b['median_s']:.1f}, {1e3 * bwd['cpu']['median_s']:.1f} | "
                  f"{both['cpu+implicit']['ratio']:.2f}x | {imp / both['einops-unrolled']['median_s']:.2f}x | "
                  + ", ".join("n/a" if p is None else f"{p:.0f}" for p in peaks) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
