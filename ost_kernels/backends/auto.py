"""What "auto" runs: on CUDA tensors, the backend measured fastest for the call's kind; the
documented fixed order elsewhere.

Which backend is fastest on a given card, dtype and shape is what nobody can know before it
runs. So on CUDA tensors the first call of a kind (the key: device name and capability, torch
and Triton versions, dtype, T, N, d, power-of-two buckets of B and A, weights, reg_m, tol = 0,
whether gradients are needed) times every eligible backend on the call's own inputs (a warm-up
run, then ROUNDS timed with CUDA events; forward + backward when gradients are needed), keeps
the fastest in memory and in a JSON file (CACHE_FILE under the user's cache folder,
~/.cache/ost_kernels; OST_KERNELS_CACHE_DIR moves it), and runs it from then on.

Not measured, the fixed order (triton, cuda, ... as registered) applies: on CPU tensors (the
C++ kernel, then torch), while torch.compile traces or a CUDA graph captures (no timing
there), and where OST_KERNELS_BACKEND=<name> pins a backend. od_solve(..., return_info=True)
says which backend ran and why (ODInfo.choice).
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
from typing import Callable

import torch

PIN_ENV = "OST_KERNELS_BACKEND"
CACHE_ENV = "OST_KERNELS_CACHE_DIR"
CACHE_FILE = "auto_backend.json"
ROUNDS = 3
# Device types whose "auto" measures (tests add "cpu" to exercise it with the interpreter).
MEASURED_DEVICE_TYPES = {"cuda"}

_memory: dict[str, dict] = {}
_lock = threading.Lock()


def cache_path() -> str:
    folder = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "ost_kernels")
    return os.path.join(folder, CACHE_FILE)


def _bucket(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def call_key(video: torch.Tensor, desc: torch.Tensor, needs: frozenset, fixed_iterations: bool, grad: bool) -> str:
    """The kind of call a measurement stands for (module doc)."""
    import importlib.metadata

    device = video.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        where = f"{name} sm_{major}{minor}"
    else:
        where = device.type
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = "none"
    (B, T, d), (A, N, _) = video.shape, desc.shape
    return "|".join([where, f"torch {torch.__version__}", f"triton {triton}", str(video.dtype).removeprefix("torch."),
                     f"T{T} N{N} d{d}", f"B~{_bucket(B)} A~{_bucket(A)}", ",".join(sorted(needs)) or "plain",
                     "tol=0" if fixed_iterations else "tol", "fwd+bwd" if grad else "fwd"])


def _load() -> dict:
    try:
        with open(cache_path()) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # no file yet, or a broken one: measured again


def _store(key: str, entry: dict) -> None:
    """Adds an entry to the cache file, written whole (a temporary file, then a rename)."""
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = _load()
        data[key] = entry
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".auto_backend.")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the choice stays in memory for this process


def cuda_event_timer(fn: Callable[[], object], device: torch.device, name: str = "") -> float:
    """Milliseconds of fn(): one warm-up run (compiles, autotunes), then the median of ROUNDS
    runs timed with CUDA events."""
    fn()
    times = []
    for _ in range(ROUNDS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


# The timer measurements use (tests inject their own); called as TIMER(fn, device, backend name).
TIMER = cuda_event_timer


def _tracing() -> bool:
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def choose(candidates: list[str], device: torch.device, key: Callable[[], str],
           trial: Callable[[str], Callable[[], object]], fixed: str) -> tuple[str, str]:
    """(backend name, why) for "auto": `candidates` the eligible backends in the fixed order,
    `fixed` the fixed order's pick, `trial(name)` a function running that backend on the call's
    inputs, `key()` the call's kind."""
    pinned = os.environ.get(PIN_ENV)
    if pinned:
        return pinned, f"pinned by {PIN_ENV}={pinned}"
    if device.type not in MEASURED_DEVICE_TYPES or len(candidates) < 2 or _tracing():
        why = "fixed order" + (" (tracing: not measured)" if device.type in MEASURED_DEVICE_TYPES and _tracing()
                               else "")
        return fixed, why
    k = key()
    with _lock:
        entry = _memory.get(k)
        if entry is None:
            entry = _load().get(k)
        if entry is None or entry.get("backend") not in candidates:
            times, errors = {}, {}
            for name in candidates:
                try:
                    times[name] = float(TIMER(trial(name), device, name))
                except Exception as exc:  # a backend that fails here is not chosen, and says why
                    errors[name] = f"{type(exc).__name__}: {exc}"
            if not times:
                return fixed, f"fixed order (every measurement failed: {errors})"
            entry = dict(backend=min(times, key=times.get), times_ms={n: round(t, 4) for n, t in times.items()},
                         errors=errors)
            _store(k, entry)
        _memory[k] = entry
    times = ", ".join(f"{n} {t:.3f} ms" for n, t in entry["times_ms"].items())
    return entry["backend"], f"measured ({times})"
