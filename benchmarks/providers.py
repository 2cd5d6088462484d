"""What the benchmarks time: each provider turns (video, desc, stop rule) into scores.

`einops` is the paper's algorithm (the baseline), `matmul` the bare matmul that computes the
sims in the same dtype (the floor: no solver can be faster than reading its inputs once),
and every od_solve backend is a provider of its own once it is available.
"""
from __future__ import annotations

import torch

from ost_kernels import od_solve, od_solve_einops
from ost_kernels.backends import unavailable_reason

# stop rule -> (od_solve kwargs, od_solve_einops kwargs)
STOPS = {
    "tol": (dict(tol=1e-3, max_iter=100), dict(early_stop=True)),  # each one's own default rule
    "fixed100": (dict(tol=0.0, max_iter=100), dict(early_stop=False, max_iter=100)),
}
SOLVER_BACKENDS = ("torch", "cpu", "cuda", "triton")
PROVIDERS = ("einops", "matmul") + SOLVER_BACKENDS


def unavailable(provider: str, device: torch.device, dtype: torch.dtype) -> str | None:
    if provider in SOLVER_BACKENDS:
        return unavailable_reason(provider, device, dtype)
    return None


def scores_fn(provider: str, stop: str):
    """A function (video, desc) -> something differentiable to call .sum().backward() on."""
    solve_kw, einops_kw = STOPS[stop]
    if provider == "einops":
        return lambda v, d: od_solve_einops(v, d, **einops_kw)
    if provider == "matmul":
        return lambda v, d: v.reshape(-1, v.shape[-1]) @ d.reshape(-1, d.shape[-1]).T
    return lambda v, d: od_solve(v, d, backend=provider, **solve_kw)
