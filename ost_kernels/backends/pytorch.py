"""Backend "torch": the readable log-domain Sinkhorn of docs/design.md section 3 in plain PyTorch.

This is the reference the kernels are tested against. It works on any device and in float64,
takes masks, and stops each (video, class) pair on its own. It materializes (B, a, T, N)
tensors, but only for a chunk of `a` classes at a time, so memory stays bounded whatever A is.

Internally the potentials are kept scaled, alpha = f / eps and beta = g / eps, and the cost
as Z = -C / eps = (sim - 1) / eps, so that one iteration reads

    alpha_i = log mu_i - LSE_j(Z_ij + beta_j)
    beta_j  = log nu_j - LSE_i(Z_ij + alpha_i)

and P_ij = exp(Z_ij + alpha_i + beta_j).
"""
from __future__ import annotations

import torch

from .._cosine import unit, unit_backward
from ..contract import (check_mask_rows, check_op_scalars, empty_backward_outputs, empty_forward_outputs, no_cache,
                        not_requested, register_autograd)
from .base import Backend

# Upper bound on the elements of one (B, a, T, N) chunk: 16M floats, 64 MiB in float32.
MAX_CHUNK_ELEMENTS = 1 << 24


def class_chunk(B: int, A: int, T: int, N: int) -> int:
    """How many classes one chunk holds so that B * a * T * N <= MAX_CHUNK_ELEMENTS."""
    return max(1, min(A, MAX_CHUNK_ELEMENTS // max(1, B * T * N)))


def _pair_masks(frame_mask, desc_mask, B, a, T, N, device):
    """Valid rows (B, 1, T), valid columns (1, a, N), valid entries (B, a, T, N) or None."""
    rows = frame_mask[:, None, :] if frame_mask is not None else torch.ones(B, 1, T, dtype=torch.bool, device=device)
    cols = desc_mask[None, :, :] if desc_mask is not None else torch.ones(1, a, N, dtype=torch.bool, device=device)
    entries = None
    if frame_mask is not None or desc_mask is not None:
        entries = rows[..., :, None] & cols[..., None, :]
    return rows, cols, entries


def _scaled_cost(sim: torch.Tensor, entries, eps: float) -> torch.Tensor:
    """Z = -C / eps for (B, a, T, N) sims, -inf where an entry is masked (no mass there)."""
    z = (sim - 1.0) / eps
    return z if entries is None else z.masked_fill(~entries, float("-inf"))


def _sinkhorn_chunk(sim, frame_mask, desc_mask, eps: float, max_iter: int, tol: float):
    """Per-pair log-domain Sinkhorn on one chunk of classes.

    sim: (B, a, T, N). Returns scores (B, a), f (B, a, T), g (B, a, N), iterations (B, a)
    int32, and the row-marginal error (B, a) after the last iteration each pair ran.
    """
    B, a, T, N = sim.shape
    rows, cols, entries = _pair_masks(frame_mask, desc_mask, B, a, T, N, sim.device)
    z = _scaled_cost(sim, entries, eps)
    # Uniform marginals over the valid entries: mu_i = 1 / T_valid, nu_j = 1 / N_valid.
    log_mu = -torch.log(rows.sum(-1, keepdim=True).to(sim.dtype))  # (B, 1, 1)
    log_nu = -torch.log(cols.sum(-1, keepdim=True).to(sim.dtype))  # (1, a, 1)
    mu = torch.where(rows, log_mu.exp(), torch.zeros((), dtype=sim.dtype, device=sim.device))

    alpha = torch.zeros(B, a, T, dtype=sim.dtype, device=sim.device)
    beta = torch.zeros(B, a, N, dtype=sim.dtype, device=sim.device)
    active = torch.ones(B, a, dtype=torch.bool, device=sim.device)
    iterations = torch.zeros(B, a, dtype=torch.int32, device=sim.device)
    zero = torch.zeros((), dtype=sim.dtype, device=sim.device)
    row_lse = torch.logsumexp(z + beta[..., None, :], dim=-1)  # (B, a, T)
    for _ in range(max_iter):
        alpha_new = torch.where(rows, log_mu - row_lse, zero)
        col_lse = torch.logsumexp(z + alpha_new[..., :, None], dim=-2)  # (B, a, N)
        beta_new = torch.where(cols, log_nu - col_lse, zero)
        # Pairs that met the stopping rule keep their potentials (frozen).
        alpha = torch.where(active[..., None], alpha_new, alpha)
        beta = torch.where(active[..., None], beta_new, beta)
        iterations += active.to(torch.int32)
        # Columns are exact now; the row sums come from the LSE the next row update needs.
        row_lse = torch.logsumexp(z + beta[..., None, :], dim=-1)
        row_sum = torch.where(rows, torch.exp(alpha + row_lse), zero)
        error = (row_sum - mu).abs().sum(-1)
        if tol > 0:
            # NaN errors compare False, so a poisoned pair stops instead of running on.
            active = active & (error > tol)
            if not bool(active.any()):
                break
    # Masked entries have plan 0 and sim 0 (their embeddings were zeroed).
    scores = (torch.exp(z + alpha[..., :, None] + beta[..., None, :]) * sim).sum((-1, -2))
    return scores, alpha * eps, beta * eps, iterations, error


def _units(video, desc, frame_mask, desc_mask, normalize: bool):
    """Unit (or raw) embeddings in the compute dtype, zeroed where masked so that whatever a
    masked row holds (padding, even NaN) never reaches a score or a gradient."""
    vn, dn = unit(video, normalize), unit(desc, normalize)
    if frame_mask is not None:
        vn = vn.masked_fill(~frame_mask[..., None], 0.0)
    if desc_mask is not None:
        dn = dn.masked_fill(~desc_mask[..., None], 0.0)
    return vn, dn


def _sims(vn: torch.Tensor, dn_chunk: torch.Tensor) -> torch.Tensor:
    """(B, T, d) x (a, N, d) -> (B, a, T, N) dot products."""
    return torch.einsum("btd,and->batn", vn, dn_chunk)


def od_forward(video, desc, frame_mask, desc_mask, eps: float, max_iter: int, tol: float, normalize: bool):
    """Backend "torch" forward. video (B, T, d), desc (A, N, d).

    Returns scores (B, A), f (B, A, T), g (B, A, N), iterations (B, A) int32, error (B, A);
    float tensors in float64 for float64 inputs, else float32. Potentials of masked entries
    are 0 and carry no meaning.
    """
    B, T, _ = video.shape
    A, N, _ = desc.shape
    vn, dn = _units(video, desc, frame_mask, desc_mask, normalize)
    step = class_chunk(B, A, T, N)
    parts = []
    for a0 in range(0, A, step):
        dm = desc_mask[a0 : a0 + step] if desc_mask is not None else None
        parts.append(_sinkhorn_chunk(_sims(vn, dn[a0 : a0 + step]), frame_mask, dm, eps, max_iter, tol))
    return tuple(torch.cat(p, dim=1) for p in zip(*parts))


def od_plan_from_potentials(video, desc, frame_mask, desc_mask, f, g, eps: float, normalize: bool):
    """Transport plans (B, A, T, N) from potentials f (B, A, T), g (B, A, N); 0 where masked."""
    vn, dn = _units(video, desc, frame_mask, desc_mask, normalize)
    B, T, _ = video.shape
    A, N, _ = desc.shape
    _, _, entries = _pair_masks(frame_mask, desc_mask, B, A, T, N, video.device)
    z = _scaled_cost(_sims(vn, dn), entries, eps)
    return torch.exp(z + (f / eps)[..., :, None] + (g / eps)[..., None, :])


def od_backward(grad_scores, video, desc, frame_mask, desc_mask, f, g, eps: float, normalize: bool,
                video_grad: bool = True, desc_grad: bool = True):
    """Backend "torch" backward with the plan held constant: d score / d sim = P.

    grad_scores (B, A); f (B, A, T), g (B, A, N) from od_forward. Returns gradients of
    video (B, T, d) and desc (A, N, d) in their dtypes; a side not asked for is zero-size.
    """
    B, T, _ = video.shape
    A, N, _ = desc.shape
    vn, dn = _units(video, desc, frame_mask, desc_mask, normalize)
    grad_scores = grad_scores.to(vn.dtype)
    grad_vn = torch.zeros_like(vn) if video_grad else None
    grad_dn = torch.empty_like(dn) if desc_grad else None
    step = class_chunk(B, A, T, N)
    for a0 in range(0, A, step):
        a1 = min(A, a0 + step)
        dm = desc_mask[a0:a1] if desc_mask is not None else None
        _, _, entries = _pair_masks(frame_mask, dm, B, a1 - a0, T, N, video.device)
        z = _scaled_cost(_sims(vn, dn[a0:a1]), entries, eps)
        plan = torch.exp(z + (f[:, a0:a1] / eps)[..., :, None] + (g[:, a0:a1] / eps)[..., None, :])
        weights = grad_scores[:, a0:a1, None, None] * plan  # (B, a, T, N)
        if video_grad:
            grad_vn += torch.einsum("batn,and->btd", weights, dn[a0:a1])
        if desc_grad:
            grad_dn[a0:a1] = torch.einsum("batn,btd->and", weights, vn)
    return (unit_backward(video, grad_vn, normalize) if video_grad else not_requested(video),
            unit_backward(desc, grad_dn, normalize) if desc_grad else not_requested(desc))


# The same math as custom ops, so that every backend goes through one autograd registration
# (ost_kernels.contract) and torch.compile sees one opaque call.
@torch.library.custom_op("ost_kernels::od_forward_torch", mutates_args=())
def od_forward_op(video: torch.Tensor, desc: torch.Tensor, frame_mask: torch.Tensor | None,
                  desc_mask: torch.Tensor | None, eps: float, max_iter: int, tol: float, normalize: bool,
                  keep_cache: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                     torch.Tensor, torch.Tensor]:
    check_op_scalars(eps, max_iter, tol, "ost_kernels::od_forward_torch")
    check_mask_rows(frame_mask, "frame_mask", "ost_kernels::od_forward_torch")
    check_mask_rows(desc_mask, "desc_mask", "ost_kernels::od_forward_torch")
    # The reference keeps no cache: its backward recomputes what it needs.
    return (*od_forward(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize), no_cache(video))


@torch.library.custom_op("ost_kernels::od_backward_torch", mutates_args=())
def od_backward_op(grad_scores: torch.Tensor, video: torch.Tensor, desc: torch.Tensor,
                   frame_mask: torch.Tensor | None, desc_mask: torch.Tensor | None, f: torch.Tensor,
                   g: torch.Tensor, cache: torch.Tensor, eps: float, normalize: bool, video_grad: bool,
                   desc_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    check_op_scalars(eps, None, None, "ost_kernels::od_backward_torch")
    return od_backward(grad_scores, video, desc, frame_mask, desc_mask, f, g, eps, normalize, video_grad,
                       desc_grad)


@od_forward_op.register_fake
def _(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize, keep_cache=False):
    return empty_forward_outputs(video, desc)


@od_backward_op.register_fake
def _(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache, eps, normalize, video_grad, desc_grad):
    return empty_backward_outputs(video, desc, video_grad, desc_grad)


register_autograd(od_forward_op, od_backward_op)


def _reason(device: torch.device, dtype: torch.dtype, shape=None) -> str | None:
    return None  # plain PyTorch: any device, every supported dtype, any size (chunked)


def _forward(video, desc, frame_mask, desc_mask, options):
    return od_forward_op(video, desc, frame_mask, desc_mask, options.eps, options.max_iter, options.tol,
                         options.normalize)


BACKEND = Backend(
    name="torch",
    dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64),
    reason=_reason,
    forward=_forward,
    backward=od_backward_op,
)
