"""Triton kernels of the OD solver: a fused forward kernel and one backward kernel (launched
once per side: the videos' gradients and the classes').

Layout shared by both: a program works on a tile of BB videos x BA classes. The tile's
frames form BB * TP matmul rows (row r = video r // TP, frame r % TP) and its descriptors
BA * NP columns (column c = class c // NP, descriptor c % NP), with T and N padded to the
powers of two TP and NP and the padding masked. One tl.dot gives the (BB * TP, BA * NP)
sims, which are viewed as (BB, BA, TP, NP): one T x N block per (video, class) pair, so the
Sinkhorn row and column log-sum-exps are reductions over axes 3 and 2 of that block.

Potentials are kept in base 2 inside the kernels (exp2 / log2 with log2(e) folded into the
scale): with Z2 = (sim - 1) * log2(e) / eps, alpha2 = f * log2(e) / eps, beta2 likewise,
P = exp2(Z2 + alpha2 + beta2).
"""
import triton
import triton.language as tl

from .. import constants

# Module-level values a @triton.jit function reads must be tl.constexpr: a plain float is
# refused by Triton's code generator (the interpreter would not notice).
LN2 = tl.constexpr(constants.LN2)
NORM_EPS = tl.constexpr(constants.NORM_EPS)


@triton.jit
def _lse2(x, axis: tl.constexpr):
    # log2 sum exp2 along `axis`; -inf where every entry is -inf (a masked row / column).
    m = tl.max(x, axis=axis)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    s = tl.sum(tl.exp2(x - tl.expand_dims(m_safe, axis)), axis=axis)
    return m_safe + tl.log2(s)


@triton.jit
def _tile_index(pid_b, pid_a, B, T, A, N, FM, DM, HAS_FM: tl.constexpr, HAS_DM: tl.constexpr,
                BB: tl.constexpr, BA: tl.constexpr, TP: tl.constexpr, NP: tl.constexpr):
    """Row / column coordinates of the tile and which of them are valid frames / descriptors."""
    rows = tl.arange(0, BB * TP)
    cols = tl.arange(0, BA * NP)
    vb = pid_b * BB + rows // TP
    vt = rows % TP
    da = pid_a * BA + cols // NP
    dj = cols % NP
    row_ok = (vb < B) & (vt < T)
    col_ok = (da < A) & (dj < N)
    if HAS_FM:
        row_ok = row_ok & (tl.load(FM + vb * T + vt, mask=row_ok, other=0) != 0)
    if HAS_DM:
        col_ok = col_ok & (tl.load(DM + da * N + dj, mask=col_ok, other=0) != 0)
    return vb, vt, da, dj, row_ok, col_ok


@triton.jit
def _tile_sims(V, D, vb, vt, da, dj, row_ok, col_ok, d, svb, svt, svd, sda, sdn, sdd,
               NORMALIZE: tl.constexpr, BD: tl.constexpr, UPCAST: tl.constexpr,
               INPUT_PRECISION: tl.constexpr, BB: tl.constexpr, BA: tl.constexpr, TP: tl.constexpr,
               NP: tl.constexpr):
    """(BB * TP, BA * NP) sims of the tile (0 where masked), and the row / column inverse norms."""
    acc = tl.zeros((BB * TP, BA * NP), dtype=tl.float32)
    vsq = tl.zeros((BB * TP,), dtype=tl.float32)
    dsq = tl.zeros((BA * NP,), dtype=tl.float32)
    for k0 in range(0, d, BD):
        kk = k0 + tl.arange(0, BD)
        kmask = kk < d
        v = tl.load(V + vb[:, None] * svb + vt[:, None] * svt + kk[None, :] * svd,
                    mask=row_ok[:, None] & kmask[None, :], other=0.0)
        w = tl.load(D + da[:, None] * sda + dj[:, None] * sdn + kk[None, :] * sdd,
                    mask=col_ok[:, None] & kmask[None, :], other=0.0)
        vf = v.to(tl.float32)
        wf = w.to(tl.float32)
        if UPCAST:
            acc = tl.dot(vf, tl.trans(wf), acc, input_precision=INPUT_PRECISION)
        else:
            acc = tl.dot(v, tl.trans(w), acc, input_precision=INPUT_PRECISION)
        vsq += tl.sum(vf * vf, axis=1)
        dsq += tl.sum(wf * wf, axis=1)
    if NORMALIZE:
        inv_v = 1.0 / tl.maximum(tl.sqrt(vsq), NORM_EPS)
        inv_d = 1.0 / tl.maximum(tl.sqrt(dsq), NORM_EPS)
    else:
        inv_v = tl.full((BB * TP,), 1.0, dtype=tl.float32)
        inv_d = tl.full((BA * NP,), 1.0, dtype=tl.float32)
    return acc * inv_v[:, None] * inv_d[None, :], inv_v, inv_d


