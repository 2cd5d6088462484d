"""grad="implicit": exact gradients of od_solve's scores through the transport plan, by the
implicit function theorem at the solved fixed point (docs/design.md, "Implicit gradients").

One pair, natural units: P_ij = exp((f_i + g_j - C_ij) / eps), C = 1 - sim, row sums r, column
sums c. Its score S = sum_ij P_ij sim_ij changes with sim directly and through f, g:

    dS = sum_ij P_ij (1 + sim_ij / eps) dsim_ij + (1 / eps) (sum_i a_i df_i + sum_j b_j dg_j),
    a_i = sum_j P_ij sim_ij,  b_j = sum_i P_ij sim_ij.

The fixed point's marginal conditions, linearized (k = 1 + eps / rho for a relaxed side, 1 for
an exact one: the relaxed condition is r_i = mu_i exp(-f_i / rho)):

    k_f r_i df_i + sum_j P_ij dg_j = -sum_j P_ij dsim_ij + eps (r_i / mu_i) dmu_i
    sum_i P_ij df_i + k_d c_j dg_j = -sum_i P_ij dsim_ij + eps (c_j / nu_j) dnu_j

i.e. H [df; dg] = rhs with H = [[diag(k_f r), P], [P^T, diag(k_d c)]], symmetric. The adjoint
[x; y] = H^-1 [a; b] then gives

    dS / dsim_ij = P_ij (1 + (sim_ij - x_i - y_j) / eps),
    dS / dmu_i = (r_i / mu_i) x_i,  dS / dnu_j = (c_j / nu_j) y_j,

and the weights' gradients follow through mu = w / sum w. Balanced (both sides exact), H has
the null vector (1, -1) (the f + t, g - t gauge), [a; b] is orthogonal to it (sum a = sum b = S)
and the results do not depend on which solution is taken. The smaller side is kept: the
larger one is eliminated (x = (a - P y) / (k_f r)), leaving a min(T, N) system per pair (the
Schur complement diag(k_d c) - P^T diag(1 / (k_f r)) P; balanced, its null vector 1 is removed
by adding the valid entries' indicator outer product, which changes no gauge-invariant result).

Everything is rebuilt from the saved potentials, a chunk of classes at a time (memory bounded
by the chunk, as the "torch" backward), in float64 for float64 inputs and float32 otherwise,
whichever backend solved the forward. A pair stopped by max_iter before convergence gets the
same formula with its P's actual r and c: finite, but the gradient of the fixed point it has
not reached.
"""
from __future__ import annotations

import torch

from ._cosine import unit_backward
from ._plan import class_chunk, units
from .contract import _refuse_double_backward, _zero_rows
from .options import SolverOptions

GRADS = ("plan", "implicit")


def check_grad(grad) -> str:
    if not isinstance(grad, str) or grad not in GRADS:
        raise ValueError(f"od_solve: `grad` must be one of {GRADS}, got {grad!r}")
    return grad


def _k(rho: float, eps: float) -> float:
    return 1.0 if rho == float("inf") else 1.0 + eps / rho


def _gauge_free(kf: float, kd: float, dtype: torch.dtype) -> bool:
    """Whether H has the balanced gauge direction (1, -1) as (numerically) null: both sides
    exact, or relaxed so weakly that 1 + eps / rho rounds to 1 in the compute dtype (reg_m =
    1e15 in float32, 1e30 in float64), where the relaxed system is as singular as the balanced
    one."""
    tiny = 4 * torch.finfo(dtype).eps
    return kf - 1.0 <= tiny and kd - 1.0 <= tiny


