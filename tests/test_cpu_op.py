"""The C++ CPU op: built, registered, opcheck-clean, traceable by torch.compile, and robust to
odd strides. Its numerical correctness runs in the shared matrices (tests/test_forward.py,
test_backward.py, test_properties.py) through backends_under_test.BACKENDS."""
import os

import pytest
import torch

from inputs import case
from ost_kernels import available_backends, od_solve
from ost_kernels._extension import DISABLE_ENV

EXTENSION_EXPECTED = os.environ.get(DISABLE_ENV, "0") != "1" and os.environ.get("OST_KERNELS_SKIP_EXTENSION", "0") != "1"


def _need_cpu():
    why = available_backends("cpu")["cpu"]
    if why is not None:
        if EXTENSION_EXPECTED:
            pytest.fail(f"the CPU kernel should be built here but is not: {why}")
        pytest.skip(why)


def test_cpu_backend_is_built_and_auto_picks_it():
    _need_cpu()
    assert torch._C._dispatch_has_kernel_for_dispatch_key("ost_kernels::od_forward", "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("ost_kernels::od_backward", "CPU")
    _, info = od_solve(torch.randn(2, 3, 8), torch.randn(4, 2, 8), return_info=True)
    assert info.backend == "cpu"


def _op_args(gen, dtype, masks, requires_grad=False):
    video, desc, fm, dm = case(3, 5, 7, 3, 16, gen, dtype=dtype, masks=masks)
    video.requires_grad_(requires_grad)
    desc.requires_grad_(requires_grad)
    return video, desc, fm, dm


@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_opcheck_forward(dtype, masks, gen):
    _need_cpu()
    video, desc, fm, dm = _op_args(gen, dtype, masks, requires_grad=dtype != torch.bfloat16)
    torch.library.opcheck(torch.ops.ost_kernels.od_forward.default, (video, desc, fm, dm, 0.1, 50, 1e-3, True))


@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck_backward(dtype, masks, gen):
    _need_cpu()
    video, desc, fm, dm = _op_args(gen, dtype, masks)
    _, f, g, _, _ = torch.ops.ost_kernels.od_forward(video, desc, fm, dm, 0.1, 50, 1e-3, True)
    grad = torch.randn(3, 5, generator=gen, dtype=f.dtype)
    torch.library.opcheck(torch.ops.ost_kernels.od_backward.default, (grad, video, desc, fm, dm, f, g, 0.1, True))


def test_torch_compile_fullgraph_forward_and_backward(gen):
    _need_cpu()
    video, desc, fm, dm = _op_args(gen, torch.float32, masks=True, requires_grad=True)

    def loss_fn(v, d):
        scores = od_solve(v, d, frame_mask=fm, desc_mask=dm, eps=0.1, backend="cpu")
        return torch.log_softmax(scores / 0.01, dim=1)[:, 0].mean()

    compiled = torch.compile(loss_fn, fullgraph=True)
    got = compiled(video, desc)
    gv, gd = torch.autograd.grad(got, (video, desc))
    want = loss_fn(video, desc)
    wv, wd = torch.autograd.grad(want, (video, desc))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gv, wv)
    torch.testing.assert_close(gd, wd)


def test_constant_for_compile_matches_torch():
    """ost_kernels marks its availability checks the way torch.compiler.assume_constant_result
    does (without importing torch._dynamo at package import); fail loudly if torch changes it."""
    from ost_kernels._extension import constant_for_compile

    def ours():
        return None

    def theirs():
        return None

    torch.compiler.assume_constant_result(theirs)
    constant_for_compile(ours)
    assert vars(ours) == vars(theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_non_contiguous_inputs(dtype, gen):
    _need_cpu()
    video, desc, fm, dm = case(4, 6, 5, 3, 24, gen, dtype=dtype, masks=True)
    want = od_solve(video, desc, frame_mask=fm, desc_mask=dm, backend="cpu")
    # Same values behind odd strides: transposed storage, every other element, sliced masks.
    video_t = video.transpose(0, 1).contiguous().transpose(0, 1)
    desc_s = torch.stack([desc, torch.zeros_like(desc)], dim=-1).flatten(-2)[..., ::2]
    fm_t = fm.t().contiguous().t()
    dm_s = torch.stack([dm, dm], dim=-1).flatten(-2)[:, ::2]
    assert not video_t.is_contiguous() and not desc_s.is_contiguous() and not dm_s.is_contiguous()
    got = od_solve(video_t, desc_s, frame_mask=fm_t, desc_mask=dm_s, backend="cpu")
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_direct_op_call_checks_its_inputs():
    _need_cpu()
    with pytest.raises(RuntimeError, match="video has d=8 but desc has d=7"):
        torch.ops.ost_kernels.od_forward(torch.randn(2, 3, 8), torch.randn(4, 2, 7), None, None, 0.1, 10, 0.0, True)
    with pytest.raises(RuntimeError, match="eps must be finite and > 0"):
        torch.ops.ost_kernels.od_forward(torch.randn(2, 3, 8), torch.randn(4, 2, 8), None, None, 0.0, 10, 0.0, True)
    with pytest.raises(RuntimeError, match=r"f must be \(B, A, T\)"):
        torch.ops.ost_kernels.od_backward(torch.randn(2, 4), torch.randn(2, 3, 8), torch.randn(4, 2, 8), None, None,
                                          torch.randn(2, 4, 2), torch.randn(2, 4, 2), 0.1, True)


def test_large_class_count_is_tiled(gen):
    """More classes than one tile holds: results equal the torch backend's per pair."""
    _need_cpu()
    video, desc, fm, dm = case(3, 3000, 8, 4, 16, gen, masks=True)
    got = od_solve(video, desc, frame_mask=fm, desc_mask=dm, tol=0, max_iter=30, backend="cpu")
    want = od_solve(video, desc, frame_mask=fm, desc_mask=dm, tol=0, max_iter=30, backend="torch")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
