"""Peak extra memory of one call: host RSS on the CPU, the caching allocator on CUDA.

On the CPU, Linux's VmHWM (peak resident set) is reset through /proc/self/clear_refs before
the call and read after it; the extra is the peak minus the resident set before the call.
"""
from __future__ import annotations

import ctypes
import ctypes.util

import torch

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c"))
except OSError:
    _libc = None


def _release_freed_heap() -> None:
    # glibc keeps freed blocks resident; hand them back so that the call's own allocations
    # show up in the peak instead of silently reusing pages an earlier test left behind.
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def peak_extra_bytes(fn, device: torch.device):
    """Run fn() once; return (its result, peak extra bytes or None if not measurable)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device) - base
    if not cpu_supported():
        return fn(), None
    _release_freed_heap()
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    out = fn()
    return out, max(0, _status_kib("VmHWM") - base) * 1024