def _adjoint(P, sim, rows, cols, kf: float, kd: float):
    """x (B, T, a), y (B, a, N) with H [x; y] = [a; b] for plans P (B, T, a, N) (the layout the
    sims GEMM writes, so nothing is transposed), rows (B, T, 1) and cols (1, a, N) the valid
    entries; 0 where masked. The small per-pair products are elementwise sums, not batched
    matmuls of T x N matrices (those run one tiny GEMM per pair).

    Unconverged plans at small eps (a pair stopped by max_iter) may hold rows or columns whose
    entries all underflow to 0, and blocks of frames and descriptors that exchange no mass
    (each its own gauge): a row or column of zero mass gets x = 0 / y = 0 (it adds nothing to
    any gradient: its P is 0), and the system is solved with a diagonal shift of one rounding
    unit, which makes it regular without moving a well-posed solution beyond rounding."""
    r, c = P.sum(-1), P.sum(1)                        # (B, T, a), (B, a, N)
    Ps = P * sim
    a, b = Ps.sum(-1), Ps.sum(1)
    rows, cols = rows.expand_as(r) & (r > 0), cols.expand_as(c) & (c > 0)
    one = torch.ones((), dtype=P.dtype, device=P.device)
    dr = torch.where(rows, kf * r, one)  # masked or empty rows: x = 0 (a = 0 and P = 0 there)
    dc = torch.where(cols, kd * c, one)
    T, N = P.shape[1], P.shape[-1]
    if N <= T:  # eliminate the frames: (diag(dc) - P^T diag(1/dr) P) y = b - P^T (a / dr)
        Pd = P / dr[..., None]
        S = torch.diag_embed(dc) - (Pd[..., :, None] * P[..., None, :]).sum(1)      # (B, a, N, N)
        rhs = b - (Pd * a[..., None]).sum(1)
        keep, diag = cols, dc
    else:  # eliminate the descriptors: (diag(dr) - P diag(1/dc) P^T) x = a - P (b / dc)
        Pd = P / dc[:, None]
        Pt, Pdt = P.permute(0, 2, 1, 3), Pd.permute(0, 2, 1, 3)                    # (B, a, T, N)
        S = torch.diag_embed(dr.transpose(1, 2)) - (Pdt[..., :, None, :] * Pt[..., None, :, :]).sum(-1)
        rhs = (a - (Pd * b[:, None]).sum(-1)).transpose(1, 2)                      # (B, a, T)
        keep, diag = rows.transpose(1, 2), dr.transpose(1, 2)
    if _gauge_free(kf, kd, P.dtype):
        u = keep.to(P.dtype)
        scale = torch.where(keep, diag, torch.zeros((), dtype=P.dtype, device=P.device)).mean(-1)
        S = S + scale[..., None, None] * (u[..., :, None] * u[..., None, :])
    z = _solve(S, diag, rhs)
    if N <= T:
        y = torch.where(cols, z, 0.0)
        x = torch.where(rows, (a - (P * y[:, None]).sum(-1)) / dr, 0.0)
    else:
        x = torch.where(rows, z.transpose(1, 2), 0.0)
        y = torch.where(cols, (b - (P * x[..., None]).sum(1)) / dc, 0.0)
    return x, y


