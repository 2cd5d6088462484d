"""Frame / descriptor weights and KL-relaxed marginals (reg_m), checked against POT itself
(`ot.unbalanced.sinkhorn_unbalanced(reg_type="entropy")` iterate for iterate, `ot.sinkhorn` at
convergence), against the float64 NumPy reference, and for their refusals."""
import math
import warnings

import numpy as np
import ot  # POT, a test dependency (pyproject's dev extra)
import pytest
import torch

from tests.helpers.backends_under_test import BACKENDS, require
from tests.helpers.covering import pairwise
from tests.helpers.inputs import case
from tests.helpers.naive import od_reference
from ost_kernels import BackendUnavailableError, od_plan, od_solve
from ost_kernels.backends import REGISTRY

INF = math.inf
REGS = [0.5, (INF, 0.3), (0.3, INF), (2.0, 0.05)]


def _weights(gen, valid: torch.Tensor, dtype=torch.float64):
    """Random weights for a (rows, cols) mask: some 0 (those entries drop out), and each row's
    first valid entry positive, so that every row keeps mass."""
    w = torch.rand(*valid.shape, generator=gen, dtype=dtype) + 0.05
    w[torch.rand(*valid.shape, generator=gen) < 0.15] = 0.0
    w[torch.arange(valid.shape[0]), valid.to(torch.int8).argmax(1)] = 0.7
    return w


def _pot_plan(sim, mu, nu, eps, reg, iterations):
    cost = 1.0 - sim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns that reg_type="entropy" overwrites c
        if reg is None:
            return ot.sinkhorn(mu, nu, cost, eps, numItermax=iterations, stopThr=1e-15)
        return ot.unbalanced.sinkhorn_unbalanced(mu, nu, cost, eps, list(reg) if isinstance(reg, tuple) else reg,
                                                 reg_type="entropy", numItermax=iterations, stopThr=0.0)


def _check_against_pot(backend, gen, reg, iterations, tol, T, N, atol):
    video, desc, fm, dm = case(2, 3, T, N, 12, gen, dtype=torch.float64, masks=True)
    fw, dw = _weights(gen, fm), _weights(gen, dm)
    max_iter = 20000 if reg is None else iterations
    plan = od_plan(video, desc, frame_mask=fm, desc_mask=dm, frame_weights=fw, desc_weights=dw, reg_m=reg,
                   eps=0.1, max_iter=max_iter, tol=tol, backend=backend)
    vn = torch.nn.functional.normalize(video, dim=-1).numpy()
    dn = torch.nn.functional.normalize(desc, dim=-1).numpy()
    for b in range(2):
        for a in range(3):
            rows = (fm[b] & (fw[b] > 0)).numpy()
            cols = (dm[a] & (dw[a] > 0)).numpy()
            mu = fw[b].numpy()[rows] / fw[b].numpy()[rows].sum()
            nu = dw[a].numpy()[cols] / dw[a].numpy()[cols].sum()
            want = _pot_plan(vn[b][rows] @ dn[a][cols].T, mu, nu, 0.1, reg, max_iter)
            got = plan[b, a].numpy()
            np.testing.assert_allclose(got[np.ix_(rows, cols)], want, rtol=0, atol=atol)
            assert (got[~rows] == 0).all() and (got[:, ~cols] == 0).all()


FLOAT64 = [b for b in BACKENDS if torch.float64 in REGISTRY[b].dtypes]


@pytest.mark.parametrize("backend, reg, iterations", pairwise(backend=FLOAT64, reg=REGS, iterations=[1, 2, 5, 50]))
def test_unbalanced_plans_equal_pots_iterate_for_iterate(backend, reg, iterations, gen):
    require(backend, dtype=torch.float64)
    T, N = (int(x) for x in torch.randint(1, 41, (2,), generator=gen))
    _check_against_pot(backend, gen, reg, iterations, 0.0, T, N, atol=1e-10)


@pytest.mark.parametrize("backend", FLOAT64)
def test_balanced_weighted_plans_equal_pots_sinkhorn_at_convergence(backend, gen):
    require(backend, dtype=torch.float64)
    for T, N in ((1, 1), (7, 3), (40, 40), (23, 1)):
        _check_against_pot(backend, gen, None, None, 1e-13, T, N, atol=1e-8)


