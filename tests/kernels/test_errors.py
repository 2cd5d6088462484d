"""Bad input gets a clear error naming the argument, raised before any work."""
import numpy as np
import pytest
import torch

from tests.helpers.backends_under_test import BACKENDS, require
from ost_kernels import BackendUnavailableError, od_plan, od_solve

V = torch.randn(2, 3, 8)
D = torch.randn(4, 5, 8)


def call(fn=od_solve, video=V, desc=D, **kw):
    return fn(video, desc, **kw)


@pytest.mark.parametrize("fn", [od_solve, od_plan])
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(video=torch.randn(3, 8)), ValueError, r"`video` must be a 3-D tensor \(B, T, d\)"),
        (dict(desc=torch.randn(1, 4, 5, 8)), ValueError, r"`desc` must be a 3-D tensor \(A, N, d\)"),
        (dict(video=[[1.0]]), TypeError, r"`video` must be a torch.Tensor"),
        (dict(desc=torch.randn(4, 5, 7)), ValueError, r"embedding sizes differ.*d=8.*d=7"),
        (dict(desc=torch.randn(4, 5, 8, device="meta")), ValueError, r"`video` is on cpu but `desc` is on meta"),
        (dict(video=torch.ones(2, 3, 8, dtype=torch.int64)), TypeError, r"`video` has dtype torch.int64"),
        (dict(desc=torch.randn(4, 5, 8, dtype=torch.complex64)), TypeError, r"`desc` has dtype torch.complex64"),
        (dict(desc=D.double()), TypeError, r"`video` is torch.float32 but `desc` is torch.float64"),
        (dict(video=torch.randn(0, 3, 8)), ValueError, r"`video` \(B, T, d\) must have no zero-size"),
        (dict(video=torch.randn(2, 0, 8)), ValueError, r"`video` \(B, T, d\) must have no zero-size"),
        (dict(desc=torch.randn(0, 5, 8)), ValueError, r"`desc` \(A, N, d\) must have no zero-size"),
        (dict(desc=torch.randn(4, 0, 8)), ValueError, r"`desc` \(A, N, d\) must have no zero-size"),
        (dict(video=torch.randn(2, 3, 0), desc=torch.randn(4, 5, 0)), ValueError, r"`video` \(B, T, d\) must have no zero-size"),
        (dict(frame_mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, r"`frame_mask` must have shape \(B, T\) = \(2, 3\)"),
        (dict(desc_mask=torch.ones(5, 4, dtype=torch.bool)), ValueError, r"`desc_mask` must have shape \(A, N\) = \(4, 5\)"),
        (dict(frame_mask=torch.ones(2, 3)), TypeError, r"`frame_mask` must have dtype torch.bool"),
        (dict(desc_mask=torch.ones(4, 5, dtype=torch.int64)), TypeError, r"`desc_mask` must have dtype torch.bool"),
        (dict(frame_mask=[[True]]), TypeError, r"`frame_mask` must be a bool tensor"),
        (dict(frame_mask=torch.tensor([[True, True, True], [False, False, False]])), ValueError,
         r"`frame_mask` has rows with no valid entry.*rows \[1\]"),
        (dict(desc_mask=torch.ones(4, 5, dtype=torch.bool).index_fill(0, torch.tensor([2]), False)), ValueError,
         r"`desc_mask` has rows with no valid entry.*rows \[2\]"),
        (dict(frame_mask=torch.ones(2, 3, dtype=torch.bool, device="meta")), ValueError, r"`frame_mask` is on meta"),
        (dict(eps=0.0), ValueError, r"`eps` must be a finite number > 0, got 0.0"),
        (dict(eps=-0.1), ValueError, r"`eps` must be a finite number > 0"),
        (dict(eps=float("inf")), ValueError, r"`eps` must be a finite number > 0"),
        (dict(eps=float("nan")), ValueError, r"`eps` must be a finite number > 0"),
        (dict(eps="0.1"), TypeError, r"`eps` must be a positive float"),
        (dict(max_iter=0), ValueError, r"`max_iter` must be >= 1 and <= 2\*\*31 - 1, got 0"),
        (dict(max_iter=2**63), ValueError, r"`max_iter` must be >= 1 and <= 2\*\*31 - 1, got 9223372036854775808"),
        (dict(max_iter=2.5), TypeError, r"`max_iter` must be an int"),
        (dict(max_iter=True), TypeError, r"`max_iter` must be an int"),
        (dict(tol=-1e-3), ValueError, r"`tol` must be a finite number >= 0"),
        (dict(tol=float("nan")), ValueError, r"`tol` must be a finite number >= 0"),
        (dict(tol=None), TypeError, r"`tol` must be a float"),
        (dict(normalize=1), TypeError, r"`normalize` must be True or False, got builtins.int 1"),
        (dict(normalize=np.int64(1)), TypeError, r"`normalize` must be True or False, got numpy.int64"),
        (dict(backend="numpy"), ValueError, r"unknown `backend` 'numpy'; expected one of 'auto', 'triton'"),
    ],
)
def test_bad_input(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        call(fn, **kwargs)


@pytest.mark.parametrize(
    "backend, match",
    [
        ("triton", r"backend 'triton' is not available: backend 'triton' runs on CUDA tensors \(or on CPU tensors "
                   r"under TRITON_INTERPRET=1\), but the inputs are on cpu"),
        ("cuda", r"backend 'cuda' is not available: backend 'cuda' runs on CUDA tensors, but the inputs are on cpu"),
    ],
)
def test_unavailable_backend_says_why(backend, match, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # tests/conftest.py sets it
    with pytest.raises(BackendUnavailableError, match=match):
        od_solve(V, D, backend=backend)


def test_triton_refuses_float64(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # so that CPU tensors get past the device check
    with pytest.raises(BackendUnavailableError, match="the Triton kernels take float32, float16 and bfloat16"):
        od_solve(V.double(), D.double(), backend="triton")


def test_nothing_runs_before_validation(monkeypatch):
    """The checks run before any backend is looked up or any work is done."""
    import ost_kernels.backends as backends

    def fail(*args, **kwargs):
        raise AssertionError("a backend was resolved before the arguments were checked")

    monkeypatch.setattr(backends, "resolve", fail)
    with pytest.raises(ValueError, match="`eps`"):
        od_solve(V, D, eps=0)


def test_triton_limits_make_auto_fall_back(monkeypatch):
    """A shape beyond a kernel's hard limit is a reason, so "auto" passes over the backend."""
    from ost_kernels.backends import ProblemShape, unavailable_reason

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cpu = torch.device("cpu")
    assert unavailable_reason("triton-fused", cpu, torch.float32, ProblemShape(2, 200, 3, 4, 8)).startswith(
        "the fused Triton kernels take T and N up to 128")
    assert "split the batch" in unavailable_reason("triton-fused", cpu, torch.float32,
                                                   ProblemShape(70_000, 8, 3, 4, 8))
    # The two-phase path: a pair's block up to 4096 entries, any B.
    assert unavailable_reason("triton", cpu, torch.float32, ProblemShape(70_000, 8, 3, 4, 8)) is None
    assert unavailable_reason("triton", cpu, torch.float32, ProblemShape(2, 200, 3, 32, 8)).startswith(
        "the Triton kernels take a pair's T x N block up to 4096 entries")


def test_cuda_kernel_limits_are_a_reason(monkeypatch):
    import ost_kernels.backends.cuda as cuda
    from ost_kernels.backends import ProblemShape, resolve

    monkeypatch.setattr(cuda, "cuda_present", lambda: True)
    monkeypatch.setattr(cuda._cpp, "extension_reason", lambda *a: None)
    gpu = torch.device("cuda")
    assert cuda.reason(gpu, torch.float32, ProblemShape(2, 128, 3, 16, 8)) is None
    for T, N in ((129, 4), (8, 17)):
        why = cuda.reason(gpu, torch.float32, ProblemShape(2, T, 3, N, 8))
        assert why == ("the CUDA kernels take T up to 128 frames and N up to 16 descriptors "
                       f"(got T = {T}, N = {N})")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # so that Triton is not picked on its own
    assert resolve("auto", gpu, torch.float32, ProblemShape(2, 512, 3, 16, 8)).name == "torch"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("side", ["frame_mask", "desc_mask"])
def test_every_op_refuses_an_empty_mask_row(backend, side):
    """Called directly, past od_solve's checks, each backend's op refuses a mask row with no
    valid entry (mu = 1 / 0) with the same clear error instead of returning inf or NaN."""
    from ost_kernels.backends import REGISTRY
    from ost_kernels.options import SolverOptions

    require(backend)
    masks = dict(frame_mask=torch.ones(2, 3, dtype=torch.bool), desc_mask=torch.ones(4, 5, dtype=torch.bool))
    masks[side][1] = False
    with pytest.raises((ValueError, RuntimeError), match=f"{side}.? has rows with no valid entry"):
        REGISTRY[backend].forward(V, D, masks["frame_mask"], masks["desc_mask"], None, None, SolverOptions())


def test_numpy_bool_is_a_bool():
    assert torch.equal(od_solve(V, D, normalize=np.True_), od_solve(V, D, normalize=True))


def test_cpu_cache_budget_variable_is_named(monkeypatch):
    from ost_kernels.backends import _cpp

    monkeypatch.setenv("OST_KERNELS_CPU_CACHE_MB", "lots")
    with pytest.raises(ValueError, match=r"OST_KERNELS_CPU_CACHE_MB must be a number of MiB >= 0 .*got 'lots'"):
        _cpp.cache_budget("OST_KERNELS_CPU_CACHE_MB", 64)
    monkeypatch.setenv("OST_KERNELS_CPU_CACHE_MB", "0.5")
    assert _cpp.cache_budget("OST_KERNELS_CPU_CACHE_MB", 64) == 2**19


def test_od_plan_refuses_plans_beyond_its_budget(monkeypatch):
    video, desc = torch.randn(4, 8, 16), torch.randn(100, 4, 16)
    monkeypatch.setenv("OST_KERNELS_PLAN_MAX_MB", "0.01")  # 12,800 values = 0.05 MiB
    with pytest.raises(ValueError, match=r"od_plan: the plans need 0.05 MiB \(B \* A \* T \* N = 4 \* 100 \* 8 \* 4 "
                                         r"values\), above the 0.01 MiB budget"):
        od_plan(video, desc, backend="torch")
    monkeypatch.setenv("OST_KERNELS_PLAN_MAX_MB", "1")
    assert od_plan(video, desc, backend="torch").shape == (4, 100, 8, 4)


def test_meta_tensors_give_meta_scores():
    """Shape inference on the meta device (no data, so no data-dependent check may read it)."""
    video, desc = torch.randn(2, 3, 8, device="meta"), torch.randn(4, 5, 8, device="meta")
    mask = torch.ones(2, 3, dtype=torch.bool, device="meta")
    scores = od_solve(video, desc, frame_mask=mask, backend="torch")
    assert scores.device.type == "meta" and scores.shape == (2, 4)
    assert od_solve(video, desc, normalize=False, backend="torch").shape == (2, 4)
