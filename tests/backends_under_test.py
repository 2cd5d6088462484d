"""The backends each correctness test runs on. A backend that cannot run here is skipped
with the reason it gives; one that should be here (the CPU kernel once built) is not."""
import pytest
import torch

from ost_kernels.backends import unavailable_reason

BACKENDS = ["torch", "cpu"]


def require(backend: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
    why = unavailable_reason(backend, torch.device(device), dtype)
    if why is not None:
        pytest.skip(f"backend {backend!r} unavailable: {why}")
