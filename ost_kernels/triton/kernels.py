"""Triton kernels of the OD solver: the fused forward, and the backward's weights.

Layout shared by both: a program works on a tile of BB videos x BA classes. The tile's
frames form BB * TP matmul rows (row r = video r // TP, frame r % TP) and its descriptors
BA * NP columns (column c = class c // NP, descriptor c % NP), with T and N padded to the
powers of two TP and NP and the padding masked. One tl.dot over d gives the tile's
(BB * TP, BA * NP) dot products; the inverse norms (computed once per call by the launcher,
not per tile) turn them into cosines.

Forward, per (video, class) pair, viewed as (TP, NP, BB, BA) so that the pairs are the
fastest-varying dimensions: the compiler's default layout then spreads pairs over lanes and
warps, and each thread holds whole T x N blocks, so the row and column sums of the Sinkhorn
loop are sums in registers, never across warps.

  * Scaling form where it is safe: with hi / lo the pair's largest / smallest valid sim,
    K = exp2((sim - hi) * log2(e) / eps) lies in [2^-SAFE_RANGE2, 1] whenever
    (hi - lo) * log2(e) / eps <= SAFE_RANGE2 (64 in natural units, as the CPU kernel). Then
    r = mu / (K c), c = nu / (K^T r) neither underflows nor overflows: one exp2 per entry per
    solve, multiply-adds in the loop. P = diag(r) K diag(c).
  * Log domain otherwise (small eps with widely spread sims), exactly as docs/design.md
    writes it, in base 2: z = (sim - hi) * log2(e) / eps, a_i = log2 mu - LSE2_j(z + b),
    b_j = log2 nu - LSE2_i(z + a). That loop runs only when the tile holds such a pair.

One tensor X holds K for safe pairs and z for the others, so neither sim nor a second
(T, N) block per pair stays live through the loops; the score's sim is recovered at the end
as hi + log2(K) * eps / log2(e). Potentials are kept in base 2 relative to hi (a = log2 r,
b = log2 c for safe pairs) and converted at the end: f = a * eps * ln 2 + 1 - hi,
g = b * eps * ln 2. Each pair is frozen once it meets the stop rule and is solved by one form
chosen from its own sims, so its result never depends on the other pairs of its tile.
"""
import triton
import triton.language as tl
from triton.language.extra import libdevice

from .. import constants

# Module-level values a @triton.jit function reads must be tl.constexpr: a plain float is
# refused by Triton's code generator (the interpreter would not notice).
LN2 = tl.constexpr(constants.LN2)
LOG2E = tl.constexpr(constants.LOG2E)
SAFE_RANGE2 = tl.constexpr(64.0 * constants.LOG2E)


@triton.jit
def _tile_rows_cols(pid_b, pid_a, B, T, N, a_start, a_stop, FM, DM,
                    BB: tl.constexpr, BA: tl.constexpr, TP: tl.constexpr, NP: tl.constexpr):
    """Indices of the tile's rows (frames) and columns (descriptors, of classes from a_start
    on, below a_stop) into the flattened (B * T) and (A * N) arrays, in int64, and which of
    them are valid (in range and unmasked)."""
    rows = tl.arange(0, BB * TP)
    cols = tl.arange(0, BA * NP)
    vb = pid_b * BB + rows // TP
    vt = rows % TP
    da = a_start + pid_a * BA + cols // NP
    dj = cols % NP
    row_in = (vb < B) & (vt < T)
    col_in = (da < a_stop) & (dj < N)
    vrow = vb.to(tl.int64) * T + vt
    drow = da.to(tl.int64) * N + dj
    row_ok = row_in & (tl.load(FM + vrow, mask=row_in, other=0) != 0)
    col_ok = col_in & (tl.load(DM + drow, mask=col_in, other=0) != 0)
    return vb, vt, da, dj, vrow, drow, row_ok, col_ok