@triton.jit
def _pair_blocks(x, BB: tl.constexpr, BA: tl.constexpr, TP: tl.constexpr, NP: tl.constexpr):
    """(BB * TP, BA * NP) -> (BB, BA, TP, NP)."""
    return tl.permute(tl.reshape(x, (BB, TP, BA, NP)), (0, 2, 1, 3))


@triton.jit
def od_forward_kernel(
    V, D, FM, DM, SCORES, F, G, ITERS, ERR,
    B, A, T, N, d,
    svb, svt, svd, sda, sdn, sdd,
    scale2, eps, max_iter, tol,
    HAS_FM: tl.constexpr, HAS_DM: tl.constexpr, NORMALIZE: tl.constexpr,
    UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    TP: tl.constexpr, NP: tl.constexpr, BB: tl.constexpr, BA: tl.constexpr, BD: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_a = tl.program_id(1)
    vb, vt, da, dj, row_ok, col_ok = _tile_index(pid_b, pid_a, B, T, A, N, FM, DM, HAS_FM, HAS_DM, BB, BA, TP, NP)
    sim2d, _, _ = _tile_sims(V, D, vb, vt, da, dj, row_ok, col_ok, d, svb, svt, svd, sda, sdn, sdd,
                             NORMALIZE, BD, UPCAST, INPUT_PRECISION, BB, BA, TP, NP)
    sim = _pair_blocks(sim2d, BB, BA, TP, NP)                       # (BB, BA, TP, NP)
    rows3 = tl.reshape(row_ok, (BB, TP))[:, None, :]                # (BB, 1, TP)
    cols3 = tl.reshape(col_ok, (BA, NP))[None, :, :]                # (1, BA, NP)
    valid = rows3[:, :, :, None] & cols3[:, :, None, :]             # (BB, BA, TP, NP)
    z = tl.where(valid, (sim - 1.0) * scale2, float("-inf"))

    # Uniform marginals over the valid frames / descriptors, in log2.
    t_valid = tl.sum(rows3.to(tl.float32), axis=2)                  # (BB, 1)
    n_valid = tl.sum(cols3.to(tl.float32), axis=2)                  # (1, BA)
    log2_mu = -tl.log2(tl.maximum(t_valid, 1.0))[:, :, None]        # (BB, 1, 1)
    log2_nu = -tl.log2(tl.maximum(n_valid, 1.0))[:, :, None]        # (1, BA, 1)
    mu = tl.where(rows3, tl.exp2(log2_mu), 0.0)                     # (BB, 1, TP)

    pb = pid_b * BB + tl.arange(0, BB)
    pa = pid_a * BA + tl.arange(0, BA)
    pair_ok = (pb < B)[:, None] & (pa < A)[None, :]                 # (BB, BA)
    pb = pb.to(tl.int64)  # B * A * T can pass 2^31 on a large GPU
    alpha = tl.zeros((BB, BA, TP), dtype=tl.float32)
    beta = tl.zeros((BB, BA, NP), dtype=tl.float32)
    iters = tl.zeros((BB, BA), dtype=tl.int32)
    err = tl.zeros((BB, BA), dtype=tl.float32)
    active = pair_ok
    row_lse = _lse2(z + beta[:, :, None, :], 3)                      # (BB, BA, TP)
    it = 0
    while (it < max_iter) & (tl.max(active.to(tl.int32)) > 0):
        alpha_new = tl.where(rows3, log2_mu - row_lse, 0.0)
        col_lse = _lse2(z + alpha_new[:, :, :, None], 2)             # (BB, BA, NP)
        beta_new = tl.where(cols3, log2_nu - col_lse, 0.0)
        # Pairs that met the stopping rule keep their potentials (frozen).
        alpha = tl.where(active[:, :, None], alpha_new, alpha)
        beta = tl.where(active[:, :, None], beta_new, beta)
        iters += active.to(tl.int32)
        # Columns are exact now; the row sums come from the LSE the next row update needs.
        row_lse = _lse2(z + beta[:, :, None, :], 3)
        row_sum = tl.where(rows3, tl.exp2(alpha + row_lse), 0.0)
        e = tl.sum(tl.abs(row_sum - mu), axis=2)
        err = tl.where(active, e, err)
        # NaN errors compare False, so a poisoned pair stops (as backend "torch").
        active = active & ((e > tol) | (tol <= 0.0))
        it += 1

    plan = tl.exp2(z + alpha[:, :, :, None] + beta[:, :, None, :])
    scores = tl.sum(tl.sum(plan * sim, axis=3), axis=2)
    pair_idx = pb[:, None] * A + pa[None, :]
    tl.store(SCORES + pair_idx, scores, mask=pair_ok)
    tl.store(ITERS + pair_idx, iters, mask=pair_ok)
    tl.store(ERR + pair_idx, err, mask=pair_ok)
    to_natural = eps * LN2
    ti = tl.arange(0, TP)
    nj = tl.arange(0, NP)
    tl.store(F + pair_idx[:, :, None] * T + ti[None, None, :], alpha * to_natural,
             mask=pair_ok[:, :, None] & (ti < T)[None, None, :])
    tl.store(G + pair_idx[:, :, None] * N + nj[None, None, :], beta * to_natural,
             mask=pair_ok[:, :, None] & (nj < N)[None, None, :])


@triton.jit
def _tile_weights(GO, F, G, sim2d, row_ok, col_ok, pid_b, pid_a, B, A, T, N, scale2,
                  BB: tl.constexpr, BA: tl.constexpr, TP: tl.constexpr, NP: tl.constexpr):
    """grad_scores * P for the tile's pairs, as a (BB * TP, BA * NP) matrix in the sims' layout."""
    sim = _pair_blocks(sim2d, BB, BA, TP, NP)
    rows3 = tl.reshape(row_ok, (BB, TP))[:, None, :]
    cols3 = tl.reshape(col_ok, (BA, NP))[None, :, :]
    valid = rows3[:, :, :, None] & cols3[:, :, None, :]
    pb = pid_b * BB + tl.arange(0, BB)
    pa = pid_a * BA + tl.arange(0, BA)
    pair_ok = (pb < B)[:, None] & (pa < A)[None, :]
    pair_idx = pb.to(tl.int64)[:, None] * A + pa[None, :]
    ti = tl.arange(0, TP)
    nj = tl.arange(0, NP)
    f = tl.load(F + pair_idx[:, :, None] * T + ti[None, None, :], mask=pair_ok[:, :, None] & rows3, other=0.0)
    g = tl.load(G + pair_idx[:, :, None] * N + nj[None, None, :], mask=pair_ok[:, :, None] & cols3, other=0.0)
    go = tl.load(GO + pair_idx, mask=pair_ok, other=0.0)
    z = (sim - 1.0) * scale2 + (f * scale2)[:, :, :, None] + (g * scale2)[:, :, None, :]
    w = tl.where(valid & pair_ok[:, :, None, None], go[:, :, None, None] * tl.exp2(z), 0.0)
    # (BB, BA, TP, NP) -> (BB, TP, BA, NP) -> (BB * TP, BA * NP)
    return tl.reshape(tl.permute(w, (0, 2, 1, 3)), (BB * TP, BA * NP))


@triton.jit
def _unit_rows(X, ids, sub, ok, sx0, sx1, sxd, d, inv, DP: tl.constexpr):
    kk = tl.arange(0, DP)
    x = tl.load(X + ids[:, None] * sx0 + sub[:, None] * sx1 + kk[None, :] * sxd,
                mask=ok[:, None] & (kk < d)[None, :], other=0.0).to(tl.float32)
    return x * inv[:, None]


@triton.jit
def od_backward_kernel(
    V, D, FM, DM, GO, F, G, GRAD,
    B, A, T, N, d,
    svb, svt, svd, sda, sdn, sdd,
    scale2,
    HAS_FM: tl.constexpr, HAS_DM: tl.constexpr, NORMALIZE: tl.constexpr, FOR_VIDEO: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    TP: tl.constexpr, NP: tl.constexpr, BB: tl.constexpr, BA: tl.constexpr, BD: tl.constexpr,
    DP: tl.constexpr,
):
    """Gradients with respect to the unit embeddings of one tile: with FOR_VIDEO, of a tile of
    videos (GRAD (B * T, d)), summing W @ unit(desc) over every class tile; otherwise of a tile
    of classes (GRAD (A * N, d)), summing W^T @ unit(video) over every video tile. The other
    side's tiles are visited in a fixed order, without atomics, so results are deterministic."""
    pid = tl.program_id(0)
    if FOR_VIDEO:
        acc = tl.zeros((BB * TP, DP), dtype=tl.float32)
        n_other = tl.cdiv(A, BA)
    else:
        acc = tl.zeros((BA * NP, DP), dtype=tl.float32)
        n_other = tl.cdiv(B, BB)
    for other in range(0, n_other):
        pid_b = pid if FOR_VIDEO else other
        pid_a = other if FOR_VIDEO else pid
        vb, vt, da, dj, row_ok, col_ok = _tile_index(pid_b, pid_a, B, T, A, N, FM, DM, HAS_FM, HAS_DM, BB, BA, TP, NP)
        sim2d, inv_v, inv_d = _tile_sims(V, D, vb, vt, da, dj, row_ok, col_ok, d, svb, svt, svd, sda, sdn, sdd,
                                         NORMALIZE, BD, True, INPUT_PRECISION, BB, BA, TP, NP)
        w = _tile_weights(GO, F, G, sim2d, row_ok, col_ok, pid_b, pid_a, B, A, T, N, scale2, BB, BA, TP, NP)
        if FOR_VIDEO:
            dn = _unit_rows(D, da, dj, col_ok, sda, sdn, sdd, d, inv_d, DP)          # (BA * NP, DP)
            acc = tl.dot(w, dn, acc, input_precision="ieee")
        else:
            vn = _unit_rows(V, vb, vt, row_ok, svb, svt, svd, d, inv_v, DP)          # (BB * TP, DP)
            acc = tl.dot(tl.trans(w), vn, acc, input_precision="ieee")
    kk = tl.arange(0, DP)
    if FOR_VIDEO:
        rows = tl.arange(0, BB * TP)
        vb = pid * BB + rows // TP
        vt = rows % TP
        tl.store(GRAD + (vb.to(tl.int64) * T + vt)[:, None] * d + kk[None, :], acc,
                 mask=((vb < B) & (vt < T))[:, None] & (kk < d)[None, :])
    else:
        cols = tl.arange(0, BA * NP)
        da = pid * BA + cols // NP
        dj = cols % NP
        tl.store(GRAD + (da.to(tl.int64) * N + dj)[:, None] * d + kk[None, :], acc,
                 mask=((da < A) & (dj < N))[:, None] & (kk < d)[None, :])
