"""Backend "torch": the readable log-domain Sinkhorn of docs/design.md section 3 in plain PyTorch.

This is the reference the kernels are tested against. It works on any device and in float64,
takes masks, and stops each (video, class) pair on its own. It materializes (B, a, T, N)
tensors, but only for a chunk of `a` classes at a time, so memory stays bounded whatever A is.

Internally the potentials are kept scaled, alpha = f / eps and beta = g / eps, and the cost
as Z = -C / eps = (sim - 1) / eps, so that one iteration reads

    alpha_i = log mu_i - LSE_j(Z_ij + beta_j)
    beta_j  = log nu_j - LSE_i(Z_ij + alpha_i)

and P_ij = exp(Z_ij + alpha_i + beta_j). Weights change log mu and log nu (an entry of weight
0 counts as masked); relaxed marginals damp each update by tau = rho / (rho + eps):
alpha_i = tau_f (log mu_i - LSE_j(Z_ij + beta_j)), likewise beta (POT's unbalanced Sinkhorn,
iterate for iterate), and the stop rule becomes the L1 change of the row marginal.
"""
from __future__ import annotations

import torch

from .._cosine import unit_backward
from .._plan import class_chunk, damping, pair_masks, scaled_cost, sims, units, valid_entries
from ..contract import (BACKWARD_SCHEMA, FORWARD_SCHEMA, OpScalars, check_forward_args, check_op_scalars,
                        empty_forward_outputs, fake_backward, no_cache, not_requested, register_autograd)
from .base import Backend


def _log_marginal(valid: torch.Tensor, weights: torch.Tensor | None, dtype) -> torch.Tensor:
    """log of the marginal over the last axis of `valid` (..., n): the weights normalized over
    the valid entries (uniform without weights); -inf where not valid."""
    w = valid.to(dtype) if weights is None else torch.where(valid, weights.to(dtype), torch.zeros((), dtype=dtype,
                                                                                               device=valid.device))
    return torch.log(w / w.sum(-1, keepdim=True))


def _sinkhorn_chunk(sim, frame_mask, desc_mask, eps: float, max_iter: int, tol: float, frame_weights=None,
                    desc_weights=None, tau=(1.0, 1.0)):
    """Per-pair log-domain Sinkhorn on one chunk of classes.

    sim: (B, a, T, N); frame_mask / frame_weights (B, T), desc_mask / desc_weights (a, N);
    tau: the damping (tau_frames, tau_descriptors), 1 for an exact side. Returns scores (B, a),
    f (B, a, T), g (B, a, N), iterations (B, a) int32, and the error (B, a) after the last
    iteration each pair ran: the row-marginal error, or with a relaxed side the row marginal's
    L1 change over that iteration.
    """
    B, a, T, N = sim.shape
    frame_mask, desc_mask = valid_entries(frame_mask, frame_weights), valid_entries(desc_mask, desc_weights)
    rows, cols, entries = pair_masks(frame_mask, desc_mask, B, a, T, N, sim.device)
    z = scaled_cost(sim, entries, eps)
    # The marginals: the weights (uniform without) normalized over the valid entries.
    log_mu = _log_marginal(rows, frame_weights[:, None, :] if frame_weights is not None else None, sim.dtype)
    log_nu = _log_marginal(cols, desc_weights[None] if desc_weights is not None else None, sim.dtype)
    mu = log_mu.exp()  # (B, 1, T), 0 where not valid
    tau_f, tau_d = tau
    relaxed = (tau_f, tau_d) != (1.0, 1.0)

    alpha = torch.zeros(B, a, T, dtype=sim.dtype, device=sim.device)
    beta = torch.zeros(B, a, N, dtype=sim.dtype, device=sim.device)
    active = torch.ones(B, a, dtype=torch.bool, device=sim.device)
    iterations = torch.zeros(B, a, dtype=torch.int32, device=sim.device)
    zero = torch.zeros((), dtype=sim.dtype, device=sim.device)
    row_lse = torch.logsumexp(z + beta[..., None, :], dim=-1)  # (B, a, T)
    prev_rows = torch.where(rows, torch.exp(row_lse), zero)  # the row marginal at f = g = 0
    error = None
    for _ in range(max_iter):
        alpha_new = torch.where(rows, tau_f * (log_mu - row_lse), zero)
        col_lse = torch.logsumexp(z + alpha_new[..., :, None], dim=-2)  # (B, a, N)
        beta_new = torch.where(cols, tau_d * (log_nu - col_lse), zero)
        # Pairs that met the stopping rule keep their potentials (frozen).
        alpha = torch.where(active[..., None], alpha_new, alpha)
        beta = torch.where(active[..., None], beta_new, beta)
        iterations += active.to(torch.int32)
        # The row sums come from the LSE the next row update needs (columns are exact unless relaxed).
        row_lse = torch.logsumexp(z + beta[..., None, :], dim=-1)
        row_sum = torch.where(rows, torch.exp(alpha + row_lse), zero)
        step_error = ((row_sum - prev_rows) if relaxed else (row_sum - mu)).abs().sum(-1)
        # A frozen pair keeps the error it stopped with (its row marginal no longer changes).
        error = step_error if error is None else torch.where(active, step_error, error)
        prev_rows = row_sum
        if tol > 0:
            # NaN errors compare False, so a poisoned pair stops instead of running on.
            active = active & (error > tol)
            if not bool(active.any()):
                break
    # Masked entries have plan 0 and sim 0 (their embeddings were zeroed).
    scores = (torch.exp(z + alpha[..., :, None] + beta[..., None, :]) * sim).sum((-1, -2))
    return scores, alpha * eps, beta * eps, iterations, error


