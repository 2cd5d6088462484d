"""Triton kernels of the two-phase path (backend "triton"): the Sinkhorn over sims already in
memory, and the backward's weights from them.

Phase one is not here: the launcher (ost_kernels/triton/ops.py) computes a chunk of classes'
sims with one cuBLAS GEMM of the raw inputs, float32 output, S (B * T, na * N) row-major:
S[b * T + i, a * N + j] = video[b, i] . desc[a0 + a, j]. The chunk is sized to stay in L2,
so the kernel below reads it from there, twice per pair (to solve, and to score).

Layout. A program takes one video and BA classes of the chunk. Its sims are loaded as a 5-D
block (T_HI, NP, 1, BA, T_LO) (or (T_LO, ..., T_HI), by the installed Triton: _pairs), frames
split as i = t_lo * T_HI + t_hi: the descriptors of a row are contiguous in S, so a thread
loads a whole row (NP <= 4 floats in one vector), and the dimension order puts the next lanes
on T_LO and the rest on the classes. A pair's block then
lies in T_LO lanes (2 at the key shape, ops.program_tile), TP / T_LO whole rows a lane: row
sums (over descriptors) are sums in registers and column sums (over frames) take log2(T_LO)
shuffle levels, and a warp's load reads T_LO rows x (32 / T_LO) classes of contiguous bytes.
The block is permuted and reshaped (register renaming only) to the (TP, NP, 1, BA) layout that
ost_kernels/triton/kernels.py's _solve_pairs takes, which runs the Sinkhorn with the fused
forward's semantics (scaling form where a pair's range allows, log domain otherwise, weights,
relaxed marginals with their per-pair fallback, per-pair stop, FIXED and LOG_DOMAIN
specializations). Frames and classes past the ends are read at the last real one (no
predicates on the loads); MASKED reads the masks, DENSE (no masks, weights or padding) lets
every validity test fold away.

Unlike the fused forward, the sims stay in memory: the score sum_ij P_ij sim_ij reads them
again instead of recovering them from K (exact at any eps, and no log2 per entry).
"""
import triton
import triton.language as tl

from .kernels import _solve_pairs

