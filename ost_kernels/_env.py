"""Facts about the running environment, each looked up in one place.

Nothing here runs at import: the package must import on a machine without a GPU, a built
extension or Triton, and say what is missing only when a backend is asked for.
"""
from __future__ import annotations

import functools
import os

TRITON_INTERPRET_ENV = "TRITON_INTERPRET"


def triton_interpreting() -> bool:
    """Whether Triton kernels run under Triton's CPU interpreter (TRITON_INTERPRET=1).

    Read on every call, not cached: Triton itself reads the variable when a kernel is
    decorated, and tests switch it per test."""
    return os.environ.get(TRITON_INTERPRET_ENV, "0") == "1"


def constant_for_compile(fn):
    """Mark fn so that torch.compile calls it at trace time and uses its (constant) result
    instead of tracing it: what torch.compiler.assume_constant_result does, without importing
    torch._dynamo (and with it Triton) when this package is imported.
    tests/kernels/test_ops.py checks that the public decorator still sets this attribute."""
    fn._dynamo_marked_constant = True
    return fn


def load_once(fn):
    """Memoize a loader that takes no arguments (its first result, even None, is kept) and
    mark it constant for torch.compile: availability checks must not be traced."""
    result = []

    @functools.wraps(fn)
    def wrapper():
        if not result:
            result.append(fn())
        return result[0]

    return constant_for_compile(wrapper)


@load_once
def cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()
