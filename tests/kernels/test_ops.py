"""The registered ops: built, opcheck-clean, traceable by torch.compile, checked on direct
calls, and computing only the gradients asked for. Numerical correctness runs in the shared
matrices (test_forward.py, test_backward.py, test_properties.py) for every backend.

Triton's ops are not opchecked or compiled here: under the interpreter (CPU tensors) torch's
fake-tensor tracing of a triton_op fails on data pointers; benchmarks/gpu_check.sh covers them
on a GPU."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers.backends_under_test import BACKENDS, require
from tests.helpers.inputs import case
from ost_kernels import od_solve
from ost_kernels.backends import REGISTRY
from ost_kernels.backends.base import op

# The ops of every backend that runs on CPU tensors here but Triton (see the module doc), from
# their Backend records; "cuda-emulated" is the CUDA fallback's code on the CPU
# (tests/helpers/cuda_emulation/).
OPCHECKED = [name for name in BACKENDS if not name.startswith("triton")]
FORWARD_OPS = {name: REGISTRY[name].ops[0] for name in OPCHECKED}
BACKWARD_OPS = {name: REGISTRY[name].ops[1] for name in OPCHECKED}


def _op(qualified):
    require(next(name for name, b in REGISTRY.items() if qualified in b.ops))  # loads its ops
    return op(qualified)


def test_cpu_backend_is_built_and_auto_picks_it():
    require("cpu")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("ost_kernels::od_forward", "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("ost_kernels::od_backward", "CPU")
    _, info = od_solve(torch.randn(2, 3, 8), torch.randn(4, 2, 8), return_info=True)
    assert info.backend == "cpu"


INF = float("inf")


def _op_args(gen, dtype, masks, requires_grad=False):
    video, desc, fm, dm = case(3, 5, 7, 3, 16, gen, dtype=dtype, masks=masks)
    video.requires_grad_(requires_grad)
    desc.requires_grad_(requires_grad)
    return video, desc, fm, dm


@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", list(FORWARD_OPS))
def test_opcheck_forward(backend, dtype, masks, gen):
    require(backend, dtype=dtype)
    video, desc, fm, dm = _op_args(gen, dtype, masks, requires_grad=dtype != torch.bfloat16)
    op = _op(FORWARD_OPS[backend]).default
    fw = torch.rand(3, 7, generator=gen, dtype=dtype) + 0.1
    dw = torch.rand(5, 3, generator=gen, dtype=torch.float32) + 0.1  # any float dtype
    for keep_cache in (False, True):
        torch.library.opcheck(op, (video, desc, fm, dm, None, None, 0.1, 50, 1e-3, INF, INF, True, 0.0, keep_cache))
        torch.library.opcheck(op, (video, desc, fm, dm, fw, dw, 0.1, 50, 1e-3, 0.5, INF, True, 1.0, keep_cache))


@pytest.mark.parametrize("keep_cache", [False, True], ids=["recompute", "cache"])
@pytest.mark.parametrize("sides", [(True, True), (True, False), (False, True)], ids=["both", "video", "desc"])
@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("backend", list(BACKWARD_OPS))
def test_opcheck_backward(backend, dtype, masks, sides, keep_cache, gen):
    require(backend, dtype=dtype)
    video, desc, fm, dm = _op_args(gen, dtype, masks)
    forward = _op(FORWARD_OPS[backend])
    _, f, g, _, _, cache = forward(video, desc, fm, dm, None, None, 0.1, 50, 1e-3, INF, INF, True, 0.0, keep_cache)
    grad = torch.randn(3, 5, generator=gen, dtype=f.dtype)
    op = _op(BACKWARD_OPS[backend]).default
    torch.library.opcheck(op, (grad, video, desc, fm, dm, f, g, cache, 0.1, True, *sides))


class _BackwardCalls(TorchDispatchMode):
    """Records the ost_kernels backward ops called, with the sides they were asked for and
    the sizes of what they returned."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace.startswith("ost_kernels") and "backward" in func.__name__:
            self.calls.append((args[-2], args[-1], out[0].numel(), out[1].numel()))
        return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("frozen", ["desc", "video"])
