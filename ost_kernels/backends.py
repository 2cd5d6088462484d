"""Backend registry and the "auto" choice.

A backend is available or it is not, with a reason; asking for one that is not is an error
that gives the reason. "auto" tries, in order: Triton then the CUDA extension for CUDA
tensors, the C++ CPU kernel for CPU tensors, and the pure-PyTorch path everywhere.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

import torch

from . import _extension, torch_backend


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says why."""


class _RefuseDoubleBackward(torch.autograd.Function):
    """Identity on a gradient, tied to the input it belongs to, whose own backward raises:
    differentiating od_solve's gradient again fails loudly instead of returning zeros."""

    @staticmethod
    def forward(ctx, grad, _owner):
        return grad.clone()

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(
            "od_solve: double backward is not supported (the gradient holds the transport plan "
            "constant; differentiating it again is not implemented)"
        )


def refuse_double_backward(grads, owners):
    """Under create_graph=True, wrap each gradient so that a second backward raises."""
    if not torch.is_grad_enabled():
        return grads
    return tuple(
        _RefuseDoubleBackward.apply(g, o) if g is not None and o.requires_grad else g for g, o in zip(grads, owners)
    )


class _PythonBackendFunction(torch.autograd.Function):
    """Autograd for backends written in Python: the plan is held constant (d score / d sim = P).

    The potentials f, g are saved, B * A * (T + N) floats, so that backward rebuilds P in one
    pass instead of solving again (benchmarks/test_bench_backward_strategy.py measures both).
    """

    @staticmethod
    def forward(ctx, video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize, module):
        scores, f, g, iterations, error = module.od_forward(
            video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize
        )
        ctx.save_for_backward(video, desc, frame_mask, desc_mask, f, g)
        ctx.eps, ctx.normalize, ctx.module = eps, normalize, module
        ctx.mark_non_differentiable(f, g, iterations, error)
        return scores, f, g, iterations, error

    @staticmethod
    def backward(ctx, grad_scores, *_unused):
        video, desc, frame_mask, desc_mask, f, g = ctx.saved_tensors
        with torch.no_grad():
            grads = ctx.module.od_backward(grad_scores, video, desc, frame_mask, desc_mask, f, g, ctx.eps, ctx.normalize)
        grad_video, grad_desc = refuse_double_backward(grads, (video, desc))
        return grad_video, grad_desc, None, None, None, None, None, None, None


def _solve_torch(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize):
    return _PythonBackendFunction.apply(
        video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize, torch_backend
    )


def _solve_extension(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize):
    # Autograd for this op is registered in ost_kernels.ops_registration.
    return torch.ops.ost_kernels.od_forward(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize)


def _torch_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    return None


@_extension.constant_for_compile
def _cuda_present() -> bool:
    return torch.cuda.is_available()


def _extension_reason(name: str, kind: str, key: str, missing: str):
    def reason(device: torch.device, dtype: torch.dtype) -> str | None:
        if device.type != kind:
            return f"backend {name!r} runs on {kind.upper()} tensors, but the inputs are on {device}"
        if kind == "cuda" and dtype == torch.float64:
            return "the CUDA kernels take float32, float16 and bfloat16 inputs; use backend 'cpu' or 'torch' for float64"
        why = _extension.unavailable_reason()
        if why is not None:
            return why
        if not _extension.has_kernel("od_forward", key):
            return missing
        if kind == "cuda" and not _cuda_present():
            return "no CUDA device is available"
        return None

    return reason


_triton_load: list[str | None] = []


@_extension.constant_for_compile
def _triton_ops_reason() -> str | None:
    """None once ost_kernels.triton.ops (Triton and the ops it registers) has loaded."""
    if not _triton_load:
        if importlib.util.find_spec("triton") is None:
            _triton_load.append("Triton is not installed (pip install triton)")
        else:
            try:
                importlib.import_module("ost_kernels.triton.ops")
                _triton_load.append(None)
            except Exception as exc:  # a broken Triton install must not break the other backends
                _triton_load.append(f"Triton failed to load ({type(exc).__name__}: {exc})")
    return _triton_load[0]


def _triton_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if device.type == "cpu" and not interpreted:
        return "backend 'triton' runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1), but the inputs are on cpu"
    if device.type not in ("cpu", "cuda"):
        return f"backend 'triton' runs on CUDA tensors, but the inputs are on {device}"
    if dtype == torch.float64:
        return "the Triton kernels take float32, float16 and bfloat16 inputs; use backend 'cpu' or 'torch' for float64"
    if device.type == "cuda" and not _cuda_present():
        return "no CUDA device is available"
    return _triton_ops_reason()


def _solve_triton(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize):
    # Autograd for this op is registered in ost_kernels.triton.ops.
    return torch.ops.ost_kernels.od_forward_triton(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize)


@dataclass(frozen=True)
class Backend:
    name: str
    solve: Callable
    reason: Callable[[torch.device, torch.dtype], str | None]


BACKENDS = {
    "triton": Backend("triton", _solve_triton, _triton_reason),
    "cuda": Backend(
        "cuda",
        _solve_extension,
        _extension_reason(
            "cuda", "cuda", "CUDA",
            "ost_kernels._C was built without CUDA kernels (no nvcc / CUDA_HOME at build time, "
            "or OST_KERNELS_BUILD_CUDA=0)",
        ),
    ),
    "cpu": Backend(
        "cpu",
        _solve_extension,
        _extension_reason("cpu", "cpu", "CPU", "the built ost_kernels._C has no CPU kernel; rebuild it"),
    ),
    "torch": Backend("torch", _solve_torch, _torch_reason),
}

# Under TRITON_INTERPRET=1 "auto" still picks the C++ kernel for CPU tensors: the
# interpreter is for testing the Triton code, not for speed.
_AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch")}


def unavailable_reason(name: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str | None:
    """None if backend `name` can run on tensors of this device and dtype, else why not."""
    return BACKENDS[name].reason(torch.device(device), dtype)


def resolve(name: str, device: torch.device, dtype: torch.dtype) -> Backend:
    """The backend to run; for "auto" the first available one in the documented order."""
    device = torch.device(device)
    if name == "auto":
        for candidate in _AUTO_ORDER.get(device.type, ()):
            if BACKENDS[candidate].reason(device, dtype) is None:
                return BACKENDS[candidate]
        return BACKENDS["torch"]
    why = BACKENDS[name].reason(device, dtype)
    if why is not None:
        raise BackendUnavailableError(f"od_solve: backend {name!r} is not available: {why}")
    return BACKENDS[name]


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, str | None]:
    """{backend name: None if it can run on `device`, else the reason it cannot}."""
    return {name: unavailable_reason(name, torch.device(device), dtype) for name in BACKENDS}
