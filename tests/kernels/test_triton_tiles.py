"""Paths of the Triton kernels that the shared matrix's small shapes may not reach, under the
interpreter, for both Triton backends ("triton", the two-phase path, and "triton-fused"): many
programs on both sides (and, fused, d over several K blocks with and without a tail), a tile
that mixes pairs solved in the scaling form with pairs solved in the log domain (and, relaxed,
pairs redone in the log domain after leaving the scaling form's range), chunks of classes,
and a backward split into several chunks. The compiled kernels are checked by
test_triton_compile.py (code generation) and benchmarks/gpu_check.sh (on a GPU)."""
import math

import pytest
import torch

from tests.helpers.backends_under_test import require
from tests.helpers.checks import check_scores, float32_rtol
from tests.helpers.inputs import case, embeddings
from tests.helpers.naive import od_reference
from ost_kernels import od_solve
from ost_kernels.triton import configs


TRITON = ["triton", "triton-fused"]
OPS = {"triton": "od_forward_triton", "triton-fused": "od_forward_triton_fused"}


@pytest.fixture(autouse=True)
def _triton():
    require("triton")
    require("triton-fused")


def _same_pair(backend, alone, together, eps):
    """A pair solved alone equals itself solved among others: bitwise in the fused kernel (the
    same tile arithmetic); in the two-phase path the GEMM's shape changes with the inputs'
    (its float32 rounding may too), so within that rounding, amplified by 1 / eps
    (test_triton_two_phase.py checks bitwise independence at fixed shapes)."""
    if backend == "triton-fused":
        assert torch.equal(alone, together)
    else:
        torch.testing.assert_close(alone, together, rtol=float32_rtol(eps), atol=float32_rtol(eps) * 0.1)


@pytest.mark.parametrize("d", [64, 130, 192], ids=lambda d: f"d{d}")
def test_many_tiles_and_k_blocks(d, gen):
    # T = 5 -> TP = 8, N = 3 -> NP = 4: interpreter tiles of 2 videos x 4 classes, so 7 videos
    # and 9 classes span 4 x 3 tiles with ragged edges; d = 130 leaves a K tail.
    TP, NP = configs.pow2(5), configs.pow2(3)
    tile = configs.interpreter_tile(TP, NP)
    assert 7 > 2 * tile.BB and 9 > 2 * tile.BA
    check_scores("triton-fused", *case(7, 9, 5, 3, d, gen, masks=True), eps=0.1, tol=1e-3)


def _mixed_inputs(gen):
    """Classes 0-2 with descriptors close to the frames' mean direction m and classes 3-5
    holding both m and -m (a spread of sims about twice as wide): at the eps that
    _mixed_eps picks, the first pairs are safe for the scaling form, the others need the log
    domain."""
    d = 32
    video = embeddings((3, 6), d, gen)
    m = torch.nn.functional.normalize(video / video.norm(dim=-1, keepdim=True), dim=-1).mean((0, 1))
    m = m / m.norm()
    close = m + 0.02 * torch.randn(3, 4, d, generator=gen)
    far = torch.randn(3, 4, d, generator=gen)
    far[:, 0], far[:, 1] = m, -m
    return video, torch.cat([close, far])


def _spreads(video, desc):
    vn = video / video.norm(dim=-1, keepdim=True)
    dn = desc / desc.norm(dim=-1, keepdim=True)
    sims = torch.einsum("btd,and->batn", vn, dn)
    return sims.amax((-1, -2)) - sims.amin((-1, -2))


# The fused kernel (calibration only) in make test-heavy: 7-8 s under the interpreter.
@pytest.mark.parametrize("backend", ["triton", pytest.param("triton-fused", marks=pytest.mark.heavy)])
def test_tile_mixing_scaling_and_log_domain_pairs(backend, gen):
    video, desc = _mixed_inputs(gen)
    spread = _spreads(video, desc)
    # The eps that puts every close pair just inside the scaling form's range (spread / eps
    # <= 64) whatever the random frames are: the wide pairs then lie outside it.
    eps = float(spread[:, :3].max()) / 60
    safe = spread / eps <= 64
    assert safe[:, :3].all() and not safe[:, 3:].any()
    check_scores(backend, video, desc, eps=eps, tol=1e-4)
    # Each pair's result is the one it gets alone: the form is chosen per pair.
    full, info = od_solve(video, desc, eps=eps, tol=1e-4, backend=backend, return_info=True)
    for b, a in [(0, 1), (2, 4), (1, 5)]:
        alone, alone_info = od_solve(video[b:b + 1], desc[a:a + 1], eps=eps, tol=1e-4, backend=backend,
                                     return_info=True)
        assert alone_info.iterations.item() == info.iterations[b, a].item()
        _same_pair(backend, alone[0, 0], full[b, a], eps)