def _solve(S: torch.Tensor, diag: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """S z = rhs for the (..., n, n) Schur systems, S shifted by diag (..., n) times one
    rounding unit (their solution does not move beyond rounding). A system that is still
    singular in the arithmetic (its LU met an exact zero pivot: rare, from blocks exchanging no
    mass) is solved again with a shift of sqrt(rounding unit), in the same pass: no host sync."""
    unit = torch.finfo(S.dtype).eps
    shift = torch.diag_embed(diag)
    z, info = torch.linalg.solve_ex(S + unit * shift, rhs[..., None])
    z = z[..., 0]
    bad = (info != 0) | ~torch.isfinite(z).all(-1)
    if S.device.type == "cpu" and not torch.compiler.is_compiling() and not bool(bad.any()):
        return z  # the common case, known without a device sync on the CPU
    z2 = torch.linalg.solve_ex(S + unit ** 0.5 * shift, rhs[..., None])[0][..., 0]
    return torch.where(bad[..., None], z2, z)


def _weight_grad(dmu: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """d/dw of a function of mu = w / sum_valid w, given d/dmu (..., n); 0 where not valid."""
    w = torch.where(valid, weights.to(dmu.dtype), 0.0)
    total = w.sum(-1, keepdim=True)
    mu = w / total
    return torch.where(valid, (dmu - (mu * dmu).sum(-1, keepdim=True)) / total, 0.0)


def implicit_backward(grad_scores, video, desc, frame_mask, desc_mask, frame_weights, desc_weights, f, g,
                      options: SolverOptions, needs=(True, True, False, False), sims: torch.Tensor | None = None):
    """Gradients of sum(grad_scores * scores) with respect to video (B, T, d), desc (A, N, d),
    frame_weights (B, T) and desc_weights (A, N) (None where not asked for or not given), exact
    at the fixed point the potentials f (B, A, T), g (B, A, N) describe. Masks have zero-weight
    entries folded in (od_solve does). sims: the forward's sims (B * T, A * N) where its backend
    kept them (else they are computed again, one GEMM)."""
    B, T, _ = video.shape
    A, N, _ = desc.shape
    eps = options.eps
    kf, kd = _k(options.reg_frames, eps), _k(options.reg_desc, eps)
    vn, dn = units(video, desc, frame_mask, desc_mask, options.normalize)
    dtype = vn.dtype
    go = grad_scores.to(dtype)
    f, g = f.to(dtype), g.to(dtype)
    grad_vn = torch.zeros_like(vn) if needs[0] else None
    grad_dn = torch.empty_like(dn) if needs[1] else None
    grad_mu = torch.zeros(B, T, dtype=dtype, device=vn.device) if needs[2] else None
    grad_nu = torch.empty(A, N, dtype=dtype, device=vn.device) if needs[3] else None
    # A chunk's (B, T, a, N, N) Schur products are min(T, N) times its plans: sized by them.
    step = class_chunk(B, A, T, N * min(T, N))
    ft, one = f.transpose(1, 2), torch.ones((), dtype=torch.bool, device=vn.device)  # (B, T, A)
    for a0 in range(0, A, step):
        a1 = min(A, a0 + step)
        rows = frame_mask[:, :, None] if frame_mask is not None else one.expand(B, T, 1)      # (B, T, 1)
        cols = desc_mask[None, a0:a1] if desc_mask is not None else one.expand(1, a1 - a0, N)  # (1, a, N)
        dn_chunk = dn[a0:a1].reshape(-1, dn.shape[-1])                                        # (a N, d)
        valid = rows[..., None] & cols[:, None]
        if sims is not None and sims.numel() == B * T * A * N:
            sim = sims.view(B, T, A, N)[:, :, a0:a1].to(dtype)
            sim = sim if frame_mask is None and desc_mask is None else torch.where(valid, sim, 0.0)
        else:
            sim = (vn.reshape(B * T, -1) @ dn_chunk.T).view(B, T, a1 - a0, N)                 # one GEMM
        z = (sim - 1.0) / eps + (ft[:, :, a0:a1] / eps)[..., None] + (g[:, a0:a1] / eps)[:, None]
        P = torch.where(valid, torch.exp(z), 0.0)
        x, y = _adjoint(P, sim, rows, cols, kf, kd)
        G = go[:, None, a0:a1, None] * P * (1.0 + (sim - x[..., None] - y[:, None]) / eps)  # (B, T, a, N)
        G = G.reshape(B * T, -1)
        if needs[0]:
            grad_vn += (G @ dn_chunk).view_as(grad_vn)
        if needs[1]:
            grad_dn[a0:a1] = (G.T @ vn.reshape(B * T, -1)).view(a1 - a0, N, -1)
        # dS / dmu_i = (r_i / mu_i) x_i: r / mu = 1 on an exact side, exp(-f / rho) relaxed.
        if needs[2]:
            ratio = 1.0 if kf == 1.0 else torch.exp(-ft[:, :, a0:a1] / options.reg_frames)
            grad_mu += (go[:, None, a0:a1] * ratio * x).sum(-1)
        if needs[3]:
            ratio = 1.0 if kd == 1.0 else torch.exp(-g[:, a0:a1] / options.reg_desc)
            grad_nu[a0:a1] = (go[:, a0:a1, None] * ratio * y).sum(0)
    out = [None, None, None, None]
    # Masked rows and zero vectors get exactly zero gradient, whatever they hold (as the plan backward).
    if needs[0]:
        out[0] = _zero_rows(unit_backward(video, grad_vn, options.normalize), video, frame_mask, options.normalize)
    if needs[1]:
        out[1] = _zero_rows(unit_backward(desc, grad_dn, options.normalize), desc, desc_mask, options.normalize)
    if needs[2]:
        valid = frame_mask if frame_mask is not None else torch.ones(B, T, dtype=torch.bool, device=vn.device)
        out[2] = _weight_grad(grad_mu, frame_weights, valid).to(frame_weights.dtype)
    if needs[3]:
        valid = desc_mask if desc_mask is not None else torch.ones(A, N, dtype=torch.bool, device=vn.device)
        out[3] = _weight_grad(grad_nu, desc_weights, valid).to(desc_weights.dtype)
    return tuple(out)


class _ImplicitScores(torch.autograd.Function):
    """scores (B, A) from a forward solved without autograd; backward: implicit_backward."""

    @staticmethod
    def forward(ctx, video, desc, frame_weights, desc_weights, scores, f, g, frame_mask, desc_mask, options, sims):
        ctx.save_for_backward(video, desc, frame_weights, desc_weights, f, g, frame_mask, desc_mask, sims)
        ctx.options = options
        return scores.clone()

    @staticmethod
    def backward(ctx, grad_scores):
        video, desc, fw, dw, f, g, fm, dm, sims = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:4])
        with torch.no_grad():
            grads = implicit_backward(grad_scores, video, desc, fm, dm, fw, dw, f, g, ctx.options, needs, sims)
        # Tied to every differentiated input, the weights too: a Hessian with respect to the
        # weights raises instead of coming back as zeros.
        owners = [x for x in (video, desc, fw, dw) if x is not None]
        grads = tuple(_refuse_double_backward(gr, *owners) if gr is not None else None for gr in grads)
        return (*grads, None, None, None, None, None, None, None)


def implicit_scores(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, scores, f, g,
                    options: SolverOptions, sims: torch.Tensor | None = None) -> torch.Tensor:
    """scores whose gradient with respect to video, desc and the weights is the implicit one;
    sims: the forward's (B * T, A * N) sims where its backend kept them."""
    return _ImplicitScores.apply(video, desc, frame_weights, desc_weights, scores, f.detach(), g.detach(),
                                 frame_mask, desc_mask, options, sims)

