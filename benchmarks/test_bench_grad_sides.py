"""What a frozen side saves: forward + backward with both inputs requiring grad, against
video only (a frozen text encoder: desc needs no gradient, so the backward skips it).

Grid: the backends available here, A = 400 (K400), T in {8, 32}, N = 4, d = 512, B = 32 by
default (--bench-batch), default tol.
"""
import pytest
import torch

from conftest import record
from memory import peak_extra_bytes
from ost_kernels import clip_like_inputs, od_solve
from providers import unavailable

N, D, A = 4, 512, 400


@pytest.mark.parametrize("backend", ["torch", "cpu", "cuda", "triton"])
@pytest.mark.parametrize("grads", ["video+desc", "video only"])
def test_grad_sides(benchmark, backend, grads, num_frames, bench_batch, bench_device, bench_dtype):
    why = unavailable(backend, bench_device, bench_dtype)
    if why is not None:
        pytest.skip(why)
    video, desc, _ = clip_like_inputs(bench_batch, A, num_frames, N, D, dtype=bench_dtype, device=bench_device)
    video.requires_grad_(True)
    desc.requires_grad_(grads == "video+desc")
    sync = torch.cuda.synchronize if bench_device.type == "cuda" else (lambda: None)
    peak = {}

    def call():
        video.grad = desc.grad = None
        od_solve(video, desc, backend=backend).sum().backward()
        sync()

    def timed():
        if "bytes" not in peak:
            _, peak["bytes"] = peak_extra_bytes(call, bench_device)
        else:
            call()

    group = f"grad sides {backend} A{A} T{num_frames} fwd+bwd tol"
    benchmark.group = group
    benchmark.pedantic(timed, rounds=5, iterations=1, warmup_rounds=1)
    record(group, grads, benchmark, peak.get("bytes"))