@triton.jit
def _chunk_pairs(S, ld, VS, DS, FM, DM, FW, DW, b, a_first, na, a_base, T,
                 N: tl.constexpr, MASKED: tl.constexpr, DENSE: tl.constexpr, WEIGHTED: tl.constexpr,
                 TP: tl.constexpr, NP: tl.constexpr, BA: tl.constexpr, T_LO: tl.constexpr,
                 T_LO_FIRST: tl.constexpr):
    """A program's pairs: video b with the chunk's classes a_first .. a_first + BA - 1 (global
    class a_base + a), each a (TP, NP) block:

        sim (TP, NP, 1, BA)    the cosines (S times the inverse norms), 0 where not valid
        rows (TP, 1, 1, BA), cols (1, NP, 1, BA)   valid frames / descriptors (in range,
                               unmasked, with WEIGHTED a weight > 0)
        wt, wn                 with WEIGHTED their weights (0 where not valid); else the validity
        pair_ok (1, 1, 1, BA)  the pairs that exist
        ti (TP, 1, 1, BA), nj (1, NP, 1, BA), ca (1, 1, 1, BA)   frame, descriptor and
                               (global) class numbers, for the stores

    Every per-frame or per-descriptor quantity is broadcast to the whole block before it is
    renamed to 4-D and reduced, as the fused kernel does: it then shares the sims' layout, and
    the loops run without layout conversions."""
    T_HI: tl.constexpr = TP // T_LO
    if T_LO_FIRST:  # the block is (T_LO, NP, 1, BA, T_HI): see _pairs
        th = tl.arange(0, T_HI)[None, None, None, None, :]
        tlo = tl.arange(0, T_LO)[:, None, None, None, None]
    else:
        th = tl.arange(0, T_HI)[:, None, None, None, None]
        tlo = tl.arange(0, T_LO)[None, None, None, None, :]
    n = tl.arange(0, NP)[None, :, None, None, None]
    a = a_first + tl.arange(0, BA)[None, None, None, :, None]
    t = tlo * T_HI + th                                             # (T_HI, 1, 1, 1, T_LO)
    a_in = a < na
    if DENSE:  # T == TP: every frame is there
        t_in = t < TP
    else:
        t_in = t < T
    # Per-program base pointers (int64 once), int32 offsets per entry: t * ld + a * N + n is
    # below one chunk's T * na * N entries.
    S = S + b.to(tl.int64) * T * ld
    VS = VS + b.to(tl.int64) * T
    FM = FM + b.to(tl.int64) * T
    FW = FW + b.to(tl.int64) * T
    DS = DS + a_base.to(tl.int64) * N
    DM = DM + a_base.to(tl.int64) * N
    DW = DW + a_base.to(tl.int64) * N
    # Frames and classes past the ends are read at the last real one instead of masked, so the
    # sims' and norms' loads carry no predicates (what they read there is never stored).
    tc = tl.minimum(t, T - 1)
    ac = tl.minimum(a, na - 1)
    # Valid frames and descriptors. Without masks, weights or padding every entry of an existing
    # pair is valid, and the constants let the compiler drop every selection.
    if DENSE:
        v_ok = t_in
        d_ok = a_in
    else:
        v_ok = t_in
        d_ok = a_in & (n < N)
        if MASKED:
            v_ok = v_ok & (tl.load(FM + tc) != 0)
            d_ok = d_ok & (tl.load(DM + ac * N + n, mask=n < N, other=0) != 0)
    if WEIGHTED:  # a weight of 0 removes its entry, as a mask does
        vw = tl.load(FW + tc, mask=v_ok, other=0.0)
        dw = tl.load(DW + ac * N + n, mask=d_ok, other=0.0)
        v_ok = v_ok & (vw > 0.0)
        d_ok = d_ok & (dw > 0.0)
    vs = tl.load(VS + tc)
    # Where N is a power of two a thread reads its row's descriptors in one unmasked vector;
    # else the padding is masked. Entries that are not valid become 0 afterwards.
    if N == NP:
        # Loaded for every lane of the pair (the T_LO axis): it then has the sims' layout and
        # needs no conversion (the lanes of a pair read the same 16 bytes).
        ds = tl.load(DS + ac * N + n + 0 * tlo)
        sim = tl.load(S + tc * ld + ac * N + n) * ds
    else:
        ds = tl.load(DS + ac * N + n, mask=n < N, other=0.0)
        sim = tl.load(S + tc * ld + ac * N + n, mask=n < N, other=0.0) * ds
    sim = sim * vs
    if not DENSE:
        sim = tl.where(v_ok & d_ok, sim, 0.0)
    shape: tl.constexpr = (T_LO, NP, 1, BA, T_HI) if T_LO_FIRST else (T_HI, NP, 1, BA, T_LO)
    zero = tl.zeros(shape, dtype=tl.int32)
    if DENSE:
        valid_rows = tl.full((TP, 1, 1, BA), 1, tl.int1)
        cols = tl.full((1, NP, 1, BA), 1, tl.int1)
    else:
        valid_rows = tl.max(_pairs(zero + v_ok.to(tl.int32), TP, T_LO_FIRST), axis=1, keep_dims=True) != 0
        cols = tl.max(_pairs(zero + d_ok.to(tl.int32), TP, T_LO_FIRST), axis=0, keep_dims=True) != 0
    if WEIGHTED:
        zero_f = tl.zeros(shape, dtype=tl.float32)
        wt = tl.max(_pairs(zero_f + tl.where(v_ok, vw, 0.0), TP, T_LO_FIRST), axis=1, keep_dims=True)
        wn = tl.max(_pairs(zero_f + tl.where(d_ok, dw, 0.0), TP, T_LO_FIRST), axis=0, keep_dims=True)
    else:
        wt = valid_rows.to(tl.float32)
        wn = cols.to(tl.float32)
    return _pairs(sim, TP, T_LO_FIRST), valid_rows, cols, wt, wn


@triton.jit
def _pairs(x, TP: tl.constexpr, T_LO_FIRST: tl.constexpr):
    """The 5-D block -> (TP, NP, 1, BA), frame t_lo * T_HI + t_hi: register renaming only.

    The block's dimension order is what places the lanes: Triton gives a load's lanes to the
    contiguous dimension (NP, in a vector) and then, among dimensions of no contiguity, to the
    last ones first up to Triton 3.7 ... 3.8 (T_LO last: (T_HI, NP, 1, BA, T_LO)) but to the
    first ones first in Triton 3.6 (T_LO first: (T_LO, NP, 1, BA, T_HI)); the launcher picks
    T_LO_FIRST from the installed Triton (ops.T_LO_FIRST)."""
    if T_LO_FIRST:
        x = tl.permute(x, (0, 4, 1, 2, 3))
    else:
        x = tl.permute(x, (4, 0, 1, 2, 3))
    return tl.reshape(x, (TP, x.shape[2], x.shape[3], x.shape[4]))


