"""Ratios between providers from interleaved rounds: each round times every provider once, in
turn, so that a change in the machine's speed (another process, the clock) hits them alike.
The figures README.md and RESULTS.md quote as ratios come from here.

    python benchmarks/interleaved.py --providers cpu,matmul --classes 400 --frames 8,32 --rounds 60
    python benchmarks/interleaved.py --providers cpu,matmul,einops --mode fwd+bwd --classes 51,400

Per case: each provider's median time over the rounds and its ratio to the reference provider
(the last one named: matmul above), as the median of the per-round ratios with their spread
(the 25th-75th percentiles), plus the ratio a rerun of half the rounds gives (first half
against second half: how far a rerun could land). Inputs: ost_kernels.clip_like_inputs,
float32, on the CPU unless --device says otherwise.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from providers import PROVIDERS, scores_fn, unavailable  # noqa: E402

from ost_kernels import clip_like_inputs  # noqa: E402


def _time(fn, *args, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class _BackwardOnly:
    """Called like a provider, times only .backward() of a forward it runs first (untimed);
    _time then measures this call's returned duration instead of the wall time of the call."""

    def __init__(self, fn):
        self.fn, self.device, self.last = fn, None, 0.0

    def __call__(self, v, d):
        scores = self.fn(v, d).sum()
        self.last = _time(scores.backward, device=self.device)


def _quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def run_case(providers, B, A, T, N, d, stop, rounds, warmup, device, dtype, backward=False,
             backward_only=False) -> dict:
    video, desc, _ = clip_like_inputs(B, A, T, N, d, dtype=dtype, device=device)
    fns = {p: scores_fn(p, stop) for p in providers}
    if backward or backward_only:  # forward + backward: a training step's share
        video.requires_grad_(True)
        desc.requires_grad_(True)
        fns = {p: (lambda v, dd, _f=fn: _f(v, dd).sum().backward()) for p, fn in fns.items()}
    if backward_only:  # the forward runs untimed; only the backward's time counts
        fns = {p: _BackwardOnly(scores_fn(p, stop)) for p in providers}
        backward = True
    with torch.enable_grad() if backward else torch.no_grad():
        for fn in fns.values():
            if isinstance(fn, _BackwardOnly):
                fn.device = device
        for _ in range(warmup):
            for p, fn in fns.items():
                fn(video, desc)
        times = {p: [] for p in providers}
        for _ in range(rounds):
            for p, fn in fns.items():
                elapsed = _time(fn, video, desc, device=device)
                times[p].append(fn.last if isinstance(fn, _BackwardOnly) else elapsed)
    ref = providers[-1]
    out = {}
    for p in providers:
        ratios = [a / b for a, b in zip(times[p], times[ref])]
        half = len(ratios) // 2
        out[p] = dict(median_s=statistics.median(times[p]), ratio=statistics.median(ratios),
                      q25=_quantile(ratios, 0.25), q75=_quantile(ratios, 0.75),
                      halves=(statistics.median(ratios[:half] or ratios), statistics.median(ratios[half:])))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--providers", default="cpu,matmul", help=f"comma-separated, reference last; of {PROVIDERS}")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", default="400")
    parser.add_argument("--frames", default="8,32")
    parser.add_argument("--descriptors", type=int, default=4)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--stop", default="tol", choices=["tol", "fixed100"])
    parser.add_argument("--mode", default="fwd", choices=["fwd", "fwd+bwd", "bwd"],
                        help="bwd: the backward alone (each round's forward runs untimed)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    providers = args.providers.split(",")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    for p in providers:
        if p not in PROVIDERS:
            parser.error(f"unknown provider {p!r}; expected one of {', '.join(PROVIDERS)}")
        why = unavailable(p, device, dtype)
        if why:
            parser.error(f"provider {p!r} is not available here: {why}")
    print(f"interleaved rounds: {args.rounds} (+{args.warmup} warm-up), B={args.batch}, N={args.descriptors}, "
          f"d={args.dim}, {args.dtype}, {args.device}, stop {args.stop}, {args.mode}, torch threads {torch.get_num_threads()}")
    print(f"| A | T | provider | median ms | vs {providers[-1]} (25-75%) | first / second half |")
    print("|---|---|---|---|---|---|")
    for A in map(int, args.classes.split(",")):
        for T in map(int, args.frames.split(",")):
            res = run_case(providers, args.batch, A, T, args.descriptors, args.dim, args.stop, args.rounds,
                           args.warmup, device, dtype, backward=args.mode == "fwd+bwd",
                           backward_only=args.mode == "bwd")
            for p, r in res.items():
                print(f"| {A} | {T} | {p} | {r['median_s'] * 1e3:.2f} | {r['ratio']:.2f}x ({r['q25']:.2f}-"
                      f"{r['q75']:.2f}) | {r['halves'][0]:.2f}x / {r['halves'][1]:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
