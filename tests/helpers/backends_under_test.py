"""The backends every correctness test runs on, and the one rule for when one cannot run.

A backend that cannot take the case (another device, a dtype its kernels do not take) is
skipped with its reason. One that should run here and does not (the C++ extension once it is
built, Triton under its interpreter once Triton is installed) fails the test: a broken build
must not turn into a quietly green run of skips.
"""
import importlib.util
import os

import pytest
import torch

from ost_kernels._env import triton_interpreting
from ost_kernels.backends import REGISTRY, register_backend, unavailable_reason
from ost_kernels.backends._cpp import DISABLE_ENV

from .cuda_emulation.backend import BACKEND as EMULATED

# A test-only backend ("auto" never picks it): od_solve(..., backend="cuda-emulated") works in
# this process.
if EMULATED.name not in REGISTRY:
    register_backend(EMULATED)

# Triton runs under its interpreter here (tests/conftest.py sets TRITON_INTERPRET=1): the
# two-phase path "triton" and the fused kernel "triton-fused"; the CUDA fallback's code runs as
# "cuda-emulated" (tests/helpers/cuda_emulation/: on CPU threads).
BACKENDS = ["torch", "cpu", "triton", "triton-fused", EMULATED.name]

EXTENSION_EXPECTED = (os.environ.get(DISABLE_ENV, "0") != "1"
                      and os.environ.get("OST_KERNELS_SKIP_EXTENSION", "0") != "1")


def shape_id(shape) -> str:
    """Test id of a (B, A, T, N, d) shape."""
    return "B{}A{}T{}N{}d{}".format(*shape)


def _should_run(backend: str, device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    if backend == "torch":
        return True
    if backend in ("cpu", EMULATED.name):  # both need only the C++ compiler
        return EXTENSION_EXPECTED
    if backend in ("triton", "triton-fused"):
        return triton_interpreting() and importlib.util.find_spec("triton") is not None
    return False


def require(backend: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
    """Skip the test where `backend` cannot take this device / dtype; fail it where the
    backend should run here but does not."""
    device = torch.device(device)
    why = unavailable_reason(backend, device, dtype)
    if why is None:
        return
    if dtype in REGISTRY[backend].dtypes and _should_run(backend, device):
        pytest.fail(f"backend {backend!r} should run here but is unavailable: {why}")
    pytest.skip(f"backend {backend!r} unavailable: {why}")