@triton.jit
def _tile_sims(V, D, VS, DS, vb, vt, da, dj, vrow, drow, row_ok, col_ok, B, T, N, a_stop, d,
               svb, svt, svd, sda, sdn, sdd,
               BD: tl.constexpr, EVEN_K: tl.constexpr, INTERPRETED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
               BB: tl.constexpr, BA: tl.constexpr, TP: tl.constexpr, NP: tl.constexpr):
    """(BB * TP, BA * NP) cosines of the tile (plain dot products when the scales are 1),
    0 where a row or column is invalid (NaN there stays there: callers mask by validity).

    Rows and columns past the ends are clamped onto the last real ones instead of masked, so
    the loads carry no per-row predicates (only the d-tail is masked, unless EVEN_K); what
    they read is discarded by the validity masks. Offsets are int64: B * T * d and A * N * d
    can pass 2^31."""
    v_base = V + tl.minimum(vb, B - 1).to(tl.int64) * svb + tl.minimum(vt, T - 1).to(tl.int64) * svt
    d_base = D + tl.minimum(da, a_stop - 1).to(tl.int64) * sda + tl.minimum(dj, N - 1).to(tl.int64) * sdn
    acc = tl.zeros((BB * TP, BA * NP), dtype=tl.float32)
    kk = tl.arange(0, BD)
    for k0 in range(0, d, BD):
        v_ptr = v_base[:, None] + (k0 + kk)[None, :] * svd
        d_ptr = d_base[:, None] + (k0 + kk)[None, :] * sdd
        if EVEN_K:
            v = tl.load(v_ptr)
            w = tl.load(d_ptr)
        else:
            v = tl.load(v_ptr, mask=(k0 + kk < d)[None, :], other=0.0)
            w = tl.load(d_ptr, mask=(k0 + kk < d)[None, :], other=0.0)
        if INTERPRETED:  # the interpreter computes tl.dot on bfloat16 operands wrongly: upcast
            v = v.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(v, tl.trans(w), acc, input_precision=INPUT_PRECISION)
    vs = tl.load(VS + vrow, mask=row_ok, other=0.0)
    ds = tl.load(DS + drow, mask=col_ok, other=0.0)
    return acc * vs[:, None] * ds[None, :]


@triton.jit
def _pairs(x, BB: tl.constexpr, BA: tl.constexpr, TP: tl.constexpr, NP: tl.constexpr):
    """(BB * TP, BA * NP) -> (TP, NP, BB, BA): one T x N block per pair, pairs fastest."""
    return tl.permute(tl.reshape(x, (BB, TP, BA, NP)), (1, 3, 0, 2))


@triton.jit
def _fast_log2(x, INTERPRETED: tl.constexpr):
    # lg2.approx on a GPU (one special-function instruction, ~2^-22 relative error) instead
    # of libdevice's exact, branching log2f; the interpreter has no libdevice.
    if INTERPRETED:
        return tl.log2(x)
    else:
        return libdevice.fast_log2f(x)


@triton.jit
def _lse2(x, axis: tl.constexpr, INTERPRETED: tl.constexpr):
    # log2 sum exp2 along `axis` (kept, size 1); -inf where every entry is -inf (masked).
    m = tl.max(x, axis=axis, keep_dims=True)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    s = tl.sum(tl.exp2(x - m_safe), axis=axis, keep_dims=True)
    return m_safe + _fast_log2(s, INTERPRETED)


