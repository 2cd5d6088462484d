"""The compiled extension ost_kernels._C, shared by backends "cpu" and "cuda": loaded the first
time either is asked for (never at import), then given its Python-side registrations, fake
kernels for torch.compile and autograd. A missing or broken build becomes a reason string.
"""
from __future__ import annotations

import importlib
import os

import torch

from .._env import constant_for_compile
from ..contract import register_autograd, register_fakes

DISABLE_ENV = "OST_KERNELS_DISABLE_EXTENSION"


_loaded: list = []  # [None] once ost_kernels._C is loaded
_failed: dict = {}  # the last failure's reason, and the extension files it saw


def _extension_files() -> tuple:
    """The built extension files beside the package, with their times: a build that finishes
    after a failed import (benchmarks/gpu_check.sh builds in the background) changes this."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return tuple(sorted((f, os.stat(os.path.join(folder, f)).st_mtime_ns) for f in os.listdir(folder)
                        if f.startswith("_C.") and f.endswith((".so", ".pyd"))))


@constant_for_compile
def unavailable_reason() -> str | None:
    """None once ost_kernels._C is loaded and its ops registered; else why it is not. A success
    is kept; a failure only until an extension file appears or changes, so a build that
    finishes later is picked up in the same process."""
    if _loaded:
        return None
    if os.environ.get(DISABLE_ENV, "0") == "1":
        return f"the C++ extension is disabled by {DISABLE_ENV}=1"
    files = _extension_files()
    if _failed.get("files") == files:
        return _failed["reason"]
    try:
        importlib.import_module("ost_kernels._C")
    except ImportError as exc:
        _failed.update(files=files, reason=(f"the C++ extension ost_kernels._C is not built ({exc}); "
                                            "build it with `pip install -e . --no-build-isolation` (see README)"))
        return _failed["reason"]
    register_op_library("ost_kernels")
    _loaded.append(None)
    return None


_kernels: dict[tuple[str, str], bool] = {}


@constant_for_compile
def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ost_kernels::<op> has a kernel for the dispatch key ("CPU", "CUDA"); looked up
    once (every od_solve call asks)."""
    if unavailable_reason() is not None:
        return False  # not kept: the extension may load later
    if (op, dispatch_key) not in _kernels:
        _kernels[(op, dispatch_key)] = torch._C._dispatch_has_kernel_for_dispatch_key(f"ost_kernels::{op}",
                                                                                      dispatch_key)
    return _kernels[(op, dispatch_key)]


def extension_reason(dispatch_key: str, missing: str) -> str | None:
    """None if the extension is loaded with a kernel for this dispatch key, else why not."""
    why = unavailable_reason()
    if why is not None:
        return why
    if not has_kernel("od_forward", dispatch_key):
        return missing
    return None


def register_op_library(namespace: str) -> None:
    """Fake kernels (for torch.compile) and autograd of <namespace>::od_forward / od_backward,
    a library with csrc/op_schema.h's schema (ost_kernels; the tests' CUDA emulation has its
    own). The ops exist only once the library is loaded, so this cannot run at import time."""
    register_fakes(namespace)
    register_autograd(f"{namespace}::od_forward", getattr(torch.ops, namespace).od_backward)


def cache_budget(env: str, default_mb: float) -> int:
    """Bytes a forward may keep for the backward: the environment variable env in MiB, else
    default_mb."""
    text = os.environ.get(env)
    if text is None:
        return int(default_mb * 2**20)
    try:
        mb = float(text)
    except ValueError:
        mb = float("nan")
    if not (mb >= 0 and mb != float("inf")):
        raise ValueError(f"{env} must be a number of MiB >= 0 (0 keeps nothing), got {text!r}")
    return int(mb * 2**20)


def keeps_sims(video: torch.Tensor, desc: torch.Tensor, budget: int) -> bool:
    """Whether a forward on video (B, T, d) and desc (A, N, d) keeps its sims for the backward:
    a backward will run and the B * T * A * N values (float32; float64 for float64 inputs) fit
    budget bytes."""
    if not (torch.is_grad_enabled() and (video.requires_grad or desc.requires_grad)):
        return False  # no backward will run
    B, T, _ = video.shape
    A, N, _ = desc.shape
    itemsize = 8 if video.dtype == torch.float64 else 4
    return B * T * A * N * itemsize <= budget
