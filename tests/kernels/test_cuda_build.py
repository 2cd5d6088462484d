"""The CUDA sources are compiled wherever nvcc is (CI included) and register their kernels.

They cannot run here (no GPU); benchmarks/gpu_check.sh checks them against backend "torch"
on a GPU. These tests make sure they keep compiling, stay registered for every op, and keep
every kernel's registers without spills (ptxas's report, tabulated in
benchmarks/out/cuda_resources.md, which CI prints)."""
import os
import shutil

import pytest
import torch

from ost_kernels import cuda_resources
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

    # A reason, never None (available) without a GPU: the built extension's own reason when it
    # did not load, else that no device is there or that it was built without CUDA kernels.
    reason = available_backends("cuda")["cuda"]
    assert reason is not None
    assert reason in (
        "no CUDA device is available",
        unavailable_reason() or "no CUDA device is available",
        "ost_kernels._C was built without CUDA kernels (no nvcc / CUDA_HOME at build time, or OST_KERNELS_BUILD_CUDA=0)",
    )
    assert "float64" in available_backends("cuda", torch.float64)["cuda"]


def test_cuda_kernels_do_not_spill_on_sm90():
    """Each kernel template instance (Sinkhorn at N <= 4, 8, 16 and groups of G = 1 to 32
    lanes; backward weights per dtype)
    fits its registers on an H100 / H200: a spill would put the pair's T x N block in local
    memory, the thing the register-resident design exists to avoid."""
    if cuda_resources.cuda_home() is None:
        pytest.skip("no nvcc here: the CUDA sources cannot be compiled")
    rows, report = cuda_resources.resource_usage(90)
    kernels = sorted(r.kernel.split("(")[0] for r in rows)
    sinkhorn = sorted(f"void sinkhorn_groups_kernel<{nmax}, {g}>" for nmax in (4, 8, 16) for g in (1, 2, 4, 8, 16, 32))
    assert kernels == sorted(["void plan_weights_kernel<c10::BFloat16>", "void plan_weights_kernel<c10::Half>",
                              "void plan_weights_kernel<float>", *sinkhorn]), report
    cuda_resources.write_table(rows)
    spilled = cuda_resources.local_memory_users(rows)
    assert not spilled, cuda_resources.table(spilled)
