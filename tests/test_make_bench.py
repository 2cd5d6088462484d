"""`make bench`, the README's first command, stays the short headline run (it was all 859
benchmark cases, hours on 2 cores, without progress); `make bench-full` is the whole sweep.
Only collected here, never timed."""
import re
from collections import Counter
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def collected(target: str) -> list[str]:
    """The benchmark cases `make <target>` runs (its recipe, collected instead of run)."""
    recipe = subprocess.run(["make", "-s", "-n", target, "STAMP=", "PY=python"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    argv = [a for a in shlex.split(recipe) if a != "-v"]  # -q then lists the cases, one a line
    assert argv[:3] == ["python", "-m", "pytest"], recipe
    done = subprocess.run([sys.executable, *argv[1:], "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_bench_is_the_headline_and_bench_full_the_sweep():
    headline, full = collected("bench"), collected("bench-full")
    cases = [re.search(r"\[(.*)\]", case).group(1) for case in headline]
    # A = 51 and 400, T = 8 and 32, forward and forward + backward: 8 cases a provider at most
    # (how many providers are collected depends on what runs here: Triton under its interpreter).
    per_provider = Counter(c.rsplit("-", 1)[1] for c in cases)
    assert headline and max(per_provider.values()) <= 8, per_provider
    assert all(case.startswith("benchmarks/test_bench_od_solve.py::test_od_solve[") for case in headline)
    assert {c.split("-")[0] for c in cases} == {"A51", "A400"} and all("-tol-" in c for c in cases)
    assert {c.rsplit("-", 1)[1] for c in cases} >= {"einops", "matmul", "torch", "cpu"}
    assert set(headline) < set(full) and len(full) > 10 * len(headline)
