"""Backend "cuda": the CUDA C++ fallback of ost_kernels._C (csrc/cuda/), used where Triton is not.

Its Sinkhorn kernel gives each (video, class) pair a group of lanes holding the pair's T x N
block in registers, a few frames a lane, so it takes T up to MAX_FRAMES and N up to
MAX_DESCRIPTORS (register arrays sized 4, 8 or 16). Larger problems are refused here, so that
"auto" passes over them, and by the op itself: csrc/cuda/sinkhorn_groups.cuh's kMaxFrames and
kMaxDescriptors are the limits, these constants their mirror (tests/kernels/test_contract.py checks).

As backend "cpu", the forward keeps its sims for the backward (which then skips one of its
three GEMMs) when gradients will be needed and the B * T * A * N float32 values fit
OST_KERNELS_CUDA_CACHE_MB (default 256 MiB: the paper's in-batch set of 32 videos x 32 frames
against 10,000 classes of 4 descriptors takes 164 MiB); above it the backward recomputes them.
"""
from __future__ import annotations

import torch

from .._env import cuda_present
from . import _cpp
from .base import Backend, ProblemShape, unsupported_dtype, wrong_device

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_FRAMES = 128  # kMaxFrames = kRowsPerLane * kMaxGroup
MAX_DESCRIPTORS = 16  # kMaxDescriptors
CACHE_BUDGET_ENV = "OST_KERNELS_CUDA_CACHE_MB"
DEFAULT_CACHE_MB = 256


def limit_reason(shape: ProblemShape | None) -> str | None:
    """None if the CUDA kernels take this problem's T and N, else why not."""
    if shape is not None and (shape.T > MAX_FRAMES or shape.N > MAX_DESCRIPTORS):
        return (f"the CUDA kernels take T up to {MAX_FRAMES} frames and N up to {MAX_DESCRIPTORS} descriptors "
                f"(got T = {shape.T}, N = {shape.N})")
    return None


def reason(device: torch.device, dtype: torch.dtype, shape: ProblemShape | None = None) -> str | None:
    why = (wrong_device("cuda", device, "cuda") or unsupported_dtype("CUDA", DTYPES, dtype)
           or _cpp.extension_reason("CUDA", "ost_kernels._C was built without CUDA kernels (no nvcc / CUDA_HOME "
                                            "at build time, or OST_KERNELS_BUILD_CUDA=0)"))
    if why is None and not cuda_present():
        why = "no CUDA device is available"
    return why or limit_reason(shape)


def keeps_sims(video: torch.Tensor, desc: torch.Tensor) -> bool:
    """Whether a forward on these inputs keeps its sims for the backward."""
    return _cpp.keeps_sims(video, desc, _cpp.cache_budget(CACHE_BUDGET_ENV, DEFAULT_CACHE_MB))


BACKEND = Backend(name="cuda", dtypes=DTYPES, reason=reason, ops=("ost_kernels::od_forward", "ost_kernels::od_backward"),
                  cache="dot products", keeps_cache=keeps_sims, features=frozenset({"weights", "reg_m"}))
