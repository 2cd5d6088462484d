"""The package imports, and runs its pure-PyTorch backend, without the compiled extension
and without touching a GPU."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(code: str, **env) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_loads_no_extension_and_queries_no_gpu():
    out = run("""
        import sys, torch
        calls = []
        torch.cuda.is_available = lambda: calls.append("is_available") or False
        torch.cuda.device_count = lambda: calls.append("device_count") or 0
        import ost_kernels
        print("ext" if "ost_kernels._C" in sys.modules else "no-ext", "triton" if "triton" in sys.modules else "no-triton", calls)
    """)
    assert out.split() == ["no-ext", "no-triton", "[]"]


def test_torch_backend_works_without_the_extension():
    out = run("""
        import torch
        from ost_kernels import available_backends, od_solve
        from ost_kernels.backends import BackendUnavailableError
        why = available_backends()["cpu"]
        v, d = torch.randn(2, 3, 8), torch.randn(4, 2, 8)
        _, info = od_solve(v, d, return_info=True)
        try:
            od_solve(v, d, backend="cpu")
        except BackendUnavailableError as e:
            print(info.backend, "|", e)
    """, OST_KERNELS_DISABLE_EXTENSION="1")
    backend, message = out.strip().split(" | ")
    assert backend == "torch"
    assert "backend 'cpu' is not available: the C++ extension is disabled by OST_KERNELS_DISABLE_EXTENSION=1" in message


def test_a_failed_extension_load_is_retried_once_a_build_lands(monkeypatch):
    """benchmarks/gpu_check.sh builds the extension in the background: a probe before the
    build finished must not keep its failure for the process (it did: load_once)."""
    import importlib

    from ost_kernels.backends import _cpp

    monkeypatch.setattr(_cpp, "_loaded", [])
    monkeypatch.setattr(_cpp, "_failed", {})
    files = [("_C.so", 1)]
    monkeypatch.setattr(_cpp, "_extension_files", lambda: tuple(files))
    real = importlib.import_module

    def not_yet(name, *args):
        if name == "ost_kernels._C":
            raise ImportError("no module named ost_kernels._C")
        return real(name, *args)

    monkeypatch.setattr(_cpp.importlib, "import_module", not_yet)
    assert "is not built" in _cpp.unavailable_reason()
    assert "is not built" in _cpp.unavailable_reason()  # the same files: the same answer, no retry
    monkeypatch.setattr(_cpp.importlib, "import_module", real)
    assert "is not built" in _cpp.unavailable_reason()
    files.append(("_C.so", 2))  # the build landed
    assert _cpp.unavailable_reason() is None
