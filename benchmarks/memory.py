"""Peak extra memory of one call: host RSS on the CPU, the caching allocator on CUDA.

On the CPU, Linux's VmHWM (peak resident set) is reset through /proc/self/clear_refs before
the call and read after it; the extra is the peak minus the resident set before the call.
"""
from __future__ import annotations

import ctypes
import ctypes.util

import torch

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c"))
except OSError:
    _libc = None


def _release_freed_heap() -> None:
    # glibc keeps freed blocks resident; hand them back so that the call's own allocations
    # show up in the peak instead of silently reusing pages an earlier test left behind.
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def peak_extra_bytes(fn, device: torch.device):
    """Run fn() once; return (its result, peak extra bytes or None if not measurable)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device) - base
    if not cpu_supported():
        return fn(), None
    _release_freed_heap()
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    out = fn()
    return out, max(0, _status_kib("VmHWM") - base) * 1024


def main(argv=None) -> int:
    """Peak extra memory of one od_solve forward under torch.no_grad() (scores only: no
    potentials kept), against the same forward with gradients on (potentials kept):

        python benchmarks/memory.py --batch 8 --frames 32 --descriptors 4 --dim 64 --classes 100000
    """
    import argparse

    from ost_kernels import clip_like_inputs, od_solve

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--descriptors", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100_000)
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    B, T, N, d, A = args.batch, args.frames, args.descriptors, args.dim, args.classes
    video, desc, _ = clip_like_inputs(B, A, T, N, d, device=device)
    outputs = B * A * (4 + 4 + 4)  # scores, iterations, error
    potentials = B * A * (T + N) * 4
    print(f"od_solve forward, backend {args.backend}, B={B}, T={T}, N={N}, d={d}, A={A:,}, float32, {device}; "
          f"the (B, A) outputs are {outputs / 2**20:.1f} MiB, the potentials would be {potentials / 2**20:.1f} MiB")
    for label, grad in (("no_grad (scores only)", False), ("with gradients (potentials kept)", True)):
        v = video.detach().requires_grad_(grad)

        def call():
            with torch.set_grad_enabled(grad):
                return od_solve(v, desc, backend=args.backend)

        od_solve(video[:1], desc[:8], backend=args.backend)  # load the extension outside the measurement
        scores, peak = peak_extra_bytes(call, device)
        del scores
        print(f"| {label} | peak extra {peak / 2**20:.1f} MiB |" if peak is not None else f"| {label} | not measurable |")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
