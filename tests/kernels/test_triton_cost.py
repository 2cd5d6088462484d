"""The static cost model (benchmarks/triton_cost.py) reads what it claims to read: the SASS of
a compiled forward has the three loops it classifies (the GEMM K-loop on tensor cores, the
scaling-form and the log-domain Sinkhorn loops), the specializations remove what they say they
remove, and the per-pair counts come out of the key tile. No timing: the counts are facts of
the compiled code."""
import importlib.util
import os
import sys

import pytest

from ost_kernels.triton import aot, configs

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed"),
              pytest.mark.heavy]  # compiles and disassembles four variants: ~20 s
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks"))

KEY_TILE = configs.TileConfig(1, 32, 4, 3)


@pytest.fixture(scope="module")
def profiles(monkeypatch_module):
    import triton_cost

    monkeypatch_module.delenv("TRITON_INTERPRET", raising=False)
    mk = lambda **kw: aot.Variant(90, "forward", "bf16", 32, 4, KEY_TILE, **kw)  # noqa: E731
    return {name: triton_cost.kernel_profile(v) for name, v in
            (("general", mk()), ("scaling", mk(log_domain=False)), ("fixed", mk(log_domain=False, fixed=True)),
             ("relaxed", aot.Variant(90, "forward-relaxed", "bf16", 32, 4, KEY_TILE)))}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_loops_are_found_and_classified(profiles):
    general = profiles["general"]
    assert {"gemm", "scaling", "log", "once"} <= set(general)
    assert general["gemm"]["tensor"] > 0 and general["gemm"]["wgmma"]  # 128 x 32 tile, 4 warps: wgmma
    assert general["scaling"]["tensor"] == 0 and general["scaling"]["mufu"] > 0
    assert general["log"]["mufu"] > general["scaling"]["mufu"]  # exp2 per entry, not divisions per row
    assert general["spill_bytes"] == 0


def test_specializations_remove_code(profiles):
    general, scaling, fixed = profiles["general"], profiles["scaling"], profiles["fixed"]
    assert "log" not in scaling and "log" not in fixed
    assert scaling["once"]["total"] < general["once"]["total"]
    assert fixed["scaling"]["total"] < scaling["scaling"]["total"]
    # No block-wide "anyone active?" in the fixed loop: no barrier, no shared memory.
    assert fixed["scaling"]["bar"] == 0
    # One division per frame and per descriptor a thread holds: 8 frames and 4 descriptors.
    assert scaling["scaling"]["mufu"] == 12


def test_relaxed_loops_are_found_and_classified(profiles):
    """The relaxed forward's scaling loop holds the damped update (an LG2 and an EX2 per frame
    and descriptor a thread holds, no division) and is told apart from its log-domain loop."""
    relaxed, general = profiles["relaxed"], profiles["general"]
    assert {"gemm", "scaling", "log", "once"} <= set(relaxed)
    assert relaxed["scaling"]["mufu"] == 2 * 12
    assert relaxed["log"]["mufu"] > relaxed["scaling"]["mufu"]
    assert relaxed["spill_bytes"] == 0 and general["spill_bytes"] == 0
