"""The CUDA sources are compiled wherever nvcc is (CI included) and register their kernels.

They cannot run here (no GPU); benchmarks/gpu_check.sh checks them against backend "torch"
on a GPU. This test makes sure they keep compiling and stay registered for every op."""
import os
import shutil

import pytest
import torch

from ost_kernels.backends._cpp import DISABLE_ENV, unavailable_reason

OPS = ("od_forward", "od_backward")


def _nvcc_present() -> bool:
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    return shutil.which("nvcc") is not None or os.path.exists(os.path.join(home, "bin", "nvcc"))


def _cuda_build_expected() -> bool:
    return (_nvcc_present() and os.environ.get("OST_KERNELS_BUILD_CUDA", "1") != "0"
            and os.environ.get(DISABLE_ENV, "0") != "1" and os.environ.get("OST_KERNELS_SKIP_EXTENSION", "0") != "1")


@pytest.mark.parametrize("op", OPS)
def test_cuda_kernels_are_registered(op):
    if not _cuda_build_expected():
        pytest.skip("no nvcc here (or the CUDA build is switched off): the CUDA sources were not compiled")
    why = unavailable_reason()
    assert why is None, f"the extension should be built here: {why}"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ost_kernels::{op}", "CUDA"), (
        f"ost_kernels::{op} has no CUDA kernel although nvcc is here: was the extension built with CUDA_HOME set?"
    )
    # And the CPU kernel sits beside it in the same library.
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ost_kernels::{op}", "CPU")


def test_cuda_backend_says_why_it_cannot_run_here():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from ost_kernels import available_backends

    assert available_backends("cuda")["cuda"] in (
        "no CUDA device is available",
        unavailable_reason(),
        "ost_kernels._C was built without CUDA kernels (no nvcc / CUDA_HOME at build time, or OST_KERNELS_BUILD_CUDA=0)",
    )
    assert "float64" in available_backends("cuda", torch.float64)["cuda"]
