"""od_solve providers against the paper's einops algorithm on CLIP-like synthetic inputs.

Grid: A (class counts of HMDB 51, UCF 101, K600 split 160, K400 400, and 10,000), T in {8, 32},
N = 4, d = 512, forward and forward+backward, each solver's default stop rule and a fixed
100 iterations. B = 32 by default (--bench-batch).
"""
import pytest
import torch

from conftest import record
from memory import peak_extra_bytes
from ost_kernels import clip_like_inputs, od_solve
from providers import PROVIDERS, STOPS, scores_fn, unavailable

N, D = 4, 512


def _rounds(num_classes: int):
    # Large cases take seconds per call on a CPU: one timed call, no warm-up.
    return (1, 0) if num_classes >= 5000 else (3, 1)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stop", list(STOPS))
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_od_solve(benchmark, provider, mode, stop, num_classes, num_frames, bench_batch, bench_device, bench_dtype):
    why = unavailable(provider, bench_device, bench_dtype)
    if why is not None:
        pytest.skip(why)
    video, desc, _ = clip_like_inputs(bench_batch, num_classes, num_frames, N, D, dtype=bench_dtype,
                                      device=bench_device)
    backward = mode == "fwd+bwd"
    video.requires_grad_(backward)
    desc.requires_grad_(backward)
    fn = scores_fn(provider, stop)
    sync = torch.cuda.synchronize if bench_device.type == "cuda" else (lambda: None)
    peak = {}

    def call():
        out = fn(video, desc)
        if backward:
            video.grad = desc.grad = None
            out.sum().backward()
        sync()

    def timed():
        if "bytes" not in peak:  # the first call (warm-up or only round) also measures memory
            _, peak["bytes"] = peak_extra_bytes(call, bench_device)
        else:
            call()

    group = f"A{num_classes} T{num_frames} {mode} {stop}"
    benchmark.group = group
    rounds, warmup = _rounds(num_classes)
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=warmup)
    extra = {}
    if provider not in ("einops", "matmul"):
        _, info = od_solve(video.detach(), desc.detach(), backend=provider, return_info=True, **STOPS[stop][0])
        extra["mean_iterations"] = info.iterations.float().mean().item()
    record(group, provider, benchmark, peak.get("bytes"), **extra)
