"""Save the potentials for backward, or solve again in backward? Measured for backend "torch".

Saving f (B, A, T) and g (B, A, N) costs B * A * (T + N) floats kept from forward to
backward (for T = 32, N = 4: 36 floats a pair, 28% of one B * A * T * N plan tensor) and
lets backward rebuild P in one pass. Recomputing keeps nothing but runs Sinkhorn a second
time. od_solve saves; this benchmark shows what recomputing would cost.
"""
import pytest
import torch

from conftest import record
from memory import peak_extra_bytes
from ost_kernels import SolverOptions, clip_like_inputs
from ost_kernels.backends import pytorch as torch_backend


@pytest.mark.parametrize("stop", ["tol", "fixed100"])
@pytest.mark.parametrize("strategy", ["save", "recompute"])
def test_backward_strategy(benchmark, strategy, stop, bench_batch):
    B, A, T, N, d = bench_batch, 400, 32, 4, 512
    video, desc, _ = clip_like_inputs(B, A, T, N, d)
    tol = 1e-3 if stop == "tol" else 0.0
    grad = torch.ones(B, A)
    options = SolverOptions(eps=0.1, max_iter=100, tol=tol)

    def fwd_bwd():
        _, f, g, _, _ = torch_backend.od_forward(video, desc, None, None, None, None, options)
        if strategy == "recompute":
            del f, g  # what a recomputing backward would keep: nothing
            _, f, g, _, _ = torch_backend.od_forward(video, desc, None, None, None, None, options)
        return torch_backend.od_backward(grad, video, desc, None, None, f, g, 0.1, True)

    _, peak = peak_extra_bytes(fwd_bwd, torch.device("cpu"))
    group = f"backward strategy A{A} T{T} {stop}"
    benchmark.group = group
    benchmark.pedantic(fwd_bwd, rounds=3, iterations=1, warmup_rounds=0)
    saved = B * A * (T + N) * 4
    record(group, strategy, benchmark, peak, saved_bytes=saved if strategy == "save" else 0)


@pytest.mark.parametrize("strategy", ["kept", "recomputed"])
def test_cpu_kept_or_recomputed_sims(benchmark, strategy, num_classes, num_frames, bench_batch, monkeypatch):
    """Backend "cpu", forward + backward: the forward keeps its sims for the backward (the
    budget raised so that it always does) or the backward recomputes them (budget 0). Picks
    the default budget (backends/cpu.py)."""
    from ost_kernels import od_solve
    from ost_kernels.backends import cpu

    why = cpu.reason(torch.device("cpu"), torch.float32)
    if why is not None:
        pytest.skip(why)
    monkeypatch.setenv(cpu.CACHE_BUDGET_ENV, "100000" if strategy == "kept" else "0")
    B, A, T, N = bench_batch, num_classes, num_frames, 4
    video, desc, _ = clip_like_inputs(B, A, T, N, 512)
    video.requires_grad_(True)
    desc.requires_grad_(True)

    def fwd_bwd():
        video.grad = desc.grad = None
        od_solve(video, desc, backend="cpu").sum().backward()

    _, peak = peak_extra_bytes(fwd_bwd, torch.device("cpu"))
    group = f"cpu sims A{A} T{T} fwd+bwd tol"
    benchmark.group = group
    benchmark.pedantic(fwd_bwd, rounds=3 if A < 5000 else 1, iterations=1, warmup_rounds=1 if A < 5000 else 0)
    record(group, strategy, benchmark, peak, sims_mib=B * T * A * N * 4 / 2**20)
