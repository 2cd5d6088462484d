"""The public functions: od_solve (scores) and od_plan (transport plans)."""
from __future__ import annotations

import os
from typing import NamedTuple

import torch

from . import backends
from ._magnitudes import check_ranges, rescaled_rows
from ._validate import check_inputs
from .backends.pytorch import od_plan_from_potentials
from .options import SolverOptions


class ODInfo(NamedTuple):
    """What the solver did, per (video, class) pair."""

    iterations: torch.Tensor  # (B, A) int32: Sinkhorn iterations the pair ran
    marginal_error: torch.Tensor  # (B, A): sum_i |sum_j P_ij - mu_i| after the last one
    backend: str  # the backend that ran


def _run(video, desc, frame_mask, desc_mask, options: SolverOptions, backend: str, *, rescaled: bool = False):
    """(backend name, its forward's outputs). rescaled: the caller already passed video and
    desc through _in_range (it reuses them in PyTorch arithmetic afterwards); otherwise that
    happens here, unless the backend's kernels rescale huge rows themselves."""
    chosen = backends.resolve(backend, video.device, video.dtype, backends.ProblemShape.of(video, desc))
    if not (rescaled or chosen.scales_huge_rows):
        video, desc = _in_range(video, desc, options)
    return chosen.name, chosen.forward(video, desc, frame_mask, desc_mask, options)


def _checked(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize, backend) -> SolverOptions:
    check_inputs(video, desc, frame_mask, desc_mask, backend)
    options = SolverOptions(eps=eps, max_iter=max_iter, tol=tol, normalize=normalize)
    check_ranges(video, desc, frame_mask, desc_mask, options.eps, options.normalize)
    return options


def _in_range(video, desc, options: SolverOptions):
    # Cosines do not depend on a row's scale: rows too large for the compute dtype's norms
    # are scaled down first (_magnitudes.py).
    if options.normalize:
        return rescaled_rows(video), rescaled_rows(desc)
    return video, desc


def _forward_mode(*xs: torch.Tensor) -> bool:
    """Whether forward-mode AD is tracking an input (torch.autograd.forward_ad or torch.func.jvp):
    the ops have no forward-AD formula, and would silently give zero tangents."""
    import torch.autograd.forward_ad as fwAD

    if torch.compiler.is_compiling():  # traced code: the ops' registered autograd applies
        return False
    if any(fwAD.unpack_dual(x).tangent is not None for x in xs):
        return True
    interpreter = torch._C._functorch.peek_interpreter_stack()
    return interpreter is not None and interpreter.key() == torch._C._functorch.TransformType.Jvp


def _with_tangent(scores, video, desc, frame_mask, desc_mask, f, g, options: SolverOptions):
    """scores with the tangent (and gradient) of the plan held constant: sum_ij P_ij dsim_ij,
    from a differentiable sum_ij P_ij sim_ij over the materialized plans (B * A * T * N values:
    forward mode costs that memory). Masked entries and zero vectors get zero derivative, as
    in the backward."""
    from ._cosine import unit

    with torch.no_grad():
        plan = od_plan_from_potentials(video.detach(), desc.detach(), frame_mask, desc_mask, f.detach(), g.detach(),
                                       options.eps, options.normalize)

    def valid(x, mask):
        keep = (x != 0).any(-1) if options.normalize else torch.ones(x.shape[:-1], dtype=torch.bool,
                                                                       device=x.device)
        keep = keep if mask is None else keep & mask
        return torch.where(keep[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))

    sim = torch.einsum("btd,and->batn", unit(valid(video, frame_mask), options.normalize),
                       unit(valid(desc, desc_mask), options.normalize))
    surrogate = (plan.to(sim.dtype) * sim).sum((-1, -2)).to(scores.dtype)
    return scores.detach() + (surrogate - surrogate.detach())


