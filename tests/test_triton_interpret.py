"""The Triton kernels, run by Triton's interpreter on CPU tensors (TRITON_INTERPRET=1), against
the float64 NumPy reference and the torch backend. Small shapes: the interpreter executes
every program instance in NumPy.

Not checkable here, and checked by benchmarks/gpu_check.sh on a GPU instead: the compiled
kernels, autotuning, tensor-core tl.dot on bfloat16 / float16 operands (the interpreter's
tl.dot is wrong on bfloat16, so under it the loads are upcast to float32 first), TF32, and
torch.compile of the triton ops (which fails under the interpreter on CPU tensors).
"""
import os

# Must be set before the kernels are decorated, i.e. before ost_kernels.triton.ops is imported.
os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from checks import check_scores  # noqa: E402
from inputs import case  # noqa: E402
from ost_kernels import od_plan, od_solve  # noqa: E402
from ost_kernels.backends import unavailable_reason  # noqa: E402

# The interpreter runs the kernels in NumPy, which warns about the -inf arithmetic of masked
# and padded entries (log2(0), -inf + -inf) that the kernels rely on.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# (B, A, T, N, d): odd sizes; T and N pad to powers of two inside the kernels.
SHAPES = [(3, 5, 3, 2, 7), (2, 3, 8, 4, 20), (1, 2, 5, 3, 1), (3, 2, 1, 1, 16), (2, 3, 17, 5, 9)]
IDS = ["B{}A{}T{}N{}d{}".format(*s) for s in SHAPES]


@pytest.fixture(autouse=True)
def _need_triton():
    why = unavailable_reason("triton", torch.device("cpu"), torch.float32)
    if why is not None:
        pytest.fail(f"Triton (interpreter) should run here: {why}")


@pytest.mark.parametrize("tol", [0.0, 1e-3])
@pytest.mark.parametrize("eps", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_forward_float32(shape, eps, tol, gen):
    check_scores("triton", *case(*shape, gen, masks=False), eps=eps, tol=tol)


@pytest.mark.parametrize("eps", [0.05, 0.5])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_forward_masks(shape, eps, gen):
    check_scores("triton", *case(*shape, gen, masks=True), eps=eps, tol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES[:3], ids=IDS[:3])
def test_low_precision_inputs(shape, dtype, gen):
    check_scores("triton", *case(*shape, gen, dtype=dtype, masks=True), eps=0.1, tol=1e-3)


def test_masks_with_odd_strides(gen):
    video, desc, fm, dm = case(3, 4, 6, 3, 8, gen, masks=True)
    want = od_solve(video, desc, frame_mask=fm, desc_mask=dm, backend="torch")
    got = od_solve(video, desc, frame_mask=fm.t().contiguous().t(), desc_mask=dm.t().contiguous().t(),
                   backend="triton")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_unnormalized_and_max_iter(gen):
    video, desc, fm, dm = case(2, 3, 8, 4, 16, gen, masks=True)
    video = video / video.norm(dim=-1, keepdim=True)
    desc = desc / desc.norm(dim=-1, keepdim=True)
    check_scores("triton", video, desc, fm, dm, normalize=False)
    check_scores("triton", video, desc, fm, dm, max_iter=3, tol=1e-5)


@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", SHAPES[:4], ids=IDS[:4])
def test_backward_matches_torch_backend(shape, normalize, masks, gen):
    video, desc, fm, dm = case(*shape, gen, masks=masks)
    grad_out = torch.randn(shape[0], shape[1], generator=gen)
    grads = {}
    for backend in ("triton", "torch"):
        v = video.clone().requires_grad_(True)
        d = desc.clone().requires_grad_(True)
        # tol=0: both run the same iterations, so their plans agree to float32 rounding.
        scores = od_solve(v, d, frame_mask=fm, desc_mask=dm, tol=0, max_iter=30, normalize=normalize,
                          backend=backend)
        grads[backend] = torch.autograd.grad(scores, (v, d), grad_out)
    for got, want in zip(grads["triton"], grads["torch"]):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


def test_nan_rows_and_plan(gen):
    video, desc, _, _ = case(4, 5, 6, 3, 8, gen)
    clean = od_solve(video, desc, backend="triton")
    plan = od_plan(video, desc, backend="triton")
    torch.testing.assert_close(plan, od_plan(video, desc, backend="torch"), rtol=1e-4, atol=1e-7)
    video[1, 2, 3] = float("nan")
    poisoned, info = od_solve(video, desc, backend="triton", return_info=True)
    keep = [0, 2, 3]
    torch.testing.assert_close(poisoned[keep], clean[keep], rtol=0, atol=0)
    assert torch.isnan(poisoned[1]).all() and info.backend == "triton"


def test_double_backward_is_refused(gen):
    video, desc, _, _ = case(2, 3, 4, 2, 8, gen)
    video.requires_grad_(True)
    (gv,) = torch.autograd.grad(od_solve(video, desc, backend="triton").sum(), video, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        gv.sum().backward()