# Frames relaxed, descriptors exact, at eps = 0.01: the frame side's damping removes the
# gauge freedom, and for some pairs safe for the scaling form the descriptors' scalings
# c = exp(g / eps) then leave float32's range (test_relaxed_pairs_..._are_redone).
RELAXED_FRAMES, RELAXED_EPS = (0.3, float("inf")), 0.01


def _relaxed_kinds(video, desc, eps, reg):
    """(B, A) masks of the relaxed pairs' three fates in the kernel (kernels.py), from the
    float64 solution: kept in the scaling form, redone in the log domain (a scaling r = 2^a
    or c = 2^b outside [RANGE_LO, RANGE_HI] = [2^-63, 2^64]), log domain from the start; and
    of the redone ones, those whose scalings would overflow or underflow float32 itself."""
    out = torch.ops.ost_kernels.od_forward_torch(video.double(), desc.double(), None, None, None, None, eps, 300,
                                                 1e-6, *reg, True)
    f, g = out[1], out[2]
    vn = video.double() / video.double().norm(dim=-1, keepdim=True)
    dn = desc.double() / desc.double().norm(dim=-1, keepdim=True)
    sims = torch.einsum("btd,and->batn", vn, dn)
    hi, lo = sims.amax((-1, -2)), sims.amin((-1, -2))
    log2e = 1 / math.log(2)
    a = (f + hi[..., None] - 1) / eps * log2e
    b = g / eps * log2e
    tau = reg[0] / (reg[0] + eps) if reg[0] != float("inf") else 1.0
    lift = (1 - tau) * (hi - 1) / eps  # natural units, as the spread
    safe = ((hi - lo) / eps <= 64) & (lift.abs() <= 64)
    low = torch.minimum(a.amin(-1), b.amin(-1))
    high = torch.maximum(a.amax(-1), b.amax(-1))
    redone = safe & ((low < -63) | (high > 64))
    overflow = redone & ((low < -126) | (high > 127))
    return safe & ~redone, redone, ~safe, overflow


def _relaxed_inputs(gen):
    """Random embeddings (3 videos, 21 classes: pairs redone, some overflowing, and log
    domain at RELAXED_EPS) and a video of nearly equal frames with 3 classes close to them
    (pairs kept in the scaling form)."""
    video, desc, _, _ = case(3, 21, 9, 5, 24, gen)
    u = torch.nn.functional.normalize(torch.randn(24, generator=gen), dim=0)
    tight = u + 0.03 * torch.randn(1, 9, 24, generator=gen)
    near = u + 0.03 * torch.randn(3, 5, 24, generator=gen)
    video, desc = torch.cat([video, tight]), torch.cat([desc, near])
    kept, redone, log, overflow = _relaxed_kinds(video, desc, RELAXED_EPS, RELAXED_FRAMES)
    assert kept.any() and overflow.any() and log.any(), (kept.sum(), redone.sum(), overflow.sum(), log.sum())
    return video, desc, kept, redone, log


@pytest.mark.parametrize("backend", ["triton", pytest.param("triton-fused", marks=pytest.mark.heavy)])
def test_relaxed_pairs_leaving_the_scaling_range_are_redone_in_the_log_domain(backend, gen):
    """Tiles holding relaxed pairs of three kinds: kept in the scaling form, solved there
    then redone in the log domain (their scalings left the range; some would overflow float32,
    which without the redo gives wrong scores), and log-domain from the start. Each matches
    the reference and equals what it gets alone (bitwise)."""
    video, desc, kept, redone, log = _relaxed_inputs(gen)
    kw = dict(eps=RELAXED_EPS, reg_m=RELAXED_FRAMES, tol=1e-5, max_iter=300)
    scores, info = od_solve(video, desc, backend=backend, return_info=True, **kw)
    ref, _, ref_err, _ = od_reference(video, desc, iterations=info.iterations.numpy(), **kw)
    rtol = float32_rtol(RELAXED_EPS)
    torch.testing.assert_close(scores.double(), torch.from_numpy(ref), rtol=rtol, atol=rtol * 0.1)
    torch.testing.assert_close(info.marginal_error.double(), torch.from_numpy(ref_err), rtol=0, atol=rtol * 10)
    if backend != "triton-fused":
        return  # two-phase: a GEMM of another shape may round the sims apart (test_triton_two_phase
        # checks its pairs' independence at a fixed chunking)
    for kind in (kept, redone, log):
        b, a = (int(x) for x in kind.nonzero()[0])
        alone, alone_info = od_solve(video[b:b + 1], desc[a:a + 1], backend=backend, return_info=True, **kw)
        assert alone_info.iterations.item() == info.iterations[b, a].item()
        _same_pair(backend, alone[0, 0], scores[b, a], RELAXED_EPS)