def _runs(case: dict) -> bool:
    return "backend" not in case or "dtype" not in case or case["dtype"] in REGISTRY[case["backend"]].dtypes


def _interpreted_at_small_eps(case: dict) -> bool:
    # Hundreds of iterations under Triton's interpreter: 5-25 s a case (the other eps run daily).
    return case["backend"].startswith("triton") and case["eps"] < 0.1


@pytest.mark.parametrize("backend, reg, eps, dtype", pairwise(
    _runs, _interpreted_at_small_eps, backend=BACKENDS, reg=[None] + REGS, eps=[0.01, 0.1, 1.0],
    dtype=[torch.float32, torch.float64]))
def test_weighted_and_relaxed_scores_match_the_reference(backend, reg, eps, dtype, gen):
    """Scores, errors and iterations against tests/helpers/naive.py, odd shapes, masks and
    weights, with the stop rule in play (tol > 0): every pair of backend, reg_m, eps and dtype."""
    require(backend, dtype=dtype)
    video, desc, fm, dm = case(3, 7, 9, 5, 24, gen, dtype=dtype, masks=True)
    fw, dw = _weights(gen, fm, dtype=torch.float32), _weights(gen, dm, dtype=dtype)
    kw = dict(frame_mask=fm, desc_mask=dm, frame_weights=fw, desc_weights=dw, reg_m=reg, eps=eps)
    scores, info = od_solve(video, desc, tol=1e-4, max_iter=300, backend=backend, return_info=True, **kw)
    ref, _, ref_err, plans = od_reference(video, desc, iterations=info.iterations.numpy(), **kw)
    rtol = (1e-10 if dtype == torch.float64 else 2e-5 * max(1.0, 0.1 / eps))
    torch.testing.assert_close(scores.double(), torch.from_numpy(ref), rtol=rtol, atol=rtol)
    torch.testing.assert_close(info.marginal_error.double(), torch.from_numpy(ref_err), rtol=0, atol=max(rtol, 1e-7) * 10)
    torch.testing.assert_close(info.mass.double(), torch.from_numpy(plans.sum((-1, -2))), rtol=rtol * 10, atol=rtol)
    converged = info.iterations < 300
    assert (info.marginal_error[converged] <= 1e-4 * (1 + 1e-3)).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zero_weight_is_a_mask(backend, gen):
    """Scores and gradients with weight 0 on an entry equal those with that entry masked."""
    require(backend)
    video, desc, _, _ = case(2, 5, 6, 4, 16, gen)
    fw, dw = torch.ones(2, 6), torch.ones(5, 4)
    fw[0, 2], dw[3, 1] = 0.0, 0.0
    fm, dm = fw > 0, dw > 0
    grads = []
    for kw in (dict(frame_weights=fw, desc_weights=dw), dict(frame_mask=fm, desc_mask=dm)):
        v, d = video.clone().requires_grad_(True), desc.clone().requires_grad_(True)
        s = od_solve(v, d, backend=backend, **kw)
        s.sum().backward()
        grads.append((s.detach(), v.grad, d.grad))
    for x, y in zip(*grads):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert (grads[0][1][0, 2] == 0).all() and (grads[0][2][3, 1] == 0).all()


@pytest.mark.parametrize("reg", [None, (INF, 0.2)], ids=str)
@pytest.mark.parametrize("backend", FLOAT64)
def test_gradient_holds_the_plan_constant(backend, reg, gen):
    """d score / d sim = P as solved, with weights and relaxed marginals too."""
    require(backend, dtype=torch.float64)
    video, desc, fm, dm = case(2, 3, 5, 4, 8, gen, dtype=torch.float64, masks=True)
    fw, dw = _weights(gen, fm), _weights(gen, dm)
    kw = dict(frame_mask=fm, desc_mask=dm, frame_weights=fw, desc_weights=dw, reg_m=reg, tol=0, max_iter=40)
    v, d = video.clone().requires_grad_(True), desc.clone().requires_grad_(True)
    od_solve(v, d, backend=backend, **kw).sum().backward()
    plan = od_plan(video, desc, backend=backend, **kw)
    vv, dd = video.clone().requires_grad_(True), desc.clone().requires_grad_(True)
    sim = torch.einsum("btd,and->batn", torch.nn.functional.normalize(vv, dim=-1),
                       torch.nn.functional.normalize(dd, dim=-1))
    (plan * sim).sum().backward()
    torch.testing.assert_close(v.grad, vv.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.grad, dd.grad, rtol=1e-10, atol=1e-12)


