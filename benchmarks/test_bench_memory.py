"""Peak extra memory of the forward at a large class count, against the size of one float32
B * A * T * N tensor (what each of the paper's intermediates costs).

B = 8, T = 32, A = 20,000, N = 8, d = 64 on the CPU: one B * A * T * N tensor is 164 MB.
The solver's own outputs f (B, A, T) and g (B, A, N) are (T + N) / (T * N) = 16% of it.
"""
import pytest
import torch

from conftest import record
from memory import peak_extra_bytes
from ost_kernels import clip_like_inputs
from providers import scores_fn, unavailable

B, A, T, N, D = 8, 20000, 32, 8, 64


@pytest.mark.parametrize("provider", ["einops", "torch", "cpu"])
def test_forward_memory_at_20k_classes(benchmark, provider):
    device = torch.device("cpu")
    why = unavailable(provider, device, torch.float32)
    if why is not None:
        pytest.skip(why)
    video, desc, _ = clip_like_inputs(B, A, T, N, D)
    fn = scores_fn(provider, "tol")
    _, peak = peak_extra_bytes(lambda: fn(video, desc), device)
    group = f"memory B{B} A{A} T{T} N{N} d{D} fwd tol"
    benchmark.group = group
    benchmark.pedantic(lambda: fn(video, desc), rounds=1, iterations=1, warmup_rounds=0)
    one_tensor = B * A * T * N * 4
    record(group, provider, benchmark, peak, fraction_of_one_BATN_tensor=peak / one_tensor if peak else None)
