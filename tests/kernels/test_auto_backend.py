""""auto" measures on CUDA tensors (ost_kernels/backends/auto.py): exercised here on CPU
tensors with the interpreter's Triton backends and an injected timer."""
import json

import pytest
import torch

from tests.helpers.backends_under_test import require
from tests.helpers.inputs import case
from ost_kernels import od_solve
from ost_kernels import backends
from ost_kernels.backends import auto


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """CPU calls measured among triton, triton-fused and cpu, the timer's answers given by the
    test, the cache in a fresh folder and memory."""
    require("triton")
    require("cpu")
    monkeypatch.setattr(auto, "MEASURED_DEVICE_TYPES", {"cpu"})
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ["triton", "triton-fused", "cpu"])
    monkeypatch.setenv(auto.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(auto.PIN_ENV, raising=False)
    monkeypatch.setattr(auto, "_memory", {})
    calls = []
    speeds = {"triton": 3.0, "triton-fused": 1.0, "cpu": 2.0}

    def timer(fn, device, name):
        fn()  # the trial really runs the backend
        calls.append(name)
        return speeds[name]

    monkeypatch.setattr(auto, "TIMER", timer)
    return calls, speeds, tmp_path


def test_the_fastest_is_measured_once_and_kept_on_disk(measured, gen):
    calls, speeds, folder = measured
    video, desc, _, _ = case(3, 5, 6, 4, 16, gen)
    scores, info = od_solve(video, desc, return_info=True)
    assert info.backend == "triton-fused" and info.choice.startswith("measured (")
    assert "triton-fused 1.000 ms" in info.choice and sorted(calls) == ["cpu", "triton", "triton-fused"]
    torch.testing.assert_close(scores, od_solve(video, desc, backend="torch"), rtol=1e-5, atol=1e-6)
    entry = next(iter(json.loads((folder / auto.CACHE_FILE).read_text()).values()))
    assert entry["backend"] == "triton-fused" and entry["times_ms"]["cpu"] == 2.0
    # The same kind of call (B and A in the same power-of-two buckets): not measured again,
    # from memory and then, in a fresh process's memory, from the file.
    od_solve(torch.cat([video, video[:1]]), desc)
    auto._memory.clear()
    _, info = od_solve(video, desc, return_info=True)
    assert len(calls) == 3 and info.backend == "triton-fused"
    # Another kind (gradients needed): measured again, forward and backward.
    speeds["cpu"] = 0.5
    _, info = od_solve(video.clone().requires_grad_(True), desc, return_info=True)
    assert info.backend == "cpu" and len(calls) == 6


def test_a_pin_and_tracing_skip_the_measurement(measured, gen, monkeypatch):
    calls, _, _ = measured
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    monkeypatch.setenv(auto.PIN_ENV, "torch")
    _, info = od_solve(video, desc, return_info=True)
    assert (info.backend, info.choice) == ("torch", "pinned by OST_KERNELS_BACKEND=torch")
    monkeypatch.setenv(auto.PIN_ENV, "fastest")
    with pytest.raises(ValueError, match="OST_KERNELS_BACKEND='fastest' names no backend"):
        od_solve(video, desc)
    monkeypatch.delenv(auto.PIN_ENV)
    monkeypatch.setattr(auto, "_tracing", lambda: True)
    _, info = od_solve(video, desc, return_info=True)
    assert info.backend == "triton" and info.choice == "fixed order (tracing: not measured)"
    assert calls == []


def test_cpu_tensors_keep_the_fixed_order(gen, monkeypatch):
    monkeypatch.delenv(auto.PIN_ENV, raising=False)
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    _, info = od_solve(video, desc, return_info=True)
    assert (info.backend, info.choice) == ("cpu", "fixed order")
    _, info = od_solve(video, desc, backend="torch", return_info=True)
    assert info.choice == "asked for"


def test_a_backend_that_fails_its_trial_is_not_chosen(measured, gen, monkeypatch):
    calls, speeds, _ = measured
    real = auto.TIMER

    def timer(fn, device, name):
        if name == "triton-fused":
            raise RuntimeError("out of shared memory")
        return real(fn, device, name)

    monkeypatch.setattr(auto, "TIMER", timer)
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    _, info = od_solve(video, desc, return_info=True)
    assert info.backend == "cpu" and "triton-fused" not in info.choice


def test_a_broken_or_unwritable_cache_costs_a_measurement_never_an_error(measured, gen, monkeypatch, tmp_path):
    calls, _, folder = measured
    monkeypatch.setattr(auto, "TIMER", lambda fn, device, name: calls.append(name) or {"cpu": 1.0}.get(name, 2.0))
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    (folder / auto.CACHE_FILE).write_text("{not json")
    _, info = od_solve(video, desc, return_info=True)
    assert info.backend == "cpu" and len(calls) == 3  # measured again, and the file rewritten whole
    assert next(iter(json.loads((folder / auto.CACHE_FILE).read_text()).values()))["backend"] == "cpu"
    # A cache folder that cannot be made (a file stands there): the choice stays in memory.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(auto.CACHE_ENV, str(blocker / "cache"))
    auto._memory.clear()
    _, info = od_solve(video, desc, return_info=True)
    _, again = od_solve(video, desc, return_info=True)
    assert info.backend == again.backend == "cpu" and len(calls) == 6


def test_every_measurement_failing_falls_back_to_the_fixed_order_and_says_why(measured, gen, monkeypatch):
    def timer(fn, device, name):
        raise RuntimeError(f"{name} would not launch")

    monkeypatch.setattr(auto, "TIMER", timer)
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    _, info = od_solve(video, desc, return_info=True)
    assert info.backend == "triton" and info.choice.startswith("fixed order (every measurement failed")
    assert "cpu would not launch" in info.choice