def test_a_descriptor_matching_no_frame_receives_less_mass_when_relaxed():
    """The paper's Fig. 11 case: frames show steps 1 and 2 of a class, not step 3. Balanced,
    every descriptor receives 1/N of the mass; with the descriptor side relaxed the missing
    step's descriptor receives well below it."""
    d = 16
    e = torch.eye(d, dtype=torch.float64)
    video = torch.stack([e[0]] * 4 + [e[1]] * 4)[None]  # 8 frames: step 1, then step 2
    desc = torch.stack([e[0], e[1], e[2]])[None]          # step 3 (e2) appears in no frame
    for reg, below in ((None, False), ((INF, 0.05), True)):
        received = od_plan(video, desc, eps=0.05, reg_m=reg, tol=0, max_iter=500, backend="cpu")[0, 0].sum(0)
        if below:
            assert received[2] < 0.25 / 3 and received[:2].min() > 1 / 3
        else:
            torch.testing.assert_close(received, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_a_backend_without_the_features_says_so_and_auto_passes_over_it(gen, monkeypatch):
    """Every backend of this package takes weights and reg_m; one registered without them (a
    user's own kernels) refuses them by name, and "auto" passes over it to the next one."""
    import dataclasses

    from ost_kernels import backends

    plain = dataclasses.replace(REGISTRY["torch"], name="uniform-only", features=frozenset())
    monkeypatch.setitem(REGISTRY, plain.name, plain)
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", [plain.name, *backends.AUTO_ORDER["cpu"]])
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    for kw, what in ((dict(reg_m=0.5), "relaxed marginals"), (dict(frame_weights=torch.ones(2, 4)), "weights")):
        with pytest.raises(BackendUnavailableError, match=f"uniform-only kernels do not take .*{what}"):
            od_solve(video, desc, backend=plain.name, **kw)
        _, info = od_solve(video, desc, return_info=True, **kw)
        assert info.backend == backends.AUTO_ORDER["cpu"][1]
    _, info = od_solve(video, desc, return_info=True)
    assert info.backend == plain.name  # a plain problem it takes


@pytest.mark.parametrize("kw, error, match", [
    (dict(frame_weights=torch.ones(2, 4) * -1), ValueError, r"`frame_weights` must be finite and >= 0"),
    (dict(desc_weights=torch.full((3, 3), float("nan"))), ValueError, r"`desc_weights` must be finite and >= 0"),
    (dict(frame_weights=torch.tensor([[1.0, float("inf"), 1, 1]] * 2)), ValueError, "must be finite"),
    (dict(frame_weights=torch.ones(4, 2)), ValueError, r"`frame_weights` must have shape \(B, T\) = \(2, 4\)"),
    (dict(desc_weights=torch.ones(3, 3, dtype=torch.int64)), TypeError, "must have a float dtype"),
    (dict(frame_weights=[1.0, 2.0]), TypeError, "must be a float tensor"),
    (dict(desc_weights=torch.ones(3, 3).requires_grad_(True)), ValueError, r"requires grad, but the weights are not"),
    (dict(frame_weights=torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]])), ValueError, "rows whose valid weights sum to 0"),
    (dict(frame_weights=torch.tensor([[1.0, 1, 1, 1], [0, 1, 1, 1]]),
          frame_mask=torch.tensor([[True] * 4, [True, False, False, False]])), ValueError, "sum to 0"),
    (dict(reg_m=0.0), ValueError, r"`reg_m` must hold numbers > 0"),
    (dict(reg_m=(1.0, -2)), ValueError, r"`reg_m` must hold numbers > 0"),
    (dict(reg_m=(1.0,)), ValueError, r"`reg_m` must be None, a number > 0 or a pair"),
    (dict(reg_m="big"), TypeError, r"`reg_m` must hold numbers"),
])
def test_bad_weights_and_reg_m_are_refused_before_any_work(kw, error, match, gen):
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    with pytest.raises(error, match=match):
        od_solve(video, desc, backend="torch", **kw)


