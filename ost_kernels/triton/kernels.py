"""Triton kernels of the OD solver: the fused forward, and the backward's weights.

Both kernels work on a tile of BB videos x BA classes, with T and N padded to the powers of
two TP and NP (the padding masked), and get the tile's dot products from one tl.dot over d;
the inverse norms (computed once per call by the launcher, not per tile) turn them into
cosines.

Forward layout. The dot's rows are the tile's BA * NP descriptors and its columns the BB * TP
frames (the operands swapped against the obvious (frames x descriptors) product): at the key
shape (T = 32, N = 4, BB = 1, BA = 32) that is a 128 x 32 tile, which Hopper computes with
one warpgroup's wgmma. In an MMA accumulator a row index m splits into bit fields
(least significant first) l = 8 lanes (lane // 4), i = 1 in-thread bit, w = WM warps along M
and r = the repetitions of the warps' 16-row slabs; a column index into 1 in-thread bit, 2
lane bits (lane % 4), then in-thread repetitions. So rows and columns are numbered to put
descriptor and frame bits where a thread holds them and class and video bits across lanes
and warps:

    descriptor bits: the in-thread row bit, then repetition bits, then lane bits, warps last
    class bits:      what is left of each field
    column = (V_HI, F_HI, V_LO, F_LO): F_LO = 2 frames on the in-thread bit, V_LO <= 4
                     videos on the lane bits, the frames' other bits above (in-thread
                     repetitions), further videos on top

At the key shape a pair's 32 x 4 block then lies in the 4 lanes of a quad, 8 whole frames x 4
descriptors each: row sums (over descriptors) are sums in registers and column sums (over
frames) take two shuffle levels. WM is taken from Hopper's rule for wgmma (warps double along M
from 4 while M > 16 x that): with 8 warps on 128 rows a descriptor bit lands on the lanes (one
shuffle level more). The layout only decides speed: any numbering gives the same results, and
the interpreter tests run each kind of map (tests/kernels/test_triton_tiles.py).

Forward, per (video, class) pair, viewed as (TP, NP, BB, BA) (the accumulator reshaped and
permuted, which only renames its registers):

  * Scaling form where it is safe: with hi / lo the pair's largest / smallest valid sim,
    K = exp2((sim - hi) * log2(e) / eps) lies in [2^-SAFE_RANGE2, 1] whenever
    (hi - lo) * log2(e) / eps <= SAFE_RANGE2 (64 in natural units, as the CPU kernel). Then
    r = mu / (K c), c = nu / (K^T r) neither underflows nor overflows: one exp2 per entry per
    solve, multiply-adds and T + N divisions per iteration. P = diag(r) K diag(c).
  * Log domain otherwise (small eps with widely spread sims, or eps above SCALING_MAX_EPS,
    where sims recovered from K would lose ~eps * 2^-23), exactly as docs/design.md
    writes it, in base 2: z = (sim - hi) * log2(e) / eps, a_i = log2 mu - LSE2_j(z + b),
    b_j = log2 nu - LSE2_i(z + a). That loop runs only when the tile holds such a pair.

One tensor X holds K for safe pairs and z for the others, so neither sim nor a second
(T, N) block per pair stays live through the loops; the score's sim is recovered at the end
as hi + log2(K) * eps / log2(e). Potentials are kept in base 2 relative to hi (a = log2 r,
b = log2 c for safe pairs) and converted at the end: f = a * eps * ln 2 + 1 - hi,
g = b * eps * ln 2. Each pair is frozen once it meets the stop rule and is solved by one form
chosen from its own sims, so its result never depends on the other pairs of its tile.

Weights and relaxed marginals (WEIGHTED, RELAXED; the weights and the damping tau = rho /
(rho + eps) of each side are runtime values). WEIGHTED reads the frame / descriptor weights
(float32, zero-weight entries already folded into the masks) and makes mu, nu per-entry
vectors; without it they are one value per pair. RELAXED damps each update (docs/design.md):
r = 2^(tau_f (log2 mu - log2 K c) + lift), c = 2^(tau_d (log2 nu - log2 K^T r)), where
lift = (1 - tau_f)(hi - 1) log2(e) / eps carries the shift by hi that exact updates absorb;
in the log domain a = tau_f (log2 mu - LSE2_j(z + b)) + lift, b likewise with tau_d. The stop
rule compares the row marginal with the previous iteration's (from f = g = 0). A relaxed pair
is sent to the log domain when |lift| is outside the safe range, and solved again there after
its scaling-form solve when its r or c left [RANGE_LO, RANGE_HI] (a relaxed side loses the
gauge freedom that keeps them in range); the choice rests on the pair's own data only.

LOG_DOMAIN = False compiles the scaling form alone, for calls where every pair is known to be
safe: cosine sims (|sim| <= 1) with ALWAYS_SAFE_EPS <= eps <= SCALING_MAX_EPS (ops.py), the default eps = 0.1
among them. No lo, no log-domain code or registers, no block-wide "any log pair?".

FIXED (tol = 0, every pair runs max_iter iterations) compiles the loops without the stop
rule: no per-iteration error, no freezing selects, no block-wide "anyone active?" reduction;
the error is computed once after the loop, from the same values, so the results are bitwise
those of the general loop. On a GPU, divisions and log2 use the approximate instructions
(div.approx: MUFU.RCP and a multiply; lg2.approx), ~2 ulp; the interpreter runs exact ones.
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
# Below this scale2 (eps above constants.SCALING_MAX_EPS) recovering sims from K loses too many
# bits: every pair runs in the log domain.
MIN_SCALE2 = tl.constexpr(constants.LOG2E / constants.SCALING_MAX_EPS)
# The range a relaxed pair's scalings must stay in to keep its scaling-form solve (sqrt of
# float32's smallest normal / largest finite number, as the CPU kernel's check).
RANGE_LO = tl.constexpr(1.0842021724855044e-19)
RANGE_HI = tl.constexpr(1.8446742974197924e19)


@triton.jit
def _row_base(P, outer, n_outer, inner, n_inner, s_outer, s_inner):
    """Pointers to the rows (outer, inner) of a (n_outer, n_inner, d) operand. Indices past
    the ends are clamped onto the last real row instead of masked, so the loads carry no
    per-row predicates (what they read is discarded by the validity masks). int64: B * T * d
    and A * N * d can pass 2^31."""
    return (P + tl.minimum(outer, n_outer - 1).to(tl.int64) * s_outer
            + tl.minimum(inner, n_inner - 1).to(tl.int64) * s_inner)


@triton.jit
def _dot_rows(x_base, sxk, y_base, syk, d, M: tl.constexpr, NC: tl.constexpr,
              BD: tl.constexpr, EVEN_K: tl.constexpr, INTERPRETED: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """(M, NC) float32 dot products over d of the rows at x_base (M,) and y_base (NC,); the
    d-tail is masked unless EVEN_K."""
    acc = tl.zeros((M, NC), dtype=tl.float32)
    kk = tl.arange(0, BD)
    for k0 in range(0, d, BD):
        x_ptr = x_base[:, None] + (k0 + kk)[None, :] * sxk
        y_ptr = y_base[:, None] + (k0 + kk)[None, :] * syk
        if EVEN_K:
            x = tl.load(x_ptr)
            y = tl.load(y_ptr)
        else:
            x = tl.load(x_ptr, mask=(k0 + kk < d)[None, :], other=0.0)
            y = tl.load(y_ptr, mask=(k0 + kk < d)[None, :], other=0.0)
        if INTERPRETED:  # the interpreter computes tl.dot on bfloat16 operands wrongly: upcast
            x = x.to(tl.float32)
            y = y.to(tl.float32)
        acc = tl.dot(x, tl.trans(y), acc, input_precision=INPUT_PRECISION)
    return acc


@triton.jit
def _fast_log2(x, INTERPRETED: tl.constexpr):
    # lg2.approx on a GPU (one special-function instruction, ~2^-22 relative error) instead
    # of libdevice's exact, branching log2f; the interpreter has no libdevice.
    if INTERPRETED:
        return tl.log2(x)
    else:
        return libdevice.fast_log2f(x)


@triton.jit
def _fast_div(x, y, INTERPRETED: tl.constexpr):
    # div.approx on a GPU (MUFU.RCP and a multiply, ~2 ulp; 0 for |y| > 2^126, which the
    # scaling form's bounded K never produces) instead of div.full's ~9 instructions.
    if INTERPRETED:
        return x / y
    else:
        return libdevice.fast_dividef(x, y)


@triton.jit
def _any(x):
    # Whether any entry of a 4-D boolean tensor is set, reduced one axis at a time: a reduction
    # over all entries at once would first convert x to a 1-D layout (through shared memory),
    # in every iteration of the loops that ask.
    x = x.to(tl.int32)
    return tl.max(tl.max(tl.max(tl.max(x, axis=3), axis=2), axis=1), axis=0) > 0


@triton.jit
def _lse2(x, axis: tl.constexpr, INTERPRETED: tl.constexpr):
    # log2 sum exp2 along `axis` (kept, size 1); -inf where every entry is -inf (masked).
    m = tl.max(x, axis=axis, keep_dims=True)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    s = tl.sum(tl.exp2(x - m_safe), axis=axis, keep_dims=True)
    return m_safe + _fast_log2(s, INTERPRETED)


@triton.jit
def _pairs(x, TP: tl.constexpr, NP: tl.constexpr, BB: tl.constexpr, BA: tl.constexpr,
           D_I: tl.constexpr, D_L: tl.constexpr, D_W: tl.constexpr, D_R: tl.constexpr,
           C_I: tl.constexpr, C_L: tl.constexpr, C_W: tl.constexpr, C_R: tl.constexpr,
           F_LO: tl.constexpr, V_LO: tl.constexpr):
    """(BA * NP, BB * TP) in the numbering of the module doc -> (TP, NP, BB, BA). Only
    renames registers: the result keeps the MMA accumulator's distribution."""
    x = tl.reshape(x, (C_R, D_R, C_W, D_W, C_I, D_I, C_L, D_L, BB // V_LO, TP // F_LO, V_LO, F_LO))
    return tl.reshape(tl.permute(x, (9, 11, 3, 1, 7, 5, 8, 10, 0, 2, 6, 4)), (TP, NP, BB, BA))


@triton.jit
def _tile_pairs(V, D, VS, DS, FM, DM, FW, DW, pid_b, pid_a, B, A, T, N, d, svb, svt, svd, sda, sdn, sdd,
                BD: tl.constexpr, EVEN_K: tl.constexpr, INTERPRETED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                WEIGHTED: tl.constexpr,
                TP: tl.constexpr, NP: tl.constexpr, BB: tl.constexpr, BA: tl.constexpr, NW: tl.constexpr):
    """The tile's pairs, each a (TP, NP) block, pairs fastest:

        sim (TP, NP, BB, BA)   cosines (plain dot products when the scales are 1); NaN in
                               masked entries stays there (the caller masks by validity)
        rows (TP, 1, BB, BA), cols (1, NP, BB, BA)   valid (in range, unmasked, and with
                               WEIGHTED a weight > 0) frames and descriptors
        ti (TP, 1, BB, BA), nj (1, NP, BB, BA)       frame and descriptor numbers
        vb, da (1, 1, BB, BA)                         video and class numbers
        wt (TP, 1, BB, BA), wn (1, NP, BB, BA)       with WEIGHTED, the frame / descriptor
                               weights (FW (B * T,), DW (A * N,) float32), 0 where not valid;
                               without, the validity as 0 / 1 (unused: uniform marginals)

    Everything is computed in the dot's (descriptors, frames) numbering and brought to 4-D
    by `_pairs` (reductions over the axis a quantity does not vary along, in registers or
    within a quad): every result then shares the accumulator's layout, and the Sinkhorn loops
    run without layout conversions. (Indices built from a fresh tl.arange in 4-D would get a
    layout of their own, and Triton would convert the (T, N) blocks to it, through shared
    memory, in every iteration.)"""
    M: tl.constexpr = BA * NP
    NC: tl.constexpr = BB * TP
    # Row bit fields of the accumulator (module doc): 8 lanes (l), 1 in-thread bit (i), WM
    # warps (w), R repetitions (r). WM is Hopper's choice for wgmma (Triton doubles the warps
    # along M from 4 while M > 16 x that); on sm_80 it may differ, which costs speed only.
    WM: tl.constexpr = max(1, min(NW, max(4, M // 16), M // 16))
    R: tl.constexpr = M // (16 * WM)
    # Descriptor bits go to the in-thread bit, then the repetitions, then the lanes, the warps
    # last; class bits take the rest.
    D_I: tl.constexpr = min(NP, 2)
    D_R: tl.constexpr = min(R, NP // D_I)
    D_L: tl.constexpr = min(8, NP // (D_I * D_R))
    D_W: tl.constexpr = NP // (D_I * D_R * D_L)
    C_I: tl.constexpr = 2 // D_I
    C_L: tl.constexpr = 8 // D_L
    C_W: tl.constexpr = WM // D_W
    C_R: tl.constexpr = R // D_R
    F_LO: tl.constexpr = min(TP, 2)
    F_HI: tl.constexpr = TP // F_LO
    V_LO: tl.constexpr = min(BB, 4)
    m = tl.arange(0, M)
    ml = m % 8
    mi = (m // 8) % 2
    mw = (m // 16) % WM
    mr = m // (16 * WM)
    dj = (((mw % D_W) * D_R + mr % D_R) * D_L + ml % D_L) * D_I + mi % D_I
    da = pid_a * BA + (((mr // D_R) * C_W + mw // D_W) * C_L + ml // D_L) * C_I + mi // D_I
    n = tl.arange(0, NC)
    vb = pid_b * BB + n // (F_LO * V_LO * F_HI) * V_LO + (n // F_LO) % V_LO
    vt = (n // (F_LO * V_LO)) % F_HI * F_LO + n % F_LO
    acc = _dot_rows(_row_base(D, da, A, dj, N, sda, sdn), sdd, _row_base(V, vb, B, vt, T, svb, svt), svd, d,
                    M, NC, BD, EVEN_K, INTERPRETED, INPUT_PRECISION)
    d_in = (da < A) & (dj < N)
    v_in = (vb < B) & (vt < T)
    drow = da.to(tl.int64) * N + dj
    vrow = vb.to(tl.int64) * T + vt
    ds = tl.load(DS + drow, mask=d_in, other=0.0)
    vs = tl.load(VS + vrow, mask=v_in, other=0.0)
    d_ok = d_in & (tl.load(DM + drow, mask=d_in, other=0) != 0)
    v_ok = v_in & (tl.load(FM + vrow, mask=v_in, other=0) != 0)
    if WEIGHTED:  # a weight of 0 removes its entry, as a mask does (od_solve folds them in too)
        dw = tl.load(DW + drow, mask=d_ok, other=0.0)
        vw = tl.load(FW + vrow, mask=v_ok, other=0.0)
        d_ok = d_ok & (dw > 0.0)
        v_ok = v_ok & (vw > 0.0)
    else:
        dw = d_ok.to(tl.float32)
        vw = v_ok.to(tl.float32)
    d_ok = d_ok.to(tl.int32)
    v_ok = v_ok.to(tl.int32)
    sim = _pairs(acc * ds[:, None] * vs[None, :],
                 TP, NP, BB, BA, D_I, D_L, D_W, D_R, C_I, C_L, C_W, C_R, F_LO, V_LO)
    # Frame and descriptor numbers with their validity in bit 0, then video and class numbers.
    zero = tl.zeros((M, NC), dtype=tl.int32)
    t_code = tl.max(_pairs(zero + (vt * 2 + v_ok)[None, :],
                           TP, NP, BB, BA, D_I, D_L, D_W, D_R, C_I, C_L, C_W, C_R, F_LO, V_LO), axis=1, keep_dims=True)
    j_code = tl.max(_pairs(zero + (dj * 2 + d_ok)[:, None],
                           TP, NP, BB, BA, D_I, D_L, D_W, D_R, C_I, C_L, C_W, C_R, F_LO, V_LO), axis=0, keep_dims=True)
    vb = tl.max(_pairs(zero + vb[None, :],
                       TP, NP, BB, BA, D_I, D_L, D_W, D_R, C_I, C_L, C_W, C_R, F_LO, V_LO), axis=1, keep_dims=True)
    da = tl.max(_pairs(zero + da[:, None],
                       TP, NP, BB, BA, D_I, D_L, D_W, D_R, C_I, C_L, C_W, C_R, F_LO, V_LO), axis=0, keep_dims=True)
    vb = tl.max(vb, axis=0, keep_dims=True)
    da = tl.max(da, axis=1, keep_dims=True)
    if WEIGHTED:
        # Weights >= 0 (0 where not valid): the max over the axis they do not vary along is the value.
        zero_f = tl.zeros((M, NC), dtype=tl.float32)
        wt = tl.max(_pairs(zero_f + tl.where(v_ok != 0, vw, 0.0)[None, :],
                           TP, NP, BB, BA, D_I, D_L, D_W, D_R, C_I, C_L, C_W, C_R, F_LO, V_LO), axis=1, keep_dims=True)
        wn = tl.max(_pairs(zero_f + tl.where(d_ok != 0, dw, 0.0)[:, None],
                           TP, NP, BB, BA, D_I, D_L, D_W, D_R, C_I, C_L, C_W, C_R, F_LO, V_LO), axis=0, keep_dims=True)
    else:  # the validity as 0 / 1, never read (uniform marginals are one value per pair)
        wt = (t_code & 1).to(tl.float32)
        wn = (j_code & 1).to(tl.float32)
    return sim, (t_code & 1) != 0, (j_code & 1) != 0, t_code >> 1, j_code >> 1, vb, da, wt, wn


@triton.jit
def _scaling_update(m, log2_m, s, tau, lift, RELAXED: tl.constexpr, INTERPRETED: tl.constexpr):
    # The scaling form's update of one side: m / s, or damped (m / s)^tau * 2^lift, as one
    # exp2 of a log2 (lg2.approx, ex2.approx: two special-function instructions).
    if RELAXED:
        return tl.exp2(tau * (log2_m - _fast_log2(s, INTERPRETED)) + lift)
    else:
        return _fast_div(m, s, INTERPRETED)


@triton.jit
def _any_per_pair(x):
    # (1, 1, BB, BA): whether any entry of the pair's block x (TP or 1, NP or 1, BB, BA) is set.
    x = x.to(tl.int32)
    return tl.max(tl.max(x, axis=0, keep_dims=True), axis=1, keep_dims=True) > 0


@triton.jit
def _solve_pairs(sim, rows, cols, wt, wn, pair_ok, scale2, max_iter, tol, tau_f, tau_d,
                 TP: tl.constexpr, NP: tl.constexpr, BB: tl.constexpr, BA: tl.constexpr,
                 FIXED: tl.constexpr, LOG_DOMAIN: tl.constexpr, WEIGHTED: tl.constexpr, RELAXED: tl.constexpr,
                 SIMS_FROM_K: tl.constexpr, INTERPRETED: tl.constexpr):
    """The Sinkhorn of a tile's pairs (the module doc's forward), shared by the fused forward and
    the two-phase path's kernel (ost_kernels/triton/sinkhorn.py).

    Everything is 4-D, (TP, NP, BB, BA) with size-1 dimensions where a quantity does not vary
    (keep_dims reductions): every tensor then shares the sims' layout, so broadcasting costs
    nothing and no layout conversion runs inside the loops. sim (TP, NP, BB, BA); rows
    (TP, 1, BB, BA), cols (1, NP, BB, BA) the valid frames and descriptors; wt, wn their weights
    (with WEIGHTED); pair_ok (1, 1, BB, BA) the pairs that exist. SIMS_FROM_K: the caller keeps
    no sims and recovers them from K (the fused kernel), so pairs above SCALING_MAX_EPS run in
    the log domain and L = log2(K) is returned. Returns plan (TP, NP, BB, BA), L, the base-2
    potentials a (TP, 1, BB, BA) and b (1, NP, BB, BA) relative to hi (f = a eps ln 2 + 1 - hi,
    g = b eps ln 2), hi (1, 1, BB, BA), iterations and errors (1, 1, BB, BA), and the scaling
    form's X (K for safe pairs), r (TP, 1, BB, BA), c (1, NP, BB, BA) and which pairs are safe
    (a caller that knows every pair is safe may use them instead of the plan)."""
    valid = rows & cols
    if WEIGHTED:  # mu = w / sum w over the valid entries: (TP, 1, BB, BA), nu (1, NP, BB, BA)
        mu = wt / tl.maximum(tl.sum(wt, axis=0, keep_dims=True), 1e-30)
        nu = wn / tl.maximum(tl.sum(wn, axis=1, keep_dims=True), 1e-30)
    else:  # uniform: one value per pair, (1, 1, BB, BA)
        mu = 1.0 / tl.maximum(tl.sum(rows.to(tl.float32), axis=0, keep_dims=True), 1.0)
        nu = 1.0 / tl.maximum(tl.sum(cols.to(tl.float32), axis=1, keep_dims=True), 1.0)
    log2_mu = tl.log2(mu)  # -inf where masked (every use is behind a validity select)
    log2_nu = tl.log2(nu)

    # The pair's range of sims decides its form. Where every pair is safe and the sims need
    # not come back from K (LOG_DOMAIN and SIMS_FROM_K off: cosines, eps >= ALWAYS_SAFE_EPS),
    # the shift is the cosines' bound 1 instead of each pair's largest sim: K = exp2((sim - 1)
    # scale2) spans the same [2^-92, 1], one multiply-add an entry, no reduction.
    if LOG_DOMAIN or SIMS_FROM_K:
        hi = tl.max(tl.max(tl.where(valid, sim, float("-inf")), axis=0, keep_dims=True), axis=1, keep_dims=True)
        has = hi > float("-inf")
        hi = tl.where(has, hi, 0.0)                                  # (1, 1, BB, BA)
        z = tl.where(valid, (sim - hi) * scale2, float("-inf"))
    else:
        hi = tl.full((1, 1, BB, BA), 1.0, tl.float32)
        z = tl.where(valid, sim * scale2 - scale2, float("-inf"))
    if LOG_DOMAIN:
        lo = tl.min(tl.min(tl.where(valid, sim, float("inf")), axis=0, keep_dims=True), axis=1, keep_dims=True)
        lo = tl.where(has, lo, 0.0)
    # A relaxed row update carries the factor 2^lift of the shift hi (a = log2 r with
    # r = exp((f + hi - 1) / eps)); lift = 0 for an exact frame side.
    lift = (1.0 - tau_f) * (hi - 1.0) * scale2                       # (1, 1, BB, BA)
    if LOG_DOMAIN:
        safe = (hi - lo) * scale2 <= SAFE_RANGE2
        if SIMS_FROM_K:
            safe = safe & (scale2 >= MIN_SCALE2)
        if RELAXED:
            safe = safe & (tl.abs(lift) <= SAFE_RANGE2)
        X = tl.where(safe, tl.exp2(z), z)
    else:  # the launcher knows every pair is safe (cosines, and eps large enough)
        safe = tl.full((1, 1, BB, BA), True, tl.int1)
        X = tl.exp2(z)

    iters = tl.zeros((1, 1, BB, BA), dtype=tl.int32)
    err = tl.zeros((1, 1, BB, BA), dtype=tl.float32)

    # Scaling form. Columns are exact after each iteration (unless relaxed); the row sums
    # r * (K c) come from the K c that the next row update needs anyway. With a relaxed side
    # the stop rule compares them with the previous iteration's (from f = g = 0: the first
    # r is 2^((hi - 1) * scale2)), not with mu.
    if RELAXED:
        r = tl.where(rows, tl.exp2((hi - 1.0) * scale2), 0.0)       # (TP, 1, BB, BA)
    else:
        r = tl.zeros((TP, 1, BB, BA), dtype=tl.float32)
    c = tl.full((1, NP, BB, BA), 1.0, dtype=tl.float32)
    kc = tl.sum(X * c, axis=1, keep_dims=True)                       # (TP, 1, BB, BA)
    # The stop rule's target row marginal: mu, or with a relaxed side the previous iteration's
    # (a loop-carried value must keep its shape: (TP, 1, BB, BA) from the start).
    if RELAXED:
        target = r * kc
    else:
        target = mu
    if FIXED:
        # Every pair of the tile is iterated (log-domain pairs too: their r, c are discarded).
        for _ in range(max_iter):
            if RELAXED:
                target = r * kc
            r = tl.where(rows, _scaling_update(mu, log2_mu, kc, tau_f, lift, RELAXED, INTERPRETED), 0.0)
            ktr = tl.sum(X * r, axis=0, keep_dims=True)              # (1, NP, BB, BA)
            c = tl.where(cols, _scaling_update(nu, log2_nu, ktr, tau_d, 0.0, RELAXED, INTERPRETED), 1.0)
            kc = tl.sum(X * c, axis=1, keep_dims=True)
        iters += max_iter
        err = tl.sum(tl.where(rows, tl.abs(r * kc - target), 0.0), axis=0, keep_dims=True)
    else:
        active = pair_ok & safe
        it = 0
        while (it < max_iter) & (_any(active)):
            if RELAXED:
                target = r * kc
            r_new = tl.where(rows, _scaling_update(mu, log2_mu, kc, tau_f, lift, RELAXED, INTERPRETED), 0.0)
            ktr = tl.sum(X * r_new, axis=0, keep_dims=True)          # (1, NP, BB, BA)
            c_new = tl.where(cols, _scaling_update(nu, log2_nu, ktr, tau_d, 0.0, RELAXED, INTERPRETED), 1.0)
            r = tl.where(active, r_new, r)
            c = tl.where(active, c_new, c)
            iters += active.to(tl.int32)
            kc = tl.sum(X * c, axis=1, keep_dims=True)
            e = tl.sum(tl.where(rows, tl.abs(r * kc - target), 0.0), axis=0, keep_dims=True)
            err = tl.where(active, e, err)
            # NaN errors compare False, so a poisoned pair stops (as backend "torch").
            active = active & ((e > tol) | (tol <= 0.0))
            it += 1

    if RELAXED:
        # A relaxed side loses the gauge freedom that keeps the exact iteration's r and c in
        # range: the other side's scalings then carry the whole cost, and may leave float32's
        # range (eps = 0.01). Such a pair is solved again in the log domain, from its own data
        # only, as in the CPU kernel; its K turns back into exponents (2^-92 <= K <= 1: exact
        # to rounding).
        r_out = rows & ((r < RANGE_LO) | (r > RANGE_HI) | (r != r))
        c_out = cols & ((c < RANGE_LO) | (c > RANGE_HI) | (c != c))
        redo = pair_ok & safe & (_any_per_pair(r_out) | _any_per_pair(c_out))
        safe = safe & (redo == 0)
        X = tl.where(redo, tl.log2(X), X)  # log2(0) = -inf where not valid, as z
        if not FIXED:  # the log-domain loop counts its own iterations (FIXED: max_iter either way)
            iters = tl.where(redo, 0, iters)

    # Log domain, only for the tile's unsafe pairs.
    if RELAXED:
        a = tl.where(rows, (hi - 1.0) * scale2, 0.0)                 # f = 0
    else:
        a = tl.zeros((TP, 1, BB, BA), dtype=tl.float32)
    b = tl.zeros((1, NP, BB, BA), dtype=tl.float32)
    any_log = tl.constexpr(False)
    if LOG_DOMAIN:
        any_log = _any(pair_ok & (safe == 0))
    if any_log:
        row_lse = _lse2(X + b, 1, INTERPRETED)                       # (TP, 1, BB, BA)
        if FIXED:
            for _ in range(max_iter):
                if RELAXED:
                    target = tl.where(rows, tl.exp2(a + row_lse), 0.0)
                    a = tl.where(rows, tau_f * (log2_mu - row_lse) + lift, 0.0)
                    b = tl.where(cols, tau_d * (log2_nu - _lse2(X + a, 0, INTERPRETED)), 0.0)
                else:
                    a = tl.where(rows, log2_mu - row_lse, 0.0)
                    b = tl.where(cols, log2_nu - _lse2(X + a, 0, INTERPRETED), 0.0)
                row_lse = _lse2(X + b, 1, INTERPRETED)
            e = tl.sum(tl.where(rows, tl.abs(tl.exp2(a + row_lse) - target), 0.0), axis=0, keep_dims=True)
            err = tl.where(safe, err, e)
        else:
            active = pair_ok & (safe == 0)
            it = 0
            while (it < max_iter) & (_any(active)):
                if RELAXED:
                    target = tl.where(rows, tl.exp2(a + row_lse), 0.0)
                    a_new = tl.where(rows, tau_f * (log2_mu - row_lse) + lift, 0.0)
                    b_new = tl.where(cols, tau_d * (log2_nu - _lse2(X + a_new, 0, INTERPRETED)), 0.0)
                else:
                    a_new = tl.where(rows, log2_mu - row_lse, 0.0)
                    b_new = tl.where(cols, log2_nu - _lse2(X + a_new, 0, INTERPRETED), 0.0)
                a = tl.where(active, a_new, a)
                b = tl.where(active, b_new, b)
                iters += active.to(tl.int32)
                row_lse = _lse2(X + b, 1, INTERPRETED)
                e = tl.sum(tl.where(rows, tl.abs(tl.exp2(a + row_lse) - target), 0.0), axis=0, keep_dims=True)
                err = tl.where(active, e, err)
                active = active & ((e > tol) | (tol <= 0.0))
                it += 1

    # Plans and potentials. A safe pair's plan is r K c whether or not its tile holds
    # log-domain pairs. With SIMS_FROM_K, L = log2(K), the exponent z of safe pairs (the caller
    # recovers sims from it); otherwise L is X and carries nothing for safe pairs.
    # The potentials come from lg2.approx (~2^-22 relative): they serve outputs and the
    # backward's plans, whose float32 tolerance that meets (a GPU run confirms it; the
    # interpreter's log2 is exact).
    if any_log:
        if SIMS_FROM_K:
            L = tl.where(safe, _fast_log2(X, INTERPRETED), X)
        else:
            L = X
        a = tl.where(safe, _fast_log2(r, INTERPRETED), a)
        b = tl.where(safe, _fast_log2(c, INTERPRETED), b)
        plan = tl.where(safe, r * X * c, tl.exp2(L + a + b))
    else:
        if SIMS_FROM_K:
            L = _fast_log2(X, INTERPRETED)
        else:
            L = X
        a = _fast_log2(r, INTERPRETED)
        b = _fast_log2(c, INTERPRETED)
        plan = r * X * c
    return plan, L, a, b, hi, iters, err, X, r, c, safe


@triton.jit
def od_forward_kernel(
    V, D, VS, DS, FM, DM, FW, DW, SCORES, F, G, ITERS, ERR,
    B, A, T, N, d,
    svb, svt, svd, sda, sdn, sdd,
    scale2, eps_ln2, max_iter, tol, tau_f, tau_d,
    B_KEY, A_KEY,  # size buckets for the autotuner's key; not read
    EVEN_K: tl.constexpr, INTERPRETED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    FIXED: tl.constexpr, LOG_DOMAIN: tl.constexpr, WEIGHTED: tl.constexpr, RELAXED: tl.constexpr,
    TP: tl.constexpr, NP: tl.constexpr, BB: tl.constexpr, BA: tl.constexpr, BD: tl.constexpr,
    NW: tl.constexpr,  # the launch's num_warps: the accumulator layout the pairs are mapped onto
    POTENTIALS: tl.constexpr = True,  # False: f and g are not written (scores only)
):
    # Relaxed pairs may fall back to the log domain after their scaling-form solve.
    tl.static_assert(LOG_DOMAIN or not RELAXED)
    # Class tiles on grid axis 0 (up to 2^31 - 1 programs), video tiles on axis 1.
    pid_a = tl.program_id(0)
    pid_b = tl.program_id(1)
    sim, rows, cols, ti, nj, pb, pa, wt, wn = _tile_pairs(V, D, VS, DS, FM, DM, FW, DW, pid_b, pid_a, B, A, T, N, d,
                                                          svb, svt, svd, sda, sdn, sdd,
                                                          BD, EVEN_K, INTERPRETED, INPUT_PRECISION, WEIGHTED,
                                                          TP, NP, BB, BA, NW)
    pair_ok = (pb < B) & (pa < A)                                    # (1, 1, BB, BA)
    valid = rows & cols
    plan, L, a, b, hi, iters, err, _, _, _, _ = _solve_pairs(sim, rows, cols, wt, wn, pair_ok, scale2, max_iter, tol,
                                                             tau_f, tau_d, TP, NP, BB, BA, FIXED, LOG_DOMAIN, WEIGHTED,
                                                             RELAXED, True, INTERPRETED)
    # 1 / scale2 = eps * ln 2: the sim is hi + L * eps_ln2 (a multiply, not a division).
    scores = tl.sum(tl.sum(tl.where(valid, plan * (hi + L * eps_ln2), 0.0), axis=0, keep_dims=True), axis=1,
                    keep_dims=True)

    pair_idx = pb.to(tl.int64) * A + pa                              # (1, 1, BB, BA)
    tl.store(SCORES + pair_idx, scores, mask=pair_ok)
    tl.store(ITERS + pair_idx, iters, mask=pair_ok)
    tl.store(ERR + pair_idx, err, mask=pair_ok)
    f = tl.where(rows, a * eps_ln2 + (1.0 - hi), 0.0)
    g = tl.where(cols, b * eps_ln2, 0.0)
    if POTENTIALS:
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
    # Rows are the tile's frames (row = video * TP + frame), columns its descriptors
    # (column = class * NP + descriptor): W's own layout, so the stores are plain.
    pid_a = tl.program_id(0)
    pid_b = tl.program_id(1)
    rows = tl.arange(0, BB * TP)
    cols = tl.arange(0, BA * NP)
    vb = pid_b * BB + rows // TP
    vt = rows % TP
    da = a0 + pid_a * BA + cols // NP
    dj = cols % NP
    row_in = (vb < B) & (vt < T)
    col_in = (da < a0 + na) & (dj < N)
    vrow = vb.to(tl.int64) * T + vt
    drow = da.to(tl.int64) * N + dj
    row_ok = row_in & (tl.load(FM + vrow, mask=row_in, other=0) != 0)
    col_ok = col_in & (tl.load(DM + drow, mask=col_in, other=0) != 0)
    acc = _dot_rows(_row_base(V, vb, B, vt, T, svb, svt), svd, _row_base(D, da, a0 + na, dj, N, sda, sdn), sdd, d,
                    BB * TP, BA * NP, BD, EVEN_K, INTERPRETED, INPUT_PRECISION)
    vs = tl.load(VS + vrow, mask=row_ok, other=0.0)
    ds = tl.load(DS + drow, mask=col_ok, other=0.0)
    sim = acc * vs[:, None] * ds[None, :]
    pair = vb.to(tl.int64)[:, None] * A + da[None, :]                # (rows, cols)
    ok = row_ok[:, None] & col_ok[None, :]
    f = tl.load(F + pair * T + vt[:, None], mask=ok, other=0.0)
    g = tl.load(G + pair * N + dj[None, :], mask=ok, other=0.0)
    go = tl.load(GO + pair, mask=ok, other=0.0)
    w = tl.where(ok, go * tl.exp2((sim - 1.0 + f + g) * scale2), 0.0)
    col = (da - a0).to(tl.int64) * N + dj
    in_range = row_in[:, None] & col_in[None, :]
    tl.store(W + vrow[:, None] * swr + col[None, :], w.to(W.dtype.element_ty), mask=in_range)
