"""Gradients: the plan is held constant, d score / d sim = P, chained through the cosine."""
import pytest
import torch

from tests.helpers.backends_under_test import BACKENDS, require
from tests.helpers.covering import pairwise, uncovered_pairs
from tests.helpers.inputs import case
from tests.helpers.naive import od_reference
from ost_kernels import od_solve
from ost_kernels.backends import REGISTRY

GRAD_SHAPES = [(2, 3, 8, 4, 7), (3, 2, 17, 5, 64), (1, 4, 3, 2, 1), (2, 2, 32, 8, 16)]


def _surrogate(video, desc, plans, normalize):
    """sum_ij P_ij * sim_ij with P a fixed (detached) float64 plan: autograd of this is the
    gradient od_solve promises."""
    if normalize:
        video = video / video.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        desc = desc / desc.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sim = torch.einsum("btd,and->batn", video.double(), desc.double())
    return (plans * sim).sum((-1, -2))


def _runs(case: dict) -> bool:
    return "backend" not in case or "dtype" not in case or case["dtype"] in REGISTRY[case["backend"]].dtypes


GRAD_FACTORS = dict(backend=BACKENDS, shape=GRAD_SHAPES, dtype=[torch.float64, torch.float32], eps=[0.01, 0.1, 1.0],
                    masks=[False, True], normalize=[True, False])
# Every pair of factor values at least once (tests/helpers/covering.py; the full product was 480).
GRAD_MATRIX = pairwise(_runs, **GRAD_FACTORS)


def test_gradient_matrix_covers_every_pair():
    assert not uncovered_pairs([p.values for p in GRAD_MATRIX], _runs, **GRAD_FACTORS)


@pytest.mark.parametrize("backend, shape, dtype, eps, masks, normalize", GRAD_MATRIX)
def test_gradients_match_fixed_plan(backend, shape, dtype, eps, masks, normalize, gen):
    require(backend, dtype=dtype)
    video, desc, fm, dm = case(*shape, gen, dtype=dtype, masks=masks)
    video.requires_grad_(True)
    desc.requires_grad_(True)
    scores, info = od_solve(video, desc, frame_mask=fm, desc_mask=dm, eps=eps, normalize=normalize,
                            backend=backend, return_info=True)
    grad_out = torch.randn(scores.shape, generator=gen, dtype=scores.dtype)
    gv, gd = torch.autograd.grad(scores, (video, desc), grad_out)
    assert gv.dtype == dtype and gd.dtype == dtype

    _, _, _, plans = od_reference(video.detach(), desc.detach(), fm, dm, eps=eps, normalize=normalize,
                                  iterations=info.iterations.numpy())
    v64 = video.detach().double().requires_grad_(True)
    d64 = desc.detach().double().requires_grad_(True)
    rv, rd = torch.autograd.grad(_surrogate(v64, d64, torch.from_numpy(plans), normalize), (v64, d64),
                                 grad_out.double())
    # float32 rounding of sim is amplified by |sim| / eps in the exponent; unnormalized
    # inputs here have |sim| up to ~9.
    scale = 1.0 if normalize else float(torch.einsum("btd,and->batn", v64, d64).detach().abs().max())
    tol = 1e-9 if dtype == torch.float64 else 2e-5 * max(1.0, 0.1 * scale / eps)
    torch.testing.assert_close(gv.double(), rv, rtol=tol, atol=tol)
    torch.testing.assert_close(gd.double(), rd, rtol=tol, atol=tol)
    if masks:
        # Masked frames and descriptors get no gradient.
        assert (gv[~fm] == 0).all() and (gd[~dm] == 0).all()


@pytest.mark.parametrize("backend, shape, masks, normalize", pairwise(
    backend=[b for b in BACKENDS if torch.float64 in REGISTRY[b].dtypes],
    shape=[(2, 3, 1, 4, 5), (3, 2, 6, 1, 4), (2, 2, 1, 1, 3)], masks=[False, True], normalize=[True, False]))