def test_masked_weights_may_hold_anything(gen):
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    fm = torch.tensor([[True, True, False, True]] * 2)
    fw = torch.tensor([[1.0, 2.0, float("nan"), 1.0]] * 2)
    clean = fw.nan_to_num(0.0)
    torch.testing.assert_close(od_solve(video, desc, frame_mask=fm, frame_weights=fw, backend="cpu"),
                               od_solve(video, desc, frame_mask=fm, frame_weights=clean, backend="cpu"), rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_on_one_side_only_match_the_reference(backend, gen):
    """Frame weights without descriptor weights, and the other way round (a kernel that reads
    both sides once either is given must not read past a missing one)."""
    require(backend)
    video, desc, fm, dm = case(2, 5, 7, 3, 16, gen, masks=True)
    fw, dw = _weights(gen, fm, dtype=torch.float32), _weights(gen, dm, dtype=torch.float32)
    for reg in (None, (INF, 0.3)):
        for kw in (dict(frame_weights=fw), dict(desc_weights=dw)):
            kw.update(frame_mask=fm, desc_mask=dm, reg_m=reg, eps=0.1)
            scores, info = od_solve(video, desc, tol=1e-4, backend=backend, return_info=True, **kw)
            ref, _, _, _ = od_reference(video, desc, iterations=info.iterations.numpy(), **kw)
            torch.testing.assert_close(scores.double(), torch.from_numpy(ref), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_at_any_magnitude_give_the_marginals_they_define(backend, gen):
    """mu = w / sum w does not depend on the weights' scale: weights near float32's largest
    value (whose sum overflows), float64 weights of 1e300 or 1e-300 with float32 embeddings (out
    of float32's range) give the scores of the same weights at scale 1."""
    require(backend)
    video, desc, fm, dm = case(2, 4, 6, 3, 16, gen, masks=True)
    fw, dw = _weights(gen, fm, dtype=torch.float64), _weights(gen, dm, dtype=torch.float64)
    want = od_solve(video, desc, frame_mask=fm, desc_mask=dm, frame_weights=fw, desc_weights=dw, backend=backend)
    for scale, dtype in ((3e38 / float(fw.max()), torch.float32), (1e300, torch.float64), (1e-300, torch.float64)):
        big_fw, big_dw = (fw * scale).to(dtype), (dw * scale).to(dtype)
        assert torch.isfinite(big_fw).all() and big_fw.max() > 0
        got = od_solve(video, desc, frame_mask=fm, desc_mask=dm, frame_weights=big_fw, desc_weights=big_dw,
                       backend=backend)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_implicit_weight_gradients_do_not_depend_on_the_weights_scale(gen):
    """The rescaled weights carry the user's gradient exactly: d/dw at scale s is (d/dw at
    scale 1) / s, float64, with weights of 1e300."""
    video, desc, fm, dm = case(2, 3, 5, 3, 8, gen, dtype=torch.float64, masks=True)
    fw = _weights(gen, fm)
    grads = []
    for scale in (1.0, 1e300):
        w = (fw * scale).requires_grad_(True)
        s = od_solve(video, desc, frame_mask=fm, desc_mask=dm, frame_weights=w, grad="implicit", backend="torch")
        (gw,) = torch.autograd.grad(s.sum(), w)
        grads.append(gw * scale)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_mode_over_the_weights_is_refused_with_grad_plan(backend, gen):
    """grad='plan' holds the plan constant, so the weights (which only move the plan) have no
    tangent: torch.func.jvp and forward_ad over them are refused by name, as reverse mode is,
    instead of returning zeros."""
    import torch.autograd.forward_ad as fwAD

    require(backend)
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    fw, dw = torch.rand(2, 4, generator=gen) + 0.1, torch.rand(3, 3, generator=gen) + 0.1
    with pytest.raises(ValueError, match="`frame_weights` carries a forward-mode tangent"):
        torch.func.jvp(lambda w: od_solve(video, desc, frame_weights=w, backend=backend), (fw,), (torch.ones_like(fw),))
    with fwAD.dual_level(), pytest.raises(ValueError, match="`desc_weights` carries a forward-mode tangent"):
        od_solve(video, desc, desc_weights=fwAD.make_dual(dw, torch.ones_like(dw)), backend=backend)
    # A tangent on the embeddings with weights that carry none is the plan-held-constant one.
    _, tangent = torch.func.jvp(lambda v: od_solve(v, desc, frame_weights=fw, backend=backend), (video,),
                                (torch.ones_like(video),))
    assert torch.isfinite(tangent).all()
