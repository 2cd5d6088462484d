"""What the benchmarks time: each provider turns (video, desc, stop rule) into scores.

`einops` is the paper's algorithm (the baseline), `matmul` the bare matmul that computes the
sims in the same dtype (the floor: no solver can be faster than reading its inputs once),
and every od_solve backend is a provider of its own once it is available.
"""
from __future__ import annotations

import torch

from ost_kernels import od_solve, od_solve_einops
from ost_kernels.backends import REGISTRY, unavailable_reason

# stop rule -> (od_solve kwargs, od_solve_einops kwargs)
STOPS = {
    "tol": (dict(tol=1e-3, max_iter=100), dict(early_stop=True)),  # each one's own default rule
    "fixed100": (dict(tol=0.0, max_iter=100), dict(early_stop=False, max_iter=100)),
}
SOLVER_BACKENDS = ("torch", "cpu", "cuda", "triton")
# A backend with frame and descriptor weights ("+weights", random in [0.5, 1.5]) or with the
# descriptor side relaxed ("+reg_m": reg_m = (inf, 0.5)): what those options cost against the
# uniform balanced solve at the same iteration count (--stop fixed100).
# "+implicit": grad="implicit" (the exact gradient through the plan) against the plan-held-constant
# one, --mode fwd+bwd; "einops-unrolled": autograd through the paper's unrolled iterations.
# "+info": return_info=True (iterations, errors and the mass per pair) against the scores alone.
VARIANTS = {"weights": None, "reg_m": (float("inf"), 0.5), "implicit": None, "info": None}
PROVIDERS = ("einops", "einops-unrolled", "matmul") + SOLVER_BACKENDS + tuple(
    f"{b}+{v}" for b in SOLVER_BACKENDS for v in VARIANTS)


def unavailable(provider: str, device: torch.device, dtype: torch.dtype) -> str | None:
    backend, _, variant = provider.partition("+")
    if backend in SOLVER_BACKENDS:
        needs = frozenset({variant}) if variant else frozenset()
        why = unavailable_reason(backend, device, dtype)
        missing = needs - REGISTRY[backend].features - {"implicit", "info"}  # every backend has these
        return why or (f"backend {backend!r} does not take {variant} yet" if missing else None)
    return None


def _weights(v, d):
    """Weights in [0.5, 1.5] for video (B, T, d) and desc (A, N, d), made once per shape."""
    key = (v.shape, d.shape, v.device, v.dtype)
    if key not in _WEIGHTS:
        gen = torch.Generator().manual_seed(0)
        _WEIGHTS[key] = tuple((torch.rand(*x.shape[:2], generator=gen) + 0.5).to(x.device) for x in (v, d))
    return _WEIGHTS[key]


_WEIGHTS: dict = {}


def scores_fn(provider: str, stop: str):
    """A function (video, desc) -> something differentiable to call .sum().backward() on."""
    solve_kw, einops_kw = STOPS[stop]
    if provider == "einops":
        return lambda v, d: od_solve_einops(v, d, **einops_kw)
    if provider == "einops-unrolled":
        return lambda v, d: od_solve_einops(v, d, unrolled=True, **einops_kw)
    if provider == "matmul":
        return lambda v, d: v.reshape(-1, v.shape[-1]) @ d.reshape(-1, d.shape[-1]).T
    backend, _, variant = provider.partition("+")
    if variant == "weights":
        return lambda v, d: od_solve(v, d, backend=backend, frame_weights=_weights(v, d)[0],
                                     desc_weights=_weights(v, d)[1], **solve_kw)
    if variant == "implicit":
        return lambda v, d: od_solve(v, d, backend=backend, grad="implicit", **solve_kw)
    if variant == "info":
        return lambda v, d: od_solve(v, d, backend=backend, return_info=True, **solve_kw)[0]
    if variant == "reg_m":
        return lambda v, d: od_solve(v, d, backend=backend, reg_m=VARIANTS["reg_m"], **solve_kw)
    return lambda v, d: od_solve(v, d, backend=backend, **solve_kw)
