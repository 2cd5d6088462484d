"""grad="implicit": exact gradients of the scores through the plan (ost_kernels/implicit.py).
gradcheck in float64 on converged solves for every backend that takes float64, with masks,
weights and reg_m; equality with autograd through an unrolled float64 Sinkhorn; low-precision
gradients against the float64 ones; refusals."""
import math

import pytest
import torch

from tests.helpers.backends_under_test import BACKENDS, require
from tests.helpers.inputs import case
from ost_kernels import od_solve

INF = math.inf
CONVERGED = dict(eps=0.3, tol=0.0, max_iter=120)


def _weights(gen, shape, dtype=torch.float64):
    return torch.rand(*shape, generator=gen, dtype=dtype) + 0.2


@pytest.mark.parametrize("reg", [None, 0.5, (INF, 0.3), (0.4, INF)], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_on_converged_solves(backend, reg, gen):
    require(backend, dtype=torch.float64)
    if backend != "torch" and reg not in (None, (INF, 0.3)):
        pytest.skip("the backward is shared: two marginal cases per kernel backend, all four on torch")
    T, N = (5, 3) if reg != (0.4, INF) else (3, 4)  # each side the eliminated one
    video, desc, fm, dm = case(2, 3, T, N, 6, gen, dtype=torch.float64, masks=True)
    fw, dw = _weights(gen, (2, T)), _weights(gen, (3, N))

    def scores(v, d, a, b):
        return od_solve(v, d, frame_mask=fm, desc_mask=dm, frame_weights=a, desc_weights=b, reg_m=reg,
                        grad="implicit", backend=backend, **CONVERGED)

    inputs = tuple(x.clone().requires_grad_(True) for x in (video, desc, fw, dw))
    assert torch.autograd.gradcheck(scores, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def _unrolled(video, desc, eps, iters, reg, fw=None, dw=None):
    """Scores (B, A) of a plain log-domain Sinkhorn with autograd through every iteration."""
    vn = torch.nn.functional.normalize(video, dim=-1)
    dn = torch.nn.functional.normalize(desc, dim=-1)
    sim = torch.einsum("btd,and->batn", vn, dn)
    B, A, T, N = sim.shape
    fw = torch.ones(B, T, dtype=sim.dtype) if fw is None else fw
    dw = torch.ones(A, N, dtype=sim.dtype) if dw is None else dw
    log_mu = torch.log(fw / fw.sum(-1, keepdim=True))[:, None, :]
    log_nu = torch.log(dw / dw.sum(-1, keepdim=True))[None]
    rf, rd = (reg, reg) if not isinstance(reg, tuple) else reg
    tf = 1.0 if rf == INF else rf / (rf + eps)
    td = 1.0 if rd == INF else rd / (rd + eps)
    z = (sim - 1) / eps
    a = torch.zeros(B, A, T, dtype=sim.dtype)
    b = torch.zeros(B, A, N, dtype=sim.dtype)
    for _ in range(iters):
        a = tf * (log_mu - torch.logsumexp(z + b[..., None, :], -1))
        b = td * (log_nu - torch.logsumexp(z + a[..., :, None], -2))
    return (torch.exp(z + a[..., :, None] + b[..., None, :]) * sim).sum((-1, -2))


@pytest.mark.parametrize("reg", [None, (INF, 0.5), 0.8], ids=str)
def test_equals_autograd_through_an_unrolled_sinkhorn(reg, gen):
    video, desc, _, _ = case(2, 4, 7, 4, 8, gen, dtype=torch.float64)
    fw, dw = _weights(gen, (2, 7)), _weights(gen, (4, 4))
    grads = []
    for implicit in (True, False):
        inputs = [x.clone().requires_grad_(True) for x in (video, desc, fw, dw)]
        if implicit:
            s = od_solve(*inputs[:2], frame_weights=inputs[2], desc_weights=inputs[3], reg_m=reg, grad="implicit",
                         backend="torch", **CONVERGED)
        else:
            s = _unrolled(*inputs[:2], CONVERGED["eps"], 1500, reg if reg is not None else INF, *inputs[2:])
        g = torch.randn(s.shape, generator=torch.Generator().manual_seed(1), dtype=s.dtype)
        grads.append(torch.autograd.grad((s * g).sum(), inputs))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_low_precision_gradients_against_float64(backend, dtype, gen):
    require(backend, dtype=dtype)
    video, desc, fm, dm = case(3, 5, 6, 4, 16, gen, masks=True)
    kw = dict(frame_mask=fm, desc_mask=dm, reg_m=(INF, 0.5), grad="implicit", eps=0.1, tol=0.0, max_iter=300)
    grads = {}
    for dt in (torch.float64, dtype):
        v = video.to(dt).requires_grad_(True)
        d = desc.to(dt).requires_grad_(True)
        run = backend if dt == dtype else "torch"
        s = od_solve(v, d, backend=run, **kw)
        s.sum().backward()
        grads[dt] = (v.grad.double(), d.grad.double())
    # float32: rounding of the sims amplified by 1 / eps through the plan and the adjoint;
    # bf16 (8 bits of mantissa in the inputs): a few percent of the largest entry.
    tol = 2e-4 if dtype == torch.float32 else 6e-2
    for got, want in zip(grads[dtype], grads[torch.float64]):
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=0, atol=tol * scale)


def test_implicit_differs_from_the_plan_gradient(gen):
    """The plan-held-constant gradient is the envelope's, not the score's: they differ."""
    video, desc, _, _ = case(2, 3, 5, 3, 8, gen, dtype=torch.float64)
    out = []
    for grad in ("plan", "implicit"):
        v = video.clone().requires_grad_(True)
        od_solve(v, desc, grad=grad, backend="torch", **CONVERGED).sum().backward()
        out.append(v.grad)
    assert (out[0] - out[1]).abs().max() > 1e-3 * out[1].abs().max()


def test_unconverged_pair_gets_a_finite_gradient(gen):
    video, desc, fm, dm = case(2, 3, 6, 4, 8, gen, masks=True)
    v = video.clone().requires_grad_(True)
    d = desc.clone().requires_grad_(True)
    w = _weights(gen, (2, 6), torch.float32).requires_grad_(True)
    s, info = od_solve(v, d, frame_mask=fm, desc_mask=dm, frame_weights=w, eps=0.02, max_iter=2, tol=1e-9,
                       grad="implicit", backend="cpu", return_info=True)
    assert (info.iterations == 2).sum() >= 3 and (info.marginal_error > 1e-3).any()  # stopped unconverged
    s.sum().backward()
    for x in (v.grad, d.grad, w.grad):
        assert torch.isfinite(x).all()
    assert (v.grad[~fm] == 0).all() and (d.grad[~dm] == 0).all() and (w.grad[~fm] == 0).all()


def test_masked_entries_hold_anything_and_get_zero_gradient(gen):
    video, desc, fm, dm = case(2, 3, 5, 4, 8, gen, dtype=torch.float64, masks=True)
    dirty_v, dirty_d = video.clone(), desc.clone()
    dirty_v[~fm] = float("nan")
    dirty_d[~dm] = float("inf")
    grads = []
    for v0, d0 in ((video, desc), (dirty_v, dirty_d)):
        v, d = v0.clone().requires_grad_(True), d0.clone().requires_grad_(True)
        od_solve(v, d, frame_mask=fm, desc_mask=dm, grad="implicit", backend="torch", **CONVERGED).sum().backward()
        grads.append((v.grad, d.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (grads[1][0][~fm] == 0).all() and (grads[1][1][~dm] == 0).all()


def test_refusals(gen):
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen)
    with pytest.raises(ValueError, match=r"`grad` must be one of \('plan', 'implicit'\), got 'exact'"):
        od_solve(video, desc, grad="exact")
    w = _weights(gen, (2, 4), torch.float32).requires_grad_(True)
    with pytest.raises(ValueError, match="grad='implicit' for their exact gradient"):
        od_solve(video, desc, frame_weights=w)
    v = video.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(od_solve(v, desc, grad="implicit").sum(), v, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivative|double backward|twice"):
        g.sum().backward()
    with pytest.raises(NotImplementedError, match="forward-mode AD .* grad='implicit'"):
        torch.func.jvp(lambda x: od_solve(x, desc, grad="implicit"), (video,), (torch.ones_like(video),))


def test_under_torch_compile(gen):
    video, desc, _, _ = case(2, 3, 5, 3, 8, gen)

    def loss(v, d):
        return od_solve(v, d, grad="implicit", backend="torch", tol=0.0, max_iter=50).square().sum()

    grads = []
    for fn in (loss, torch.compile(loss, backend="eager")):
        v, d = video.clone().requires_grad_(True), desc.clone().requires_grad_(True)
        fn(v, d).backward()
        grads.append((v.grad, d.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_chunks_of_classes_give_the_same_gradient(gen, monkeypatch):
    """The backward runs a chunk of classes at a time (memory bounded by the chunk): several
    chunks give the one-chunk result."""
    from ost_kernels import _plan

    video, desc, fm, dm = case(3, 7, 5, 3, 8, gen, dtype=torch.float64, masks=True)
    fw = _weights(gen, (3, 5))
    grads = []
    for elements in (1 << 24, 3 * 5 * 3 * 3 * 2):  # one chunk; two classes a chunk
        monkeypatch.setattr(_plan, "MAX_CHUNK_ELEMENTS", elements)
        inputs = [x.clone().requires_grad_(True) for x in (video, desc, fw)]
        s = od_solve(*inputs[:2], frame_mask=fm, desc_mask=dm, frame_weights=inputs[2], reg_m=(INF, 0.5),
                     grad="implicit", backend="torch", **CONVERGED)
        grads.append(torch.autograd.grad(s.sum(), inputs))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("side", ["frame_weights", "desc_weights"])
def test_hessian_with_respect_to_the_weights_is_refused(side, gen):
    """The implicit gradient is not differentiated again: a second derivative with respect to
    the weights alone raises, instead of coming back as zeros."""
    video, desc, _, _ = case(2, 3, 4, 3, 8, gen, dtype=torch.float64)
    w = _weights(gen, (2, 4) if side == "frame_weights" else (3, 3))

    def scores(x):
        return od_solve(video, desc, grad="implicit", backend="torch", **{side: x}).sum()

    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.functional.hessian(scores, w)


@pytest.mark.parametrize("kw", [dict(reg_m=1e30), dict(reg_m=1e15), dict(reg_m=(INF, 1e30)), dict(eps=1e-3),
                                dict(eps=2e-3)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_implicit_backward_is_finite_where_its_system_is_singular(kw, dtype, gen):
    """Relaxations so weak that 1 + eps / rho rounds to 1 leave the balanced gauge direction in
    the system; unconverged plans at small eps have rows or columns of zero mass and blocks that
    exchange none. The gradient stays finite, and for the weak relaxation equals the balanced one."""
    video, desc, fm, dm = case(3, 4, 6, 4, 16, gen, dtype=dtype, masks=True)
    grads = []
    # The weak relaxation against the balanced solve at equal iterations (their stop rules differ).
    fixed = dict(tol=0.0, max_iter=200) if "reg_m" in kw else {}
    for reg in (kw.get("reg_m"), None) if "reg_m" in kw else (None,):
        v, d = video.clone().requires_grad_(True), desc.clone().requires_grad_(True)
        s = od_solve(v, d, frame_mask=fm, desc_mask=dm, grad="implicit", backend="cpu",
                     **{**kw, "reg_m": reg, **fixed})
        s.sum().backward()
        assert torch.isfinite(v.grad).all() and torch.isfinite(d.grad).all()
        grads.append((v.grad, d.grad))
    if len(grads) == 2:
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
