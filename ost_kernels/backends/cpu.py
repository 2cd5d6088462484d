"""Backend "cpu": the C++ CPU kernel of ost_kernels._C (csrc/cpu/), float64 included.

When gradients will be needed and the call's sims, B * T * A * N values, fit CACHE_BUDGET
bytes, the forward keeps them for the backward, which then skips recomputing them (one of its
three matmuls); above the budget the backward recomputes them a chunk of classes at a time, so
memory stays bounded whatever A is. benchmarks/test_bench_backward_strategy.py measures both.
OST_KERNELS_CPU_CACHE_MB sets the budget (0 never keeps them).
"""
from __future__ import annotations

import torch

from . import _cpp
from .base import Backend, unsupported_dtype, wrong_device

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
CACHE_BUDGET_ENV = "OST_KERNELS_CPU_CACHE_MB"
DEFAULT_CACHE_MB = 64


def reason(device: torch.device, dtype: torch.dtype, shape=None) -> str | None:
    return (wrong_device("cpu", device, "cpu") or unsupported_dtype("CPU", DTYPES, dtype)
            or _cpp.extension_reason("CPU", "the built ost_kernels._C has no CPU kernel; rebuild it"))


def keeps_sims(video: torch.Tensor, desc: torch.Tensor) -> bool:
    """Whether a forward on these inputs keeps its sims for the backward."""
    return _cpp.keeps_sims(video, desc, _cpp.cache_budget(CACHE_BUDGET_ENV, DEFAULT_CACHE_MB))


# csrc/cpu/rows.h rescales huge and tiny rows in the pass that normalizes them (kRescaleAbove,
# kRescaleBelow); its cache holds the cosines (B * T, A * N) in the compute dtype.
BACKEND = Backend(name="cpu", dtypes=DTYPES, reason=reason, ops=("ost_kernels::od_forward", "ost_kernels::od_backward"),
                  cache="cosines", keeps_cache=keeps_sims, scales_huge_rows=True,
                  features=frozenset({"weights", "reg_m"}))