def _forward_outputs(backend, video, desc, fm, dm, eps, max_iter, tol, normalize, weights=(None, None),
                     reg=(float("inf"), float("inf"))):
    op = getattr(torch.ops.ost_kernels, OPS[backend])
    return op(video, desc, fm, dm, *weights, eps, max_iter, tol, *reg, normalize)[:5]


@pytest.mark.parametrize("eps, tol, normalize, inputs, marginals", [
    (0.1, 0.0, True, "random", "uniform"),      # FIXED, scaling form alone
    (0.1, 1e-3, True, "random", "uniform"),     # scaling form alone
    (0.01, 0.0, True, "mixed", "uniform"),      # FIXED, tiles with log-domain pairs
    (0.05, 0.0, False, "random", "uniform"),    # FIXED, plain dot products (log domain compiled in)
    (0.1, 0.0, True, "random", "weighted"),     # FIXED, weights, scaling form alone
    (0.1, 0.0, True, "random", "relaxed"),      # FIXED, weights and reg_m (log domain compiled in)
    # FIXED, pairs redone in the log domain; the same with the stop rule (10-27 s a case under
    # the interpreter: `make test-heavy`)
    pytest.param(RELAXED_EPS, 0.0, True, "relaxed", "redone", marks=pytest.mark.heavy),
    pytest.param(RELAXED_EPS, 1e-4, True, "relaxed", "redone", marks=pytest.mark.heavy),
], ids=["fixed-scaling", "scaling", "fixed-mixed", "fixed-unnormalized", "fixed-weighted", "fixed-relaxed",
        "fixed-redone", "redone"])
@pytest.mark.parametrize("backend", TRITON)
def test_specializations_are_bitwise_the_general_kernel(backend, eps, tol, normalize, inputs, marginals, gen,
                                                        monkeypatch):
    """FIXED (tol = 0) and LOG_DOMAIN = False compile the same arithmetic without the stop
    rule's bookkeeping or the log-domain path: every output equals the general kernel's (the
    two-phase kernel's LOG_DOMAIN = False also drops the shift by each pair's largest sim,
    which changes its rounding: there, within it)."""
    from ost_kernels.triton import fused, launch, ops

    module = fused if backend == "triton-fused" else ops

    if inputs == "mixed":
        video, desc = _mixed_inputs(gen)
        fm = dm = None
    elif inputs == "relaxed":
        video, desc = _relaxed_inputs(gen)[:2]
        fm = dm = None
    else:
        video, desc, fm, dm = case(5, 9, 7, 3, 48, gen, masks=True)
    weights, reg = (None, None), (float("inf"), float("inf"))
    if marginals in ("weighted", "relaxed"):
        weights = (torch.rand(video.shape[:2], generator=gen) + 0.1, torch.rand(desc.shape[:2], generator=gen) + 0.1)
    if marginals == "relaxed":
        reg = (0.5, 0.2)
    if marginals == "redone":
        reg = RELAXED_FRAMES
    relaxed = reg != (float("inf"), float("inf"))
    chosen = launch.specializations(eps, tol, normalize, sims_from_k=module is fused,
                                    weighted=weights[0] is not None, relaxed=relaxed)
    assert chosen["FIXED"] == (tol == 0)
    assert chosen["LOG_DOMAIN"] == (relaxed or not normalize or eps < launch.ALWAYS_SAFE_EPS)
    assert (chosen["WEIGHTED"], chosen["RELAXED"]) == (weights[0] is not None, relaxed)
    special = _forward_outputs(backend, video, desc, fm, dm, eps, 25, tol, normalize, weights, reg)
    real = module.specializations
    monkeypatch.setattr(module, "specializations", lambda *args, **kw: {**real(*args, **kw), "FIXED": False,
                                                                        "LOG_DOMAIN": True})
    general = _forward_outputs(backend, video, desc, fm, dm, eps, 25, tol, normalize, weights, reg)
    shifted = module is ops and not chosen["LOG_DOMAIN"]
    for name, x, y in zip(("scores", "f", "g", "iterations", "error"), special, general):
        if shifted and name != "iterations":
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(x, y), name
    if tol == 0:
        assert (special[3] == 25).all()