def test_backward_computes_only_the_gradients_asked_for(backend, frozen, gen):
    """A frozen text encoder leaves desc without grad: the backward op is told so and does
    not compute the descriptor side (and likewise for a frozen video side)."""
    require(backend)
    video, desc, fm, dm = case(3, 4, 6, 3, 16, gen, masks=True)
    (desc if frozen == "video" else video).requires_grad_(True)
    scores = od_solve(video, desc, frame_mask=fm, desc_mask=dm, backend=backend)
    with _BackwardCalls() as mode:
        scores.sum().backward()
    want_video, want_desc = frozen == "desc", frozen == "video"
    assert len(mode.calls) == 1
    video_grad, desc_grad, n_video, n_desc = mode.calls[0]
    assert (video_grad, desc_grad) == (want_video, want_desc)
    assert (n_video > 0, n_desc > 0) == (want_video, want_desc)
    assert (video.grad is not None) == want_video and (desc.grad is not None) == want_desc
    # The side that is computed equals what a backward of both sides gives.
    v2, d2 = video.detach().requires_grad_(True), desc.detach().requires_grad_(True)
    od_solve(v2, d2, frame_mask=fm, desc_mask=dm, backend=backend).sum().backward()
    got, want = (video.grad, v2.grad) if want_video else (desc.grad, d2.grad)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("backend", list(FORWARD_OPS))
def test_torch_compile_fullgraph_forward_and_backward(backend, gen):
    require(backend)
    video, desc, fm, dm = _op_args(gen, torch.float32, masks=True, requires_grad=True)

    def loss_fn(v, d):
        scores = od_solve(v, d, frame_mask=fm, desc_mask=dm, eps=0.1, backend=backend)
        return torch.log_softmax(scores / 0.01, dim=1)[:, 0].mean()

    compiled = torch.compile(loss_fn, fullgraph=True)
    got = compiled(video, desc)
    gv, gd = torch.autograd.grad(got, (video, desc))
    want = loss_fn(video, desc)
    wv, wd = torch.autograd.grad(want, (video, desc))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gv, wv)
    torch.testing.assert_close(gd, wd)


@pytest.mark.parametrize("backend", list(FORWARD_OPS))
def test_torch_compile_dynamic_shapes_and_eps(backend, gen):
    """fullgraph=True, dynamic=True traces (B, T, A, N symbolic; eps reaches the ops as a
    float, so each new eps value is a recompile, not a failure)."""
    require(backend)
    torch._dynamo.reset()  # the recompile budget is per code object, shared by the parameters

    def fn(v, d, eps):
        return od_solve(v, d, eps=eps, backend=backend)

    compiled = torch.compile(fn, fullgraph=True, dynamic=True)
    for (B, A, T, N), eps in (((2, 3, 4, 5), 0.1), ((3, 5, 6, 4), 0.2), ((4, 2, 3, 3), 0.05)):
        video, desc, _, _ = case(B, A, T, N, 8, gen)
        torch.testing.assert_close(compiled(video, desc, eps), fn(video, desc, eps))


def test_constant_for_compile_matches_torch():
    """ost_kernels marks its availability checks the way torch.compiler.assume_constant_result
    does (without importing torch._dynamo at package import); fail loudly if torch changes it."""
    from ost_kernels._env import constant_for_compile

    def ours():
        return None

    def theirs():
        return None

    torch.compiler.assume_constant_result(theirs)
    constant_for_compile(ours)
    assert vars(ours) == vars(theirs)


def test_direct_op_call_checks_its_inputs():
    require("cpu")
    with pytest.raises(RuntimeError, match="video has d=8 but desc has d=7"):
        torch.ops.ost_kernels.od_forward(torch.randn(2, 3, 8), torch.randn(4, 2, 7), None, None, None, None, 0.1, 10,
                                         0.0, INF, INF, True)
    with pytest.raises(RuntimeError, match="eps must be finite and > 0"):
        torch.ops.ost_kernels.od_forward(torch.randn(2, 3, 8), torch.randn(4, 2, 8), None, None, None, None, 0.0, 10,
                                         0.0, INF, INF, True)
    with pytest.raises(RuntimeError, match="reg_frames and reg_desc must be > 0"):
        torch.ops.ost_kernels.od_forward(torch.randn(2, 3, 8), torch.randn(4, 2, 8), None, None, None, None, 0.1, 10,
                                         0.0, 0.0, INF, True)
    with pytest.raises(RuntimeError, match=r"frame_weights must be \(2, 3\)"):
        torch.ops.ost_kernels.od_forward(torch.randn(2, 3, 8), torch.randn(4, 2, 8), None, None, torch.ones(3, 2),
                                         None, 0.1, 10, 0.0, INF, INF, True)
    with pytest.raises(RuntimeError, match=r"f must be \(B, A, T\)"):
        torch.ops.ost_kernels.od_backward(torch.randn(2, 4), torch.randn(2, 3, 8), torch.randn(4, 2, 8), None, None,
                                          torch.randn(2, 4, 2), torch.randn(2, 4, 2), torch.empty(0), 0.1, True, True,
                                          True)