def test_gradcheck_where_the_plan_is_fixed(backend, shape, masks, normalize, gen):
    """With one frame or one descriptor the plan cannot move (P = nu or P = mu), so the
    promised gradient is the true one and gradcheck applies to od_solve itself, end to end
    through the normalization."""
    require(backend, dtype=torch.float64)
    video, desc, fm, dm = case(*shape, gen, dtype=torch.float64, masks=masks)
    video.requires_grad_(True)
    desc.requires_grad_(True)

    def fn(v, d):
        return od_solve(v, d, frame_mask=fm, desc_mask=dm, eps=0.1, normalize=normalize, backend=backend)

    assert torch.autograd.gradcheck(fn, (video, desc), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_vector_gradient_is_finite(backend, gen):
    require(backend, dtype=torch.float64)
    video, desc, _, _ = case(2, 3, 4, 2, 8, gen, dtype=torch.float64)
    video[0, 1] = 0
    desc[2, 0] = 0
    video.requires_grad_(True)
    desc.requires_grad_(True)
    od_solve(video, desc, backend=backend).sum().backward()
    assert torch.isfinite(video.grad).all() and torch.isfinite(desc.grad).all()
    # Not differentiable there: defined as 0 (the clamp's 1e12 slope would overflow float16).
    assert (video.grad[0, 1] == 0).all() and (desc.grad[2, 0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_vector_gradient_in_low_precision(backend, dtype, gen):
    require(backend, dtype=dtype)
    video, desc, _, _ = case(2, 3, 4, 2, 8, gen, dtype=dtype)
    video[0, 1] = 0
    video.requires_grad_(True)
    desc.requires_grad_(True)
    od_solve(video, desc, backend=backend).sum().backward()
    assert torch.isfinite(video.grad).all() and torch.isfinite(desc.grad).all()
    assert (video.grad[0, 1] == 0).all() and video.grad[1].abs().max() > 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_entries_get_zero_gradient(backend, bad, gen):
    """NaN or inf in a masked frame or descriptor: exactly zero gradient there, and every other
    gradient as with a finite value in its place."""
    require(backend)
    video, desc, fm, dm = case(3, 4, 5, 3, 16, gen, masks=True)
    fm[1], dm[2] = True, True
    fm[1, 2], dm[2, 1] = False, False
    grads = {}
    for value in (bad, 0.5):
        v, d = video.clone(), desc.clone()
        v[1, 2], d[2, 1] = value, value
        v.requires_grad_(True)
        d.requires_grad_(True)
        od_solve(v, d, frame_mask=fm, desc_mask=dm, backend=backend).sum().backward()
        grads[value] = (v.grad, d.grad)
    (gv, gd), (cv, cd) = grads[bad], grads[0.5]
    assert (gv[~fm] == 0).all() and (gd[~dm] == 0).all()
    torch.testing.assert_close(gv, cv, rtol=0, atol=0)
    torch.testing.assert_close(gd, cd, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_is_refused(backend, gen):
    require(backend)
    video, desc, _, _ = case(2, 3, 4, 2, 8, gen)
    video.requires_grad_(True)
    scores = od_solve(video, desc, backend=backend)
    (gv,) = torch.autograd.grad(scores.sum(), video, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice|double backward|not supported"):
        gv.sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_mode_matches_the_backward(backend, gen):
    """torch.func.jvp and torch.autograd.forward_ad give the tangent of the plan held constant,
    the transpose of what the backward computes (never a silent zero)."""
    import torch.autograd.forward_ad as fwAD

    require(backend)
    video, desc, fm, dm = case(2, 3, 5, 3, 8, gen, masks=True)
    tv, td = torch.randn(video.shape, generator=gen), torch.randn(desc.shape, generator=gen)

    def fn(v, d):
        return od_solve(v, d, frame_mask=fm, desc_mask=dm, tol=0, max_iter=50, backend=backend)

    v, d = video.clone().requires_grad_(True), desc.clone().requires_grad_(True)
    scores = fn(v, d)
    rows = [torch.autograd.grad(s, (v, d), retain_graph=True) for s in scores.flatten()]
    want = torch.stack([(gv * tv).sum() + (gd * td).sum() for gv, gd in rows]).view_as(scores)
    primal, tangent = torch.func.jvp(fn, (video, desc), (tv, td))
    torch.testing.assert_close(primal, scores.detach(), rtol=0, atol=0)
    torch.testing.assert_close(tangent, want, rtol=1e-4, atol=1e-5)
    assert tangent.abs().max() > 0
    with fwAD.dual_level():
        dual = fn(fwAD.make_dual(video, tv), fwAD.make_dual(desc, td))
        torch.testing.assert_close(fwAD.unpack_dual(dual).tangent, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_second_derivative_is_refused(backend, gen):
    require(backend)
    video, desc, _, _ = case(2, 3, 4, 2, 8, gen)
    video.requires_grad_(True)
    desc.requires_grad_(True)
    (gv,) = torch.autograd.grad(od_solve(video, desc, backend=backend).sum(), video, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(gv.sum(), desc)
