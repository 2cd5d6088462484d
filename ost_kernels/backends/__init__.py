"""The backend registry and the "auto" choice.

The registry is data: one Backend record per module of this package (base.py says what a
backend is). A backend is available or it is not, with a reason; asking for one that is not
is an error that gives the reason. "auto" tries, in order: Triton then the CUDA extension
for CUDA tensors, the C++ CPU kernel for CPU tensors, and the pure-PyTorch path everywhere;
a backend whose kernels cannot take the problem (a hard limit) is passed over.
"""
from __future__ import annotations

import torch

from . import cpu, cuda, pytorch, triton
from .base import Backend, BackendUnavailableError, ProblemShape

REGISTRY: dict[str, Backend] = {b.BACKEND.name: b.BACKEND for b in (triton, cuda, cpu, pytorch)}
NAMES: tuple[str, ...] = ("auto", *REGISTRY)

# Under TRITON_INTERPRET=1 "auto" still picks the C++ kernel for CPU tensors: the
# interpreter is for testing the Triton code, not for speed.
AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch")}
FALLBACK = "torch"

__all__ = ["Backend", "BackendUnavailableError", "ProblemShape", "REGISTRY", "NAMES", "resolve",
           "unavailable_reason", "available_backends"]


def unavailable_reason(name: str, device: torch.device | str, dtype: torch.dtype = torch.float32,
                       shape: ProblemShape | None = None) -> str | None:
    """None if backend `name` can run on tensors of this device and dtype (and this problem
    shape, when given), else why not."""
    return REGISTRY[name].reason(torch.device(device), dtype, shape)


def resolve(name: str, device: torch.device, dtype: torch.dtype, shape: ProblemShape | None = None) -> Backend:
    """The backend to run; for "auto" the first available one in the documented order."""
    device = torch.device(device)
    if name == "auto":
        for candidate in AUTO_ORDER.get(device.type, ()):
            if REGISTRY[candidate].reason(device, dtype, shape) is None:
                return REGISTRY[candidate]
        return REGISTRY[FALLBACK]
    why = REGISTRY[name].reason(device, dtype, shape)
    if why is not None:
        raise BackendUnavailableError(f"od_solve: backend {name!r} is not available: {why}")
    return REGISTRY[name]


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, str | None]:
    """{backend name: None if it can run on `device`, else the reason it cannot}."""
    return {name: unavailable_reason(name, device, dtype) for name in REGISTRY}