@pytest.mark.parametrize("eps, max_iter, tol, match", [
    (-1.0, 10, 1e-3, "eps must be finite and > 0, got -1"),
    (float("nan"), 10, 1e-3, "eps must be finite and > 0, got nan"),
    (0.1, 0, 1e-3, "max_iter must be >= 1, got 0"),
    (0.1, 10, -1.0, "tol must be finite and >= 0, got -1"),
])
@pytest.mark.parametrize("backend", ["torch", "triton", "triton-fused"])
def test_direct_python_op_calls_check_their_scalars(backend, eps, max_iter, tol, match):
    """The Python ops refuse what the C++ ops refuse (they ran with eps=-1, crashed on
    max_iter=0)."""
    require(backend)
    op = getattr(torch.ops.ost_kernels, REGISTRY[backend].ops[0].split("::")[1])
    with pytest.raises(ValueError, match=match):
        op(torch.randn(2, 3, 8), torch.randn(4, 2, 8), None, None, None, None, eps, max_iter, tol, INF, INF, True)


def test_large_class_count_is_tiled(gen):
    """More classes than one tile of the CPU kernel holds: results equal the torch backend's."""
    require("cpu")
    video, desc, fm, dm = case(3, 3000, 8, 4, 16, gen, masks=True)
    got = od_solve(video, desc, frame_mask=fm, desc_mask=dm, tol=0, max_iter=30, backend="cpu")
    want = od_solve(video, desc, frame_mask=fm, desc_mask=dm, tol=0, max_iter=30, backend="torch")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cache_mb", ["64", "0"], ids=["kept-sims", "recomputed-sims"])
def test_cpu_backward_with_and_without_kept_sims_over_several_chunks(cache_mb, gen, monkeypatch):
    """The CPU backward reuses the forward's sims when they fit the budget and recomputes them a
    chunk of classes at a time otherwise (here 3 chunks of 256 classes): both equal the torch
    backend's gradients."""
    require("cpu")
    from ost_kernels.backends import cpu

    monkeypatch.setenv(cpu.CACHE_BUDGET_ENV, cache_mb)
    video, desc, fm, dm = case(64, 600, 32, 8, 16, gen, masks=True)
    grad_out = torch.randn(64, 600, generator=gen)
    grads = {}
    for backend in ("cpu", "torch"):
        v, d = video.clone().requires_grad_(True), desc.clone().requires_grad_(True)
        scores = od_solve(v, d, frame_mask=fm, desc_mask=dm, tol=0, max_iter=20, backend=backend)
        grads[backend] = torch.autograd.grad(scores, (v, d), grad_out)
    assert cpu.keeps_sims(video.requires_grad_(True), desc) == (cache_mb != "0")
    for got, want in zip(grads["cpu"], grads["torch"]):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scores_without_potentials(backend, gen):
    """potentials=False: f and g neither allocated nor written (zero-size), every other output
    bitwise what it is with them; od_solve asks for it when no gradient can be needed."""
    require(backend)
    video, desc, fm, dm = case(3, 5, 6, 4, 16, gen, masks=True)
    fw = torch.rand(3, 6, generator=gen) + 0.1
    forward = op(REGISTRY[backend].ops[0])
    for reg in (INF, 0.5):
        args = (video, desc, fm, dm, fw, None, 0.1, 50, 1e-3, INF, reg, True, 0.0, False)
        full = forward(*args, True)
        lean = forward(*args, False)
        assert lean[1].numel() == 0 and lean[2].numel() == 0 and full[1].shape == (3, 5, 6)
        for name, a, b in zip(("scores", "iterations", "error"), (full[0], full[3], full[4]),
                              (lean[0], lean[3], lean[4])):
            assert torch.equal(a, b), name

    class Calls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.potentials = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace.startswith("ost_kernels") and "forward" in func.__name__:
                self.potentials.append(args[-1] if len(args) > 14 else True)
            return func(*args, **(kwargs or {}))

    with Calls() as calls, torch.no_grad():
        od_solve(video.requires_grad_(True), desc, backend=backend)
    with Calls() as calls_grad:
        od_solve(video, desc, backend=backend)
    assert calls.potentials == [False] and calls_grad.potentials == [True]