@triton.jit
def od_forward_kernel(
    V, D, VS, DS, FM, DM, SCORES, F, G, ITERS, ERR,
    B, A, T, N, d,
    svb, svt, svd, sda, sdn, sdd,
    scale2, eps_ln2, max_iter, tol,
    B_KEY, A_KEY,  # size buckets for the autotuner's key; not read
    EVEN_K: tl.constexpr, INTERPRETED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    TP: tl.constexpr, NP: tl.constexpr, BB: tl.constexpr, BA: tl.constexpr, BD: tl.constexpr,
):
    # Class tiles on grid axis 0 (up to 2^31 - 1 programs), video tiles on axis 1.
    pid_a = tl.program_id(0)
    pid_b = tl.program_id(1)
    vb, vt, da, dj, vrow, drow, row_ok, col_ok = _tile_rows_cols(pid_b, pid_a, B, T, N, 0, A, FM, DM,
                                                                 BB, BA, TP, NP)
    sim = _pairs(_tile_sims(V, D, VS, DS, vb, vt, da, dj, vrow, drow, row_ok, col_ok, B, T, N, A, d,
                            svb, svt, svd, sda, sdn, sdd, BD, EVEN_K, INTERPRETED, INPUT_PRECISION, BB, BA, TP, NP),
                 BB, BA, TP, NP)
    # Everything below is 4-D, (TP, NP, BB, BA) with size-1 dimensions where a quantity does
    # not vary (keep_dims reductions): every tensor then shares X's layout, so broadcasting
    # costs nothing and no layout conversion runs inside the loops.
    rows = tl.reshape(tl.permute(tl.reshape(row_ok, (BB, TP)), (1, 0)), (TP, 1, BB, 1))
    cols = tl.reshape(tl.permute(tl.reshape(col_ok, (BA, NP)), (1, 0)), (1, NP, 1, BA))
    valid = rows & cols
    pb = pid_b * BB + tl.arange(0, BB)
    pa = pid_a * BA + tl.arange(0, BA)
    pair_ok = tl.reshape((pb < B)[:, None] & (pa < A)[None, :], (1, 1, BB, BA))
    mu = 1.0 / tl.maximum(tl.sum(rows.to(tl.float32), axis=0, keep_dims=True), 1.0)  # (1, 1, BB, 1)
    nu = 1.0 / tl.maximum(tl.sum(cols.to(tl.float32), axis=1, keep_dims=True), 1.0)  # (1, 1, 1, BA)

    # The pair's range of sims decides its form.
    hi = tl.max(tl.max(tl.where(valid, sim, float("-inf")), axis=0, keep_dims=True), axis=1, keep_dims=True)
    lo = tl.min(tl.min(tl.where(valid, sim, float("inf")), axis=0, keep_dims=True), axis=1, keep_dims=True)
    has = hi > float("-inf")
    hi = tl.where(has, hi, 0.0)                                      # (1, 1, BB, BA)
    lo = tl.where(has, lo, 0.0)
    safe = (hi - lo) * scale2 <= SAFE_RANGE2
    z = tl.where(valid, (sim - hi) * scale2, float("-inf"))
    X = tl.where(safe, tl.exp2(z), z)

    iters = tl.zeros((1, 1, BB, BA), dtype=tl.int32)
    err = tl.zeros((1, 1, BB, BA), dtype=tl.float32)

    # Scaling form. Columns are exact after each iteration; the row sums r * (K c) come from
    # the K c that the next row update needs anyway.
    r = tl.zeros((TP, 1, BB, BA), dtype=tl.float32)
    c = tl.full((1, NP, BB, BA), 1.0, dtype=tl.float32)
    kc = tl.sum(X * c, axis=1, keep_dims=True)                       # (TP, 1, BB, BA)
    active = pair_ok & safe
    it = 0
    while (it < max_iter) & (tl.max(active.to(tl.int32)) > 0):
        r_new = tl.where(rows, tl.fdiv(mu, kc), 0.0)
        ktr = tl.sum(X * r_new, axis=0, keep_dims=True)              # (1, NP, BB, BA)
        c_new = tl.where(cols, tl.fdiv(nu, ktr), 1.0)
        r = tl.where(active, r_new, r)
        c = tl.where(active, c_new, c)
        iters += active.to(tl.int32)
        kc = tl.sum(X * c, axis=1, keep_dims=True)
        e = tl.sum(tl.where(rows, tl.abs(r * kc - mu), 0.0), axis=0, keep_dims=True)
        err = tl.where(active, e, err)
        # NaN errors compare False, so a poisoned pair stops (as backend "torch").
        active = active & ((e > tol) | (tol <= 0.0))
        it += 1

    # Log domain, only for the tile's unsafe pairs.
    a = tl.zeros((TP, 1, BB, BA), dtype=tl.float32)
    b = tl.zeros((1, NP, BB, BA), dtype=tl.float32)
    active = pair_ok & (safe == 0)
    any_log = tl.max(active.to(tl.int32)) > 0
    if any_log:
        log2_mu = tl.log2(mu)
        log2_nu = tl.log2(nu)
        row_lse = _lse2(X + b, 1, INTERPRETED)                       # (TP, 1, BB, BA)
        it = 0
        while (it < max_iter) & (tl.max(active.to(tl.int32)) > 0):
            a_new = tl.where(rows, log2_mu - row_lse, 0.0)
            b_new = tl.where(cols, log2_nu - _lse2(X + a_new, 0, INTERPRETED), 0.0)
            a = tl.where(active, a_new, a)
            b = tl.where(active, b_new, b)
            iters += active.to(tl.int32)
            row_lse = _lse2(X + b, 1, INTERPRETED)
            e = tl.sum(tl.where(rows, tl.abs(tl.exp2(a + row_lse) - mu), 0.0), axis=0, keep_dims=True)
            err = tl.where(active, e, err)
            active = active & ((e > tol) | (tol <= 0.0))
            it += 1

    # Plans, scores and potentials. log2(K) is the exponent z of safe pairs.
    if any_log:
        L = tl.where(safe, _fast_log2(X, INTERPRETED), X)
        a = tl.where(safe, tl.log2(r), a)
        b = tl.where(safe, tl.log2(c), b)
        plan = tl.exp2(L + a + b)
    else:
        L = _fast_log2(X, INTERPRETED)
        a = tl.log2(r)
        b = tl.log2(c)
        plan = r * X * c
    scores = tl.sum(tl.sum(tl.where(valid, plan * (hi + L / scale2), 0.0), axis=0, keep_dims=True), axis=1,
                    keep_dims=True)

    pair_idx = pb.to(tl.int64)[:, None] * A + pa[None, :]            # (BB, BA)
    pair_idx = tl.reshape(pair_idx, (1, 1, BB, BA))
    tl.store(SCORES + pair_idx, scores, mask=pair_ok)
    tl.store(ITERS + pair_idx, iters, mask=pair_ok)
    tl.store(ERR + pair_idx, err, mask=pair_ok)
    ti = tl.reshape(tl.arange(0, TP), (TP, 1, 1, 1))
    nj = tl.reshape(tl.arange(0, NP), (1, NP, 1, 1))
    f = tl.where(rows, a * eps_ln2 + (1.0 - hi), 0.0)
    g = tl.where(cols, b * eps_ln2, 0.0)
    tl.store(F + pair_idx * T + ti, f, mask=pair_ok & (ti < T))
    tl.store(G + pair_idx * N + nj, g, mask=pair_ok & (nj < N))


