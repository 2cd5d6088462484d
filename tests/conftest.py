import os

# Backend "triton" runs in the shared test matrix under Triton's CPU interpreter. Triton reads
# TRITON_INTERPRET when a kernel is decorated (and other imports, e.g. open_clip's, may import
# Triton early), so it is switched on here, before anything else is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import zlib

import pytest
import torch

# The shared helpers (naive.py, checks.py, backends_under_test.py, tiny_clip.py, ...) are the
# package tests.helpers: pytest puts the repository root on sys.path (tests/ is a package).


@pytest.fixture(autouse=True)
def _poison_fresh_allocations():
    """Fill every torch.empty / at::empty with NaN so an output a kernel forgets to write shows."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.utils.deterministic.fill_uninitialized_memory = prev_fill
    torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


@pytest.fixture
def gen(request):
    """A fresh, seeded generator per test: fresh random inputs, reproducible failures."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))
