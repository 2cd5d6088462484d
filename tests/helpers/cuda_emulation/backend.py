"""Test backend "cuda-emulated": the CUDA fallback (csrc/cuda/) run on the CPU.

emulate.cpp compiles the fallback's host code (od_host.h) and device code
(sinkhorn_groups.cuh) for the CPU, with each lane of a warp a thread, and registers them as
ost_kernels_emulated::od_forward / od_backward. Here they get the same fake kernels and
autograd as the real ops (ost_kernels.backends._cpp.register_op_library) and a Backend record,
which backends_under_test.py adds to the registry: the shared test matrix then runs the CUDA
code on this GPU-less machine. It is built on first use (about a minute, then cached under
build/).
"""
from __future__ import annotations

import os

import torch

from ost_kernels._env import load_once
from ost_kernels.backends import _cpp, cuda
from ost_kernels.backends.base import Backend, ProblemShape, unsupported_dtype, wrong_device

NAME = "cuda-emulated"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


@load_once
def module():
    """The compiled emulation (a Python module), or the exception its build raised."""
    from torch.utils.cpp_extension import load

    build = os.path.join(ROOT, "build", "cuda_emulation")
    os.makedirs(build, exist_ok=True)
    try:
        mod = load(name="ost_kernels_cuda_emulation", sources=[os.path.join(HERE, "emulate.cpp")],
                   extra_include_paths=[os.path.join(ROOT, "csrc")], extra_cflags=["-O2", "-std=c++20"],
                   build_directory=build, verbose=False)
    except Exception as exc:  # reported as the backend's reason
        return exc
    _cpp.register_op_library("ost_kernels_emulated")
    return mod


def reason(device: torch.device, dtype: torch.dtype, shape: ProblemShape | None = None) -> str | None:
    why = (wrong_device(NAME, device, "cpu") or unsupported_dtype("CUDA", cuda.DTYPES, dtype)
           or cuda.limit_reason(shape))
    if why is None and isinstance(module(), Exception):
        why = f"the CUDA emulation did not build: {module()}"
    return why


BACKEND = Backend(name=NAME, dtypes=cuda.DTYPES, reason=reason,
                  ops=("ost_kernels_emulated::od_forward", "ost_kernels_emulated::od_backward"),
                  cache=cuda.BACKEND.cache, keeps_cache=cuda.keeps_sims, features=cuda.BACKEND.features)
