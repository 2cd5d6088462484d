"""Lazy loading of the compiled extension ost_kernels._C.

Nothing here runs at import time: the extension is imported the first time a backend asks
for it, and a missing or broken build becomes a reason string, not an import error.
"""
from __future__ import annotations

import importlib
import os

import torch

DISABLE_ENV = "OST_KERNELS_DISABLE_EXTENSION"


def constant_for_compile(fn):
    """Mark fn so that torch.compile calls it at trace time and uses its (constant) result
    instead of tracing it: what torch.compiler.assume_constant_result does, without importing
    torch._dynamo (and with it Triton) when this package is imported.
    tests/test_cpu_op.py checks that the public decorator still sets this attribute."""
    fn._dynamo_marked_constant = True
    return fn


_UNSET = object()
_reason = _UNSET


@constant_for_compile
def unavailable_reason() -> str | None:
    """None once ost_kernels._C is loaded and its ops registered; else why it is not."""
    global _reason
    if _reason is _UNSET:
        _reason = _load()
    return _reason


def _load() -> str | None:
    if os.environ.get(DISABLE_ENV, "0") == "1":
        return f"the C++ extension is disabled by {DISABLE_ENV}=1"
    try:
        importlib.import_module("ost_kernels._C")
    except ImportError as exc:
        return (
            f"the C++ extension ost_kernels._C is not built ({exc}); "
            "build it with `pip install -e . --no-build-isolation` (see README)"
        )
    # Python-side registrations (fake kernels, autograd) need the ops to exist first.
    importlib.import_module("ost_kernels.ops_registration")
    return None


@constant_for_compile
def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ost_kernels::<op> has a kernel for the dispatch key ("CPU", "CUDA")."""
    return unavailable_reason() is None and torch._C._dispatch_has_kernel_for_dispatch_key(
        f"ost_kernels::{op}", dispatch_key
    )
