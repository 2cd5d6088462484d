"""Running `python -m ost ...` under torchrun with N processes, on a free port."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))

needs_torchrun = pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_ost(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """torchrun --nproc_per_node nproc -m ost <args>; raises with the processes' output on failure."""
    cmd = [TORCHRUN, "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1", "--master_port",
           str(free_port()), "-m", "ost", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done
