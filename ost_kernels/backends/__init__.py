"""The backend registry and the "auto" choice.

A backend is a Backend record (base.py says what it is), added with register_backend; this
package registers its five ("triton-fused" for calibration only: "auto" never picks it). A backend is available or it is not, with a reason; asking for one
that is not is an error that gives the reason. "auto" tries, in registration order, the
backends registered for the tensors' device type: Triton then the CUDA extension for CUDA
tensors, the C++ CPU kernel for CPU tensors, and the pure-PyTorch path everywhere; a backend
whose kernels cannot take the problem (a hard limit) is passed over. Everything that lists
or checks names (backend_names, od_solve's validation) reads the registry when called, so a
backend registered later (the tests' "cuda-emulated") is accepted everywhere.
"""
from __future__ import annotations

import torch

from . import cpu, cuda, pytorch, triton
from .base import Backend, BackendUnavailableError, ProblemShape

REGISTRY: dict[str, Backend] = {}
AUTO_ORDER: dict[str, list[str]] = {}  # device type -> the names "auto" tries, in order
FALLBACK = "torch"  # for device types no backend was registered for

__all__ = ["Backend", "BackendUnavailableError", "ProblemShape", "REGISTRY", "register_backend", "backend_names",
           "resolve", "unavailable_reason", "available_backends", "auto_candidates"]


def register_backend(backend: Backend, *, auto: tuple[str, ...] = ()) -> Backend:
    """Adds `backend` under backend.name. auto: the device types ("cuda", "cpu") on which
    "auto" may pick it, after the backends registered for them before it."""
    if backend.name == "auto" or backend.name in REGISTRY:
        raise ValueError(f"register_backend: the name {backend.name!r} is taken")
    REGISTRY[backend.name] = backend
    for device_type in auto:
        AUTO_ORDER.setdefault(device_type, []).append(backend.name)
    return backend


# Under TRITON_INTERPRET=1 "auto" still picks the C++ kernel for CPU tensors: the
# interpreter is for testing the Triton code, not for speed.
register_backend(triton.BACKEND, auto=("cuda",))
register_backend(triton.FUSED)  # for calibration: measured beside "triton", never picked by "auto"
register_backend(cuda.BACKEND, auto=("cuda",))
register_backend(cpu.BACKEND, auto=("cpu",))
register_backend(pytorch.BACKEND, auto=("cuda", "cpu"))


def backend_names() -> tuple[str, ...]:
    """What od_solve(..., backend=) accepts: "auto" and every registered backend."""
    return ("auto", *REGISTRY)


def unavailable_reason(name: str, device: torch.device | str, dtype: torch.dtype = torch.float32,
                       shape: ProblemShape | None = None) -> str | None:
    """None if backend `name` can run on tensors of this device and dtype (and this problem
    shape, when given), else why not."""
    return REGISTRY[name].why_not(torch.device(device), dtype, shape)


def resolve(name: str, device: torch.device, dtype: torch.dtype, shape: ProblemShape | None = None) -> Backend:
    """The backend to run; for "auto" the first available one in the documented order."""
    device = torch.device(device)
    if name == "auto":
        for candidate in AUTO_ORDER.get(device.type, ()):
            if REGISTRY[candidate].why_not(device, dtype, shape) is None:
                return REGISTRY[candidate]
        return REGISTRY[FALLBACK]
    why = REGISTRY[name].why_not(device, dtype, shape)
    if why is not None:
        raise BackendUnavailableError(f"od_solve: backend {name!r} is not available: {why}")
    return REGISTRY[name]


def auto_candidates(device: torch.device, dtype: torch.dtype, shape: ProblemShape | None = None) -> list[str]:
    """The backends "auto" may run on this device for this problem, in the fixed order."""
    device = torch.device(device)
    return [n for n in AUTO_ORDER.get(device.type, ()) if REGISTRY[n].why_not(device, dtype, shape) is None]


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, str | None]:
    """{backend name: None if it can run on `device`, else the reason it cannot}."""
    return {name: unavailable_reason(name, device, dtype) for name in REGISTRY}
