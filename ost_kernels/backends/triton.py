"""Backends "triton" (the two-phase path: cuBLAS sims in L2-sized chunks, then a lean Triton
Sinkhorn kernel; ost_kernels/triton/ops.py) and "triton-fused" (the fused forward, kept for
calibration and never picked by "auto"; ost_kernels/triton/fused.py).

Each one's ops module, which imports Triton and registers the ops, is loaded the first time the
backend is asked for. Under TRITON_INTERPRET=1 the kernels also run on CPU tensors (Triton's
interpreter), which is how the tests run them without a GPU.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util

import torch

from .._env import constant_for_compile, cuda_present, triton_interpreting
from ..triton.configs import MAX_PAIR_SIDE, MAX_VIDEO_TILES, pow2
from .base import Backend, ProblemShape, unsupported_dtype, wrong_device

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
OPS_MODULE = "ost_kernels.triton.ops"
FUSED_OPS_MODULE = "ost_kernels.triton.fused"
# The two-phase kernel holds a pair's TP x NP block in one program (ops.BLOCK_ENTRIES entries).
MAX_PAIR_ENTRIES = 4096


@constant_for_compile
@functools.cache
def _load_reason(module: str) -> str | None:
    """None once Triton and the ops `module` registers have loaded."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton)"
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken Triton install must not break the other backends
        return f"Triton failed to load ({type(exc).__name__}: {exc})"
    return None


def _device_reason(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type == "cpu" and triton_interpreting():
        why = None
    else:
        why = wrong_device(name, device, "cuda", note=" (or on CPU tensors under TRITON_INTERPRET=1)")
    why = why or unsupported_dtype("Triton", DTYPES, dtype)
    if why is None and device.type == "cuda" and not cuda_present():
        why = "no CUDA device is available"
    return why


def reason(device: torch.device, dtype: torch.dtype, shape: ProblemShape | None = None) -> str | None:
    why = _device_reason("triton", device, dtype)
    if why is None and shape is not None and pow2(shape.T) * pow2(shape.N) > MAX_PAIR_ENTRIES:
        why = (f"the Triton kernels take a pair's T x N block up to {MAX_PAIR_ENTRIES} entries, padded to powers "
               f"of two (got T = {shape.T}, N = {shape.N})")
    return why or _load_reason(OPS_MODULE)


def fused_reason(device: torch.device, dtype: torch.dtype, shape: ProblemShape | None = None) -> str | None:
    return _device_reason("triton-fused", device, dtype) or _fused_limit_reason(shape) or _load_reason(FUSED_OPS_MODULE)


def _fused_limit_reason(shape: ProblemShape | None) -> str | None:
    """The fused kernels' hard limits: a pair's T x N block must fit one tile side, and the
    video tiles one grid axis (class tiles sit on the unlimited axis)."""
    if shape is None:
        return None
    if pow2(shape.T) > MAX_PAIR_SIDE or pow2(shape.N) > MAX_PAIR_SIDE:
        return f"the fused Triton kernels take T and N up to {MAX_PAIR_SIDE} (got T = {shape.T}, N = {shape.N})"
    if shape.B > MAX_VIDEO_TILES:
        return (f"the fused Triton kernels take B up to {MAX_VIDEO_TILES} videos a call (got {shape.B}); "
                "split the batch")
    return None


BACKEND = Backend(name="triton", dtypes=DTYPES, reason=reason,
                  ops=("ost_kernels::od_forward_triton", "ost_kernels::od_backward_triton"),
                  features=frozenset({"weights", "reg_m"}))
FUSED = Backend(name="triton-fused", dtypes=DTYPES, reason=fused_reason,
                ops=("ost_kernels::od_forward_triton_fused", "ost_kernels::od_backward_triton_fused"),
                features=frozenset({"weights", "reg_m"}))
