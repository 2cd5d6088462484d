"""Backend "triton": the fused Triton kernels (ost_kernels/triton/), the main GPU path.

ost_kernels.triton.ops, which imports Triton and registers the ops, is loaded the first time
this backend is asked for. Under TRITON_INTERPRET=1 the kernels also run on CPU tensors
(Triton's interpreter), which is how the tests run them without a GPU.
"""
from __future__ import annotations

import importlib
import importlib.util

import torch

from .._env import cuda_present, load_once, triton_interpreting
from ..triton.configs import MAX_PAIR_SIDE, MAX_VIDEO_TILES, pow2
from .base import Backend, ProblemShape, unsupported_dtype, wrong_device

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
OPS_MODULE = "ost_kernels.triton.ops"


@load_once
def _load_reason() -> str | None:
    """None once Triton and the ops it registers have loaded."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton)"
    try:
        importlib.import_module(OPS_MODULE)
    except Exception as exc:  # a broken Triton install must not break the other backends
        return f"Triton failed to load ({type(exc).__name__}: {exc})"
    return None


def reason(device: torch.device, dtype: torch.dtype, shape: ProblemShape | None = None) -> str | None:
    if device.type == "cpu" and triton_interpreting():
        why = None
    else:
        why = wrong_device("triton", device, "cuda", note=" (or on CPU tensors under TRITON_INTERPRET=1)")
    why = why or unsupported_dtype("Triton", DTYPES, dtype)
    if why is None and device.type == "cuda" and not cuda_present():
        why = "no CUDA device is available"
    return why or _limit_reason(shape) or _load_reason()


def _limit_reason(shape: ProblemShape | None) -> str | None:
    """The kernels' hard limits: a pair's T x N block must fit one tile side, and the video
    tiles one grid axis (class tiles sit on the unlimited axis)."""
    if shape is None:
        return None
    if pow2(shape.T) > MAX_PAIR_SIDE or pow2(shape.N) > MAX_PAIR_SIDE:
        return f"the Triton kernels take T and N up to {MAX_PAIR_SIDE} (got T = {shape.T}, N = {shape.N})"
    if shape.B > MAX_VIDEO_TILES:
        return f"the Triton kernels take B up to {MAX_VIDEO_TILES} videos a call (got {shape.B}); split the batch"
    return None


BACKEND = Backend(name="triton", dtypes=DTYPES, reason=reason,
                  ops=("ost_kernels::od_forward_triton", "ost_kernels::od_backward_triton"),
                  features=frozenset({"weights", "reg_m"}))