@triton.jit
def od_weights_kernel(
    V, D, VS, DS, FM, DM, GO, F, G, W,
    B, A, T, N, d, a0, na,
    svb, svt, svd, sda, sdn, sdd, swr,
    scale2,
    B_KEY, A_KEY,  # size buckets for the autotuner's key; not read
    EVEN_K: tl.constexpr, INTERPRETED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    TP: tl.constexpr, NP: tl.constexpr, BB: tl.constexpr, BA: tl.constexpr, BD: tl.constexpr,
):
    """The backward's weights for classes [a0, a0 + na): W[b * T + i, (a - a0) * N + j] =
    grad_scores[b, a] * P_ij of pair (b, a), 0 where masked, written in W's dtype. The plan is
    rebuilt from the saved potentials and sims computed as the forward computes them;
    the launcher multiplies W with the unit embeddings (tensor-core GEMMs)."""
    pid_a = tl.program_id(0)
    pid_b = tl.program_id(1)
    vb, vt, da, dj, vrow, drow, row_ok, col_ok = _tile_rows_cols(pid_b, pid_a, B, T, N, a0, a0 + na, FM, DM,
                                                                 BB, BA, TP, NP)
    sim = _tile_sims(V, D, VS, DS, vb, vt, da, dj, vrow, drow, row_ok, col_ok, B, T, N, a0 + na, d,
                     svb, svt, svd, sda, sdn, sdd, BD, EVEN_K, INTERPRETED, INPUT_PRECISION, BB, BA, TP, NP)
    pair = vb.to(tl.int64)[:, None] * A + da[None, :]                # (rows, cols)
    ok = row_ok[:, None] & col_ok[None, :]
    f = tl.load(F + pair * T + vt[:, None], mask=ok, other=0.0)
    g = tl.load(G + pair * N + dj[None, :], mask=ok, other=0.0)
    go = tl.load(GO + pair, mask=ok, other=0.0)
    w = tl.where(ok, go * tl.exp2((sim - 1.0 + f + g) * scale2), 0.0)
    col = (da - a0).to(tl.int64) * N + dj
    in_range = ((vb < B) & (vt < T))[:, None] & ((da < a0 + na) & (dj < N))[None, :]
    tl.store(W + vrow[:, None] * swr + col[None, :], w.to(W.dtype.element_ty), mask=in_range)