def od_solve(
    video: torch.Tensor,
    desc: torch.Tensor,
    *,
    eps: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-3,
    frame_mask: torch.Tensor | None = None,
    desc_mask: torch.Tensor | None = None,
    normalize: bool = True,
    backend: str = "auto",
    return_info: bool = False,
):
    """Optimal-transport score of every (video, class) pair: the OST "Optimal Descriptor Solver".

    For video b and class a: sim_ij = cos(video[b, i], desc[a, j]), cost C = 1 - sim, P the
    entropic OT plan (Sinkhorn, regularization eps) between uniform marginals over the valid
    frames and descriptors, and score[b, a] = sum_ij P_ij * sim_ij.

    Args:
        video: (B, T, d) frame embeddings; float32, float16, bfloat16 or float64.
        desc: (A, N, d) descriptor embeddings, same device and dtype.
        eps: entropic regularization, > 0 (the paper uses 0.1).
        max_iter: Sinkhorn iterations at most, >= 1.
        tol: a pair stops once sum_i |sum_j P_ij - mu_i| <= tol; 0 runs exactly max_iter.
        frame_mask: (B, T) bool, True = valid frame; None = all valid.
        desc_mask: (A, N) bool, True = valid descriptor; None = all valid.
        normalize: L2-normalize along d inside the op (cosine); False if already unit vectors.
        backend: "auto", "triton", "cuda", "cpu" or "torch" (see ost_kernels.available_backends).
        return_info: also return an ODInfo with per-pair iterations and marginal error.

    Returns:
        (B, A) scores, float64 for float64 inputs and float32 otherwise; differentiable with
        respect to video and desc with the plan held constant (d score / d sim = P); only the
        gradients of inputs that require grad are computed. Forward mode (torch.func.jvp,
        torch.autograd.forward_ad) gives the matching tangent sum_ij P_ij dsim_ij, through the
        materialized plans. Second derivatives raise. With return_info=True, (scores, ODInfo).
    """
    options = _checked(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize, backend)
    forward_mode = _forward_mode(video, desc)
    if forward_mode:  # the tangent is computed in PyTorch from video and desc
        video, desc = _in_range(video, desc, options)
    name, (scores, f, g, iterations, error, _cache) = _run(video, desc, frame_mask, desc_mask, options, backend,
                                                           rescaled=forward_mode)
    if forward_mode:
        scores = _with_tangent(scores, video, desc, frame_mask, desc_mask, f, g, options)
    if return_info:
        return scores, ODInfo(iterations, error, name)
    return scores


PLAN_BUDGET_ENV = "OST_KERNELS_PLAN_MAX_MB"
DEFAULT_PLAN_BUDGET_MB = 4096


def _check_plan_budget(video: torch.Tensor, desc: torch.Tensor) -> None:
    """od_plan materializes B * A * T * N values: refuse, before any work, plans beyond the
    budget (OST_KERNELS_PLAN_MAX_MB, default 4096) instead of failing in the allocator later."""
    text = os.environ.get(PLAN_BUDGET_ENV)
    try:
        budget_mb = float(text) if text is not None else DEFAULT_PLAN_BUDGET_MB
    except ValueError:
        raise ValueError(f"{PLAN_BUDGET_ENV} must be a number of MiB, got {text!r}") from None
    (B, T, _), (A, N, _) = video.shape, desc.shape
    item = 8 if video.dtype == torch.float64 else 4
    need = B * A * T * N * item
    if need > budget_mb * 2**20:
        raise ValueError(f"od_plan: the plans need {need / 2**20:,.2f} MiB (B * A * T * N = {B} * {A} * {T} * {N} "
                         f"values), above the {budget_mb:,.2f} MiB budget ({PLAN_BUDGET_ENV}): ask for fewer videos "
                         "or classes (od_solve gives the scores without plans), or raise the budget")


def od_plan(
    video: torch.Tensor,
    desc: torch.Tensor,
    *,
    eps: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-3,
    frame_mask: torch.Tensor | None = None,
    desc_mask: torch.Tensor | None = None,
    normalize: bool = True,
    backend: str = "auto",
    return_info: bool = False,
):
    """The transport plans (B, A, T, N) that od_solve uses, for inspection and plots.

    Same arguments as od_solve. Entries of masked frames or descriptors are 0. This
    materializes B * A * T * N values: meant for small inputs, refused above
    OST_KERNELS_PLAN_MAX_MB (default 4096) before any work. Not differentiable.
    """
    options = _checked(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize, backend)
    _check_plan_budget(video, desc)
    video, desc = _in_range(video, desc, options)  # the plans are rebuilt in PyTorch from them
    with torch.no_grad():
        name, (_scores, f, g, iterations, error, _cache) = _run(video, desc, frame_mask, desc_mask, options,
                                                                backend, rescaled=True)
        plan = od_plan_from_potentials(video, desc, frame_mask, desc_mask, f, g, options.eps, options.normalize)
    if return_info:
        return plan, ODInfo(iterations, error, name)
    return plan
