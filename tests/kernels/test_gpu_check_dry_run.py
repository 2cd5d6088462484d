"""benchmarks/gpu_check.py runs rarely (only when a session is lent a GPU, with minutes of device
time), so a broken script would waste that run: its --dry-run (the same code on the CPU, tiny
shapes, Triton interpreted) must pass on every CI run."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_check_dry_run_passes():
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--dry-run"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    said = done.stdout + done.stderr
    assert done.returncode == 0 and "all checks passed" in said, said[-4000:]