@pytest.mark.parametrize("backend", TRITON)
def test_backward_over_several_chunks_of_classes(backend, gen, monkeypatch):
    from ost_kernels.triton import fused, ops

    video, desc, fm, dm = case(3, 7, 6, 3, 40, gen, masks=True)
    grad_out = torch.randn(3, 7, generator=gen)
    grads = {}
    for chunked in (False, True):
        # B * T * N = 54 weights a class: 120 elements is 2 classes a chunk, 4 chunks.
        if backend == "triton-fused":
            monkeypatch.setattr(fused, "WEIGHTS_CHUNK_ELEMENTS", 120 if chunked else 1 << 26)
        else:  # 2 classes of float32 sims a chunk: 4 chunks
            monkeypatch.setenv(ops.CHUNK_ENV, str(2 * 54 * 4 / 2**20) if chunked else "24")
        v = video.clone().requires_grad_(True)
        d = desc.clone().requires_grad_(True)
        scores = od_solve(v, d, frame_mask=fm, desc_mask=dm, tol=0, max_iter=30, backend=backend)
        grads[chunked] = torch.autograd.grad(scores, (v, d), grad_out)
    v = video.clone().requires_grad_(True)
    d = desc.clone().requires_grad_(True)
    scores = od_solve(v, d, frame_mask=fm, desc_mask=dm, tol=0, max_iter=30, backend="torch")
    want = torch.autograd.grad(scores, (v, d), grad_out)
    for got in grads.values():
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=2e-5, atol=2e-5)
    # Fused: the same arithmetic per chunk. Two-phase: each chunk's GEMM has its own shape.
    close = dict(rtol=1e-6, atol=1e-7) if backend == "triton-fused" else dict(rtol=1e-4, atol=1e-6)
    for g1, g2 in zip(grads[False], grads[True]):
        torch.testing.assert_close(g1, g2, **close)


@pytest.mark.parametrize("T, N, tile", [
    (29, 3, "BB1_BA32_w4_s3"),   # descriptors on the in-thread bit and the repetition (128 x 32)
    (32, 4, "BB1_BA64_w8_s3"),   # 8 warps along 256 rows, two repetitions
    (30, 4, "BB2_BA32_w8_s3"),   # 8 warps along 128 rows: a descriptor bit on the lanes
    (32, 4, "BB4_BA16_w8_s3"),   # 64 rows: 4 warps along M, 2 along the frames; four videos a tile
    (32, 4, "BB4_BA8_w4_s3"),    # 32 rows (below one warpgroup's 64): 2 warps along M
    (13, 7, "BB2_BA16_w4_s3"),   # N = 7 -> 8 descriptors: in-thread, repetition and lane bits
    (32, 8, "BB8_BA4_w8_s3"),    # 8 descriptors over 32 rows: two lane bits; eight videos
    (8, 4, "BB8_BA16_w4_s3"),    # eight videos: four on the lanes
], ids=lambda x: str(x))
def test_tile_layouts_against_the_reference(T, N, tile, gen, monkeypatch):
    """Each way of numbering a fused tile's rows and columns (kernels.py: descriptors on
    in-thread, repetition, lane or warp bits, videos on lanes) gives the reference's results;
    tiles ragged on both sides, masks."""
    from ost_kernels.triton import fused

    monkeypatch.setenv(fused.TILE_ENV, tile)
    cfg = configs.by_name(tile, configs.pow2(T), configs.pow2(N))
    B, A = cfg.BB + 1, cfg.BA + 3
    check_scores("triton-fused", *case(B, A, T, N, 40, gen, masks=True), eps=0.1, tol=1e-3)


def test_tile_env_names_a_candidate(monkeypatch):
    from ost_kernels.triton import fused

    monkeypatch.setenv(fused.TILE_ENV, "BB3_BA5_w4_s3")
    video, desc, _, _ = case(2, 3, 8, 4, 16, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="OST_KERNELS_TRITON_TILE: tile 'BB3_BA5_w4_s3' is not a candidate"):
        od_solve(video, desc, backend="triton-fused")