def od_forward(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, s):
    """Backend "torch" forward. video (B, T, d), desc (A, N, d), weights (B, T) / (A, N) or None,
    s the solver scalars (contract.OpScalars, or a SolverOptions: eps, max_iter, tol,
    reg_frames / reg_desc (inf for an exact side), normalize).

    Returns scores (B, A), f (B, A, T), g (B, A, N), iterations (B, A) int32, error (B, A);
    float tensors in float64 for float64 inputs, else float32. Potentials of masked entries
    are 0 and carry no meaning.
    """
    B, T, _ = video.shape
    A, N, _ = desc.shape
    vn, dn = units(video, desc, frame_mask, desc_mask, s.normalize)
    tau = (damping(s.eps, s.reg_frames), damping(s.eps, s.reg_desc))
    step = class_chunk(B, A, T, N)
    parts = []
    for a0 in range(0, A, step):
        dm = desc_mask[a0 : a0 + step] if desc_mask is not None else None
        dw = desc_weights[a0 : a0 + step] if desc_weights is not None else None
        parts.append(_sinkhorn_chunk(sims(vn, dn[a0 : a0 + step]), frame_mask, dm, s.eps, s.max_iter, s.tol,
                                     frame_weights, dw, tau))
    return tuple(torch.cat(p, dim=1) for p in zip(*parts))


def od_backward(grad_scores, video, desc, frame_mask, desc_mask, f, g, eps: float, normalize: bool,
                video_grad: bool = True, desc_grad: bool = True):
    """Backend "torch" backward with the plan held constant: d score / d sim = P.

    grad_scores (B, A); f (B, A, T), g (B, A, N) from od_forward. Returns gradients of
    video (B, T, d) and desc (A, N, d) in their dtypes; a side not asked for is zero-size.
    """
    B, T, _ = video.shape
    A, N, _ = desc.shape
    vn, dn = units(video, desc, frame_mask, desc_mask, normalize)
    grad_scores = grad_scores.to(vn.dtype)
    grad_vn = torch.zeros_like(vn) if video_grad else None
    grad_dn = torch.empty_like(dn) if desc_grad else None
    step = class_chunk(B, A, T, N)
    for a0 in range(0, A, step):
        a1 = min(A, a0 + step)
        dm = desc_mask[a0:a1] if desc_mask is not None else None
        _, _, entries = pair_masks(frame_mask, dm, B, a1 - a0, T, N, video.device)
        z = scaled_cost(sims(vn, dn[a0:a1]), entries, eps)
        plan = torch.exp(z + (f[:, a0:a1] / eps)[..., :, None] + (g[:, a0:a1] / eps)[..., None, :])
        weights = grad_scores[:, a0:a1, None, None] * plan  # (B, a, T, N)
        if video_grad:
            grad_vn += torch.einsum("batn,and->btd", weights, dn[a0:a1])
        if desc_grad:
            grad_dn[a0:a1] = torch.einsum("batn,btd->and", weights, vn)
    return (unit_backward(video, grad_vn, normalize) if video_grad else not_requested(video),
            unit_backward(desc, grad_dn, normalize) if desc_grad else not_requested(desc))


# The same math as custom ops, so that every backend goes through one autograd registration
# (ost_kernels.contract) and torch.compile sees one opaque call. Their schemas are the
# contract's; the solver scalars arrive in its order and are named by OpScalars.
@torch.library.custom_op("ost_kernels::od_forward_torch", mutates_args=(), schema=FORWARD_SCHEMA)
def od_forward_op(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, *scalars):
    s = OpScalars(*scalars)
    check_forward_args(s, frame_mask, desc_mask, "ost_kernels::od_forward_torch")
    # The reference keeps no cache: its backward recomputes what it needs.
    scores, f, g, iterations, error = od_forward(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, s)
    if not s.potentials:
        f, g = f.new_empty((0,)), g.new_empty((0,))
    return scores, f, g, iterations, error, no_cache(video)


@torch.library.custom_op("ost_kernels::od_backward_torch", mutates_args=(), schema=BACKWARD_SCHEMA)
def od_backward_op(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache, eps, normalize, video_grad,
                   desc_grad):
    check_op_scalars(eps, None, None, "ost_kernels::od_backward_torch")
    return od_backward(grad_scores, video, desc, frame_mask, desc_mask, f, g, eps, normalize, video_grad,
                       desc_grad)


# keep_cache or not, this op keeps nothing: its fake says so too.
od_forward_op.register_fake(lambda video, desc, fm, dm, fw, dw, *scalars: empty_forward_outputs(
    video, desc, potentials=OpScalars(*scalars).potentials))
od_backward_op.register_fake(fake_backward)
register_autograd(od_forward_op, od_backward_op)


def _reason(device: torch.device, dtype: torch.dtype, shape=None) -> str | None:
    return None  # plain PyTorch: any device, every supported dtype, any size (chunked)


BACKEND = Backend(
    name="torch",
    dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64),
    reason=_reason,
    ops=("ost_kernels::od_forward_torch", "ost_kernels::od_backward_torch"),
    features=frozenset({"weights", "reg_m"}),
)
