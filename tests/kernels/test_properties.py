"""Behaviour that holds for every backend: plans, info, zero vectors, NaN isolation,
agreement with the paper's einops algorithm."""
import math

import pytest
import torch

from tests.helpers.backends_under_test import BACKENDS, require
from tests.helpers.inputs import case
from tests.helpers.naive import od_reference
from ost_kernels import od_plan, od_solve, od_solve_einops


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("masks", [False, True])
def test_plan_marginals_and_score(backend, masks, gen):
    require(backend)
    video, desc, fm, dm = case(3, 4, 8, 5, 32, gen, masks=masks)
    plan, info = od_plan(video, desc, frame_mask=fm, desc_mask=dm, tol=0, max_iter=50, backend=backend,
                         return_info=True)
    assert plan.shape == (3, 4, 8, 5)
    t_valid = fm.sum(1).float() if masks else torch.full((3,), 8.0)
    n_valid = dm.sum(1).float() if masks else torch.full((4,), 5.0)
    col = plan.sum(-2)  # exact after each iteration
    expected_col = (1.0 / n_valid)[None, :, None].expand_as(col)
    if masks:
        expected_col = torch.where(dm[None], expected_col, torch.zeros(()))
    torch.testing.assert_close(col, expected_col, rtol=1e-5, atol=1e-6)
    row_err = (plan.sum(-1) - torch.where(fm[:, None] if masks else torch.ones(3, 1, 8, dtype=torch.bool),
                                          (1.0 / t_valid)[:, None, None], torch.zeros(()))).abs().sum(-1)
    # The plan is rebuilt from float32 potentials: exp((f + g - C) / eps) with exponents up to
    # 2 / eps = 20 carries ~20 * 6e-8 relative error per entry, ~1.2e-6 over the 8 rows' sums.
    torch.testing.assert_close(row_err, info.marginal_error, rtol=1e-4, atol=3e-6)
    if masks:
        assert (plan[~fm[:, None, :].expand(3, 4, 8)] == 0).all()
        assert (plan.transpose(-1, -2)[~dm[None].expand(3, 4, 5)] == 0).all()
    _, _, _, ref_plans = od_reference(video, desc, fm, dm, iterations=info.iterations.numpy())
    torch.testing.assert_close(plan.double(), torch.from_numpy(ref_plans), rtol=1e-4, atol=1e-7)
    sim = torch.einsum("btd,and->batn", torch.nn.functional.normalize(video, dim=-1),
                       torch.nn.functional.normalize(desc, dim=-1))
    scores = od_solve(video, desc, frame_mask=fm, desc_mask=dm, tol=0, max_iter=50, backend=backend)
    torch.testing.assert_close((plan * sim).sum((-1, -2)), scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_tol_meets_the_stop_rule(backend, gen):
    require(backend)
    video, desc, fm, dm = case(4, 5, 8, 4, 64, gen, masks=True)
    _, info = od_solve(video, desc, frame_mask=fm, desc_mask=dm, eps=0.05, backend=backend, return_info=True)
    stopped = info.iterations < 100
    assert stopped.any()
    assert (info.marginal_error[stopped] <= 1e-3).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_vector_has_cosine_zero(backend, gen):
    require(backend)
    video, desc, _, _ = case(2, 3, 4, 3, 16, gen)
    video[1] = 0  # a whole video of zero frames: every sim is 0, so every score is 0
    desc[2, 1] = 0
    scores = od_solve(video, desc, backend=backend)
    assert torch.isfinite(scores).all()
    assert (scores[1] == 0).all()
    plan = od_plan(video, desc, backend=backend)
    sim = torch.einsum("btd,and->batn", torch.nn.functional.normalize(video, dim=-1),
                       torch.nn.functional.normalize(desc, dim=-1))
    assert (sim[:, 2, :, 1] == 0).all()
    torch.testing.assert_close((plan * sim).sum((-1, -2)), scores)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tol", [0.0, 1e-3])
def test_nan_rows_do_not_poison_others(backend, tol, gen):
    require(backend)
    video, desc, _, _ = case(4, 5, 8, 4, 32, gen)
    clean = od_solve(video, desc, tol=tol, backend=backend)
    video[2, 3, 5] = float("nan")
    desc[1, 0, 0] = float("nan")
    poisoned = od_solve(video, desc, tol=tol, backend=backend)
    others_b = [0, 1, 3]
    others_a = [0, 2, 3, 4]
    torch.testing.assert_close(poisoned[others_b][:, others_a], clean[others_b][:, others_a], rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_a_masked_entry_is_ignored(backend, gen):
    require(backend)
    video, desc, fm, dm = case(3, 3, 6, 4, 16, gen, masks=True)
    clean = od_solve(video, desc, frame_mask=fm, desc_mask=dm, backend=backend)
    video[~fm] = float("nan")
    desc[~dm] = float("nan")
    torch.testing.assert_close(od_solve(video, desc, frame_mask=fm, desc_mask=dm, backend=backend), clean,
                               rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [1e-3, 10.0])
def test_extreme_eps_stays_finite(backend, eps, gen):
    require(backend)
    video, desc, fm, dm = case(3, 4, 8, 4, 16, gen, masks=True)
    scores, info = od_solve(video, desc, frame_mask=fm, desc_mask=dm, eps=eps, backend=backend, return_info=True)
    assert torch.isfinite(scores).all() and torch.isfinite(info.marginal_error).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_eps_keeps_float32_precision(backend, gen):
    """At large eps the plan is nearly uniform and the score the mean cosine: a kernel that
    recovers sims from K = exp((sim - hi) / eps) would lose ~eps * 2^-23 of them (0.4 at 1e8)."""
    require(backend)
    video, desc, fm, dm = case(3, 4, 8, 4, 32, gen, masks=True)
    for eps in (16.0, 100.0, 1e4, 1e8):
        got = od_solve(video, desc, frame_mask=fm, desc_mask=dm, eps=eps, backend=backend)
        want, _, _, _ = od_reference(video, desc, frame_mask=fm, desc_mask=dm, eps=eps)
        torch.testing.assert_close(got.double(), torch.from_numpy(want), rtol=0, atol=2e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pairs_do_not_depend_on_their_neighbours(backend, gen):
    """A pair's result is the same whether it is solved alone or among many (per-pair stop)."""
    require(backend)
    video, desc, fm, dm = case(5, 7, 8, 4, 32, gen, masks=True)
    full, info = od_solve(video, desc, frame_mask=fm, desc_mask=dm, eps=0.05, backend=backend, return_info=True)
    assert info.iterations.unique().numel() > 1
    for b, a in [(0, 0), (3, 5), (4, 6)]:
        alone, alone_info = od_solve(video[b : b + 1], desc[a : a + 1], frame_mask=fm[b : b + 1],
                                     desc_mask=dm[a : a + 1], eps=0.05, backend=backend, return_info=True)
        assert alone_info.iterations.item() == info.iterations[b, a].item()
        torch.testing.assert_close(alone[0, 0], full[b, a], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_einops_reference_agrees_at_full_iterations(backend, dtype, gen):
    """Where the semantics coincide (no masks, eps 0.1, a fixed 100 iterations) the paper's
    multiplicative algorithm and the log-domain backends give the same scores."""
    require(backend, dtype=dtype)
    video, desc, _, _ = case(4, 6, 8, 4, 64, gen, dtype=dtype)
    ours = od_solve(video, desc, eps=0.1, max_iter=100, tol=0, backend=backend)
    paper = od_solve_einops(video, desc, eps=0.1, max_iter=100, early_stop=False)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, paper, rtol=tol, atol=tol)


def test_einops_reference_stops_early_and_has_gradients(gen):
    video, desc, _, _ = case(3, 4, 8, 4, 64, gen)
    video.requires_grad_(True)
    early = od_solve_einops(video, desc)
    full = od_solve_einops(video, desc, early_stop=False)
    assert early.shape == (3, 4)
    # The global 1e-2 threshold stops well before convergence, so early and full differ a little.
    assert math.isclose(early.sum().item(), full.sum().item(), rel_tol=1e-2)
    early.sum().backward()
    assert torch.isfinite(video.grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_non_contiguous_inputs(backend, dtype, gen):
    require(backend, dtype=dtype)
    video, desc, fm, dm = case(4, 6, 5, 3, 24, gen, dtype=dtype, masks=True)
    want = od_solve(video, desc, frame_mask=fm, desc_mask=dm, backend=backend)
    # Same values behind odd strides: transposed storage, every other element, sliced masks.
    video_t = video.transpose(0, 1).contiguous().transpose(0, 1)
    desc_s = torch.stack([desc, torch.zeros_like(desc)], dim=-1).flatten(-2)[..., ::2]
    fm_t = fm.t().contiguous().t()
    dm_s = torch.stack([dm, dm], dim=-1).flatten(-2)[:, ::2]
    assert not video_t.is_contiguous() and not desc_s.is_contiguous() and not dm_s.is_contiguous()
    got = od_solve(video_t, desc_s, frame_mask=fm_t, desc_mask=dm_s, backend=backend)
    # The CPU kernel makes rows contiguous before reducing them; elsewhere PyTorch's norm may
    # reduce a strided row in another order (last-bit differences).
    exact = backend == "cpu"
    torch.testing.assert_close(got, want, rtol=0 if exact else 1e-6, atol=0 if exact else 1e-7)


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e20), (torch.float32, 1e37), (torch.float32, 1e-20),
                                          (torch.float32, 1e-36), (torch.bfloat16, 1e37), (torch.bfloat16, 1e-30),
                                          (torch.float64, 1e200), (torch.float64, 1e-200)], ids=str)
@pytest.mark.parametrize("side", ["video", "desc", "both"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_normalized_scores_do_not_depend_on_magnitude(backend, side, dtype, scale, gen):
    """normalize=True is scale-invariant: rows too large for a float32 norm, or so small that
    their norm meets NORM_EPS, give the scores (and, times the scale, the gradients) of their
    unscaled selves, on either side. Backend "cpu" rescales them inside its kernels, the others
    in od_solve first (_magnitudes.py)."""
    require(backend, dtype=dtype)
    video, desc, fm, dm = case(2, 3, 4, 3, 16, gen, masks=True)
    video, desc = video / video.abs().amax(), desc / desc.abs().amax()
    small = {"video": video.to(dtype), "desc": desc.to(dtype)}
    large = {k: (v.double() * scale).to(dtype) if side in (k, "both") else v for k, v in small.items()}
    want = od_solve(small["video"], small["desc"], frame_mask=fm, desc_mask=dm, backend=backend)
    got = od_solve(large["video"], large["desc"], frame_mask=fm, desc_mask=dm, backend=backend)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype, 2e-2)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    if dtype == torch.bfloat16:
        return
    a = {k: v.clone().requires_grad_(True) for k, v in small.items()}
    b = {k: v.clone().requires_grad_(True) for k, v in large.items()}
    od_solve(a["video"], a["desc"], frame_mask=fm, desc_mask=dm, backend=backend).sum().backward()
    od_solve(b["video"], b["desc"], frame_mask=fm, desc_mask=dm, backend=backend).sum().backward()
    for k in a:
        factor = scale if side in (k, "both") else 1.0
        torch.testing.assert_close(b[k].grad.double() * factor, a[k].grad.double(), rtol=1e-4, atol=1e-6)


def test_unrepresentable_arithmetic_is_refused(gen):
    video, desc, _, _ = case(2, 3, 4, 3, 16, gen)
    with pytest.raises(ValueError, match=r"`eps` = 1e-40 is too small for torch.float32 arithmetic.*eps >= 8.4"):
        od_solve(video, desc, eps=1e-40, backend="torch")
    assert torch.isfinite(od_solve(video.double(), desc.double(), eps=1e-40, backend="torch")).all()
    assert torch.isfinite(od_solve(video, desc, eps=1e-30, backend="torch")).all()
    with pytest.raises(ValueError, match=r"with normalize=False the dot products reach .* use normalize=True"):
        od_solve(video * 1e20, desc * 1e20, normalize=False, backend="torch")
    # float64 rows whose squares overflow: measured (not dropped as inf rows) and refused.
    with pytest.raises(ValueError, match=r"dot products reach more than 1.8e308 .* torch.float64"):
        od_solve(video.double() * 1e200, desc.double() * 1e200, normalize=False, backend="cpu")
