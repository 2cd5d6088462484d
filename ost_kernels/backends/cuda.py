"""Backend "cuda": the CUDA C++ fallback of ost_kernels._C (csrc/cuda/), used where Triton is not.

Its Sinkhorn kernel keeps each pair's T x N block in shared memory, four pairs (warps) a
block, within the default 48 KiB per block; larger T * N is refused here, so that "auto"
passes over it, and by the op itself (csrc/cuda/od_cuda.cu: the same formula).
"""
from __future__ import annotations

import torch

from .._env import cuda_present
from . import _cpp
from .base import Backend, ProblemShape, unsupported_dtype, wrong_device

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
WARPS_PER_BLOCK = 4
SHARED_MEMORY_LIMIT = 48 * 1024


def shared_memory_bytes(T: int, N: int) -> int:
    """Shared memory of one Sinkhorn block: z (T * N), alpha and row LSE (T), beta (N) per warp."""
    return WARPS_PER_BLOCK * (T * N + 2 * T + N) * 4


def reason(device: torch.device, dtype: torch.dtype, shape: ProblemShape | None = None) -> str | None:
    why = (wrong_device("cuda", device, "cuda") or unsupported_dtype("CUDA", DTYPES, dtype)
           or _cpp.extension_reason("CUDA", "ost_kernels._C was built without CUDA kernels (no nvcc / CUDA_HOME "
                                            "at build time, or OST_KERNELS_BUILD_CUDA=0)"))
    if why is None and not cuda_present():
        why = "no CUDA device is available"
    if why is None and shape is not None and shared_memory_bytes(shape.T, shape.N) > SHARED_MEMORY_LIMIT:
        why = (f"T * N = {shape.T} * {shape.N} needs {shared_memory_bytes(shape.T, shape.N)} bytes of shared memory "
               f"per block, over the CUDA kernel's {SHARED_MEMORY_LIMIT}")
    return why


BACKEND = Backend(name="cuda", dtypes=DTYPES, reason=reason, forward=_cpp.forward, backward=_cpp.backward)