@triton.jit
def od_sinkhorn_kernel(
    S, ld, VS, DS, FM, DM, FW, DW, SCORES, F, G, ITERS, ERR,
    A, T, na, a_base,
    scale2, eps_ln2, max_iter, tol, tau_f, tau_d,
    N: tl.constexpr, INTERPRETED: tl.constexpr, FIXED: tl.constexpr, LOG_DOMAIN: tl.constexpr,
    WEIGHTED: tl.constexpr, RELAXED: tl.constexpr, POTENTIALS: tl.constexpr, MASKED: tl.constexpr,
    DENSE: tl.constexpr,
    TP: tl.constexpr, NP: tl.constexpr, BA: tl.constexpr, T_LO: tl.constexpr, T_LO_FIRST: tl.constexpr,
):
    """Scores, potentials (with POTENTIALS), iterations and errors of the pairs (b, a_base + a),
    a < na, of one chunk of sims S (B * T, ld); one program per video and BA classes (grid
    (B, classes / BA): videos on axis 0, up to 2^31 - 1). MASKED: frame / descriptor masks are
    read (FM, DM); DENSE: no masks, weights or padding (T and N powers of two), every entry of
    an existing pair valid."""
    tl.static_assert(LOG_DOMAIN or not RELAXED)
    b = tl.program_id(0)
    a_first = tl.program_id(1) * BA
    sim, rows, cols, wt, wn = _chunk_pairs(S, ld, VS, DS, FM, DM, FW, DW, b, a_first, na, a_base, T, N, MASKED,
                                           DENSE, WEIGHTED, TP, NP, BA, T_LO, T_LO_FIRST)
    # Frame, descriptor and chunk class numbers of the stores (their own layout: the stores
    # convert the few values they write, outside the loops).
    ti = tl.arange(0, TP)[:, None, None, None]
    nj = tl.arange(0, NP)[None, :, None, None]
    ac = a_first + tl.arange(0, BA)[None, None, None, :]
    pair_ok = ac < na
    valid = rows & cols
    plan, L, a, bp, hi, iters, err, X, r, c, safe = _solve_pairs(sim, rows, cols, wt, wn, pair_ok, scale2, max_iter,
                                                                 tol, tau_f, tau_d, TP, NP, 1, BA, FIXED, LOG_DOMAIN,
                                                                 WEIGHTED, RELAXED, False, INTERPRETED)
    # The sims themselves, not recovered from K: exact at any eps, no log2 per entry. Where
    # every pair is safe, sum_i r_i sum_j (K_ij sim_ij) c_j: two operations an entry, not three.
    if LOG_DOMAIN:
        scores = tl.sum(tl.sum(tl.where(valid, plan * sim, 0.0), axis=0, keep_dims=True), axis=1, keep_dims=True)
    else:
        scores = tl.sum(r * tl.sum(tl.where(valid, X * sim, 0.0) * c, axis=1, keep_dims=True), axis=0,
                        keep_dims=True)
    first = b.to(tl.int64) * A + a_base                             # the chunk's first pair of video b
    tl.store(SCORES + first + ac, scores, mask=pair_ok)
    tl.store(ITERS + first + ac, iters, mask=pair_ok)
    tl.store(ERR + first + ac, err, mask=pair_ok)
    if POTENTIALS:
        tl.store(F + first * T + ac * T + ti, tl.where(rows, a * eps_ln2 + (1.0 - hi), 0.0), mask=pair_ok & (ti < T))
        tl.store(G + first * N + ac * N + nj, tl.where(cols, bp * eps_ln2, 0.0), mask=pair_ok & (nj < N))


@triton.jit
def od_chunk_weights_kernel(
    S, ld, VS, DS, FM, DM, GO, F, G, W,
    A, T, na, a_base, scale2,
    N: tl.constexpr, TP: tl.constexpr, BC: tl.constexpr, MASKED: tl.constexpr,
):
    """The backward's weights for one chunk of sims S (B * T, ld = na * N): W[b * T + i,
    a * N + j] = grad_scores[b, a_base + a] * P_ij of that pair, 0 where masked, written in W's
    dtype (W is (B * T, na * N), contiguous). P comes from the saved potentials f, g (natural
    units) and the sims as the forward saw them: exp2((sim - 1 + f_i + g_j) * log2(e) / eps).
    A program takes one video's TP frames x BC columns (grid: videos, column blocks), so the
    video is one number and the rows need no division."""
    b = tl.program_id(0)
    i = tl.arange(0, TP)[:, None]                                   # frame
    c = tl.program_id(1) * BC + tl.arange(0, BC)[None, :]           # a * N + j in the chunk
    a = c // N
    j = c - a * N
    ok = (i < T) & (c < na * N)
    if MASKED:
        ok = ok & (tl.load(FM + b.to(tl.int64) * T + i, mask=i < T, other=0) != 0)
        ok = ok & (tl.load(DM + a_base.to(tl.int64) * N + c, mask=c < na * N, other=0) != 0)
    rows = b.to(tl.int64) * T + i
    pair = b.to(tl.int64) * A + a_base + a                          # (1, BC)
    sim = (tl.load(S + rows * ld + c, mask=ok, other=0.0) * tl.load(VS + rows, mask=i < T, other=0.0)
           * tl.load(DS + a_base.to(tl.int64) * N + c, mask=c < na * N, other=0.0))
    f = tl.load(F + pair * T + i, mask=ok, other=0.0)
    g = tl.load(G + pair * N + j, mask=c < na * N, other=0.0)
    go = tl.load(GO + pair, mask=c < na * N, other=0.0)
    w = tl.where(ok, go * tl.exp2((sim - 1.0 + f + g) * scale2), 0.0)
    tl.store(W + rows * (na * N) + c, w.to(W.dtype.element_ty), mask=(i < T) & (c < na * N))
