"""Backend "cpu": the C++ CPU kernel of ost_kernels._C (csrc/cpu/), float64 included."""
from __future__ import annotations

import torch

from . import _cpp
from .base import Backend, unsupported_dtype, wrong_device

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def reason(device: torch.device, dtype: torch.dtype, shape=None) -> str | None:
    return (wrong_device("cpu", device, "cpu") or unsupported_dtype("CPU", DTYPES, dtype)
            or _cpp.extension_reason("CPU", "the built ost_kernels._C has no CPU kernel; rebuild it"))


BACKEND = Backend(name="cpu", dtypes=DTYPES, reason=reason, forward=_cpp.forward, backward=_cpp.backward)
