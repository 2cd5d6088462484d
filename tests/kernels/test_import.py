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
