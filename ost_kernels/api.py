"""The public functions: od_solve (scores) and od_plan (transport plans)."""
from __future__ import annotations

import os
from typing import NamedTuple

import torch

from . import backends
from .backends import auto
from ._convergence import check_convergence
from ._cosine import compute_dtype
from ._magnitudes import check_ranges, rescaled_rows
from ._validate import check_inputs, check_weights
from .implicit import check_grad, implicit_scores
from ._plan import plan_from_potentials, valid_entries
from .options import SolverOptions


class ODInfo(NamedTuple):
    """What the solver did, per (video, class) pair."""

    iterations: torch.Tensor  # (B, A) int32: Sinkhorn iterations the pair ran
    marginal_error: torch.Tensor  # (B, A): sum_i |sum_j P_ij - mu_i| after the last one (relaxed:
    #                               the row marginal's L1 change over it)
    backend: str  # the backend that ran
    mass: torch.Tensor | None = None  # (B, A): sum_ij P_ij, the mass transported (1 unless the descriptor
    #                                   side is relaxed; from the potentials, no plan is rebuilt)
    choice: str = ""  # why that backend: "asked for", "fixed order", "pinned by OST_KERNELS_BACKEND=...",
    #                   or "measured (...)" with the times ("auto" on CUDA tensors: backends/auto.py)


class _Marginals(NamedTuple):
    """The masks with zero-weight entries folded in (a weight of 0 removes an entry, as a mask
    does, in every backend's forward and backward alike) and the weights."""

    frame_mask: torch.Tensor | None
    desc_mask: torch.Tensor | None
    frame_weights: torch.Tensor | None
    desc_weights: torch.Tensor | None

    @classmethod
    def of(cls, frame_mask, desc_mask, frame_weights, desc_weights, dtype: torch.dtype) -> "_Marginals":
        fw, dw = _unit_rows(frame_weights, frame_mask, dtype), _unit_rows(desc_weights, desc_mask, dtype)
        return cls(valid_entries(frame_mask, fw), valid_entries(desc_mask, dw), fw, dw)

    def needs(self, options: SolverOptions) -> frozenset:
        weighted = self.frame_weights is not None or self.desc_weights is not None
        return frozenset({"weights"} if weighted else set()) | frozenset({"reg_m"} if not options.balanced else set())


def _unit_rows(weights: torch.Tensor | None, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The weights (rows, n) in the compute dtype, each row divided by its largest valid entry:
    the marginals w / sum w do not change, but the sum no longer overflows (weights of 3e38,
    or 1e300 in float64 with float32 embeddings) and tiny weights no longer underflow in the
    cast; masked entries become 0 (they may hold anything). The factor carries no gradient
    (the marginals do not depend on it), so gradients with respect to the weights stay exact."""
    if weights is None:
        return None
    # Divided in the wider of the two dtypes (float32 weights with float64 embeddings keep every
    # bit; float64 weights with float32 embeddings come into range before the cast).
    wide = torch.promote_types(weights.dtype, dtype)
    weights = weights.to(wide)
    kept = weights if mask is None else torch.where(mask, weights, torch.zeros((), dtype=wide, device=weights.device))
    top = kept.detach().amax(-1, keepdim=True)
    # Rows whose weights are all 0 are refused before this (check_weights); on a GPU that
    # check is a device-side assertion, and the guard keeps such a row from dividing by 0 first.
    top = torch.where(top > 0, top, torch.ones((), dtype=top.dtype, device=top.device))
    return (kept / top).to(dtype)


class _Ran(NamedTuple):
    name: str  # the backend that ran
    choice: str  # why it (ODInfo.choice)
    outputs: tuple  # its forward's (scores, f, g, iterations, error, cache)


def _run(video, desc, m: _Marginals, options: SolverOptions, backend: str, *, rescaled: bool = False,
         potentials: bool = True) -> _Ran:
    """Runs the backend asked for, or for "auto" the one backends/auto.py chooses. rescaled: the
    caller already passed video and desc through _in_range (it reuses them in PyTorch
    arithmetic afterwards); otherwise that happens here, unless the backend's kernels rescale
    huge rows themselves. potentials=False: f and g come back zero-size (scores only)."""
    shape = backends.ProblemShape.of(video, desc, m.needs(options))
    grad = torch.is_grad_enabled() and (video.requires_grad or desc.requires_grad)

    def forward(chosen, v, d):
        if not (rescaled or chosen.scales_huge_rows):
            v, d = _in_range(v, d, options)
        return chosen.forward(v, d, m.frame_mask, m.desc_mask, m.frame_weights, m.desc_weights, options, potentials)

    if backend != "auto":
        chosen = backends.resolve(backend, video.device, video.dtype, shape)
        return _Ran(chosen.name, "asked for", forward(chosen, video, desc))
    candidates = backends.auto_candidates(video.device, video.dtype, shape)
    fixed = backends.resolve("auto", video.device, video.dtype, shape).name

    def trial(name):
        def run():  # the call on its own inputs, forward and (when gradients are needed) backward
            v, d = video.detach().requires_grad_(grad), desc.detach().requires_grad_(grad)
            with torch.set_grad_enabled(grad):
                scores = forward(backends.REGISTRY[name], v, d)[0]
                if grad:
                    scores.sum().backward()
        return run

    name, choice = auto.choose(candidates, video.device,
                               lambda: auto.call_key(video, desc, shape.needs, options.tol <= 0, grad), trial, fixed)
    if name not in backends.REGISTRY:
        raise ValueError(f"{auto.PIN_ENV}={name!r} names no backend; expected one of "
                         f"{', '.join(map(repr, backends.REGISTRY))}")
    chosen = backends.resolve(name, video.device, video.dtype, shape)  # a pinned one that cannot run says why
    return _Ran(chosen.name, choice, forward(chosen, video, desc))


def _checked(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, eps, max_iter, tol, normalize,
             reg_m, backend, grad: str = "plan", chunk_mb=None) -> tuple[SolverOptions, _Marginals]:
    check_grad(grad)
    check_inputs(video, desc, frame_mask, desc_mask, backend)
    check_weights(frame_weights, desc_weights, video, desc, frame_mask, desc_mask, differentiable=grad == "implicit")
    options = SolverOptions(eps=eps, max_iter=max_iter, tol=tol, normalize=normalize, reg_m=reg_m, chunk_mb=chunk_mb)
    check_ranges(video, desc, frame_mask, desc_mask, options.eps, options.normalize)
    return options, _Marginals.of(frame_mask, desc_mask, frame_weights, desc_weights, compute_dtype(video.dtype))


def _mass(m: _Marginals, scores: torch.Tensor, g: torch.Tensor, options: SolverOptions) -> torch.Tensor:
    """sum_ij P_ij per pair (B, A), from what the solve already holds. Every iteration ends with
    the column update, so the columns sum to what it set: nu with an exact descriptor side (the
    mass is 1), and nu_j exp(-g_j / rho_d) with a relaxed one (the damped update's fixed
    relation c_j = nu_j^tau (K^T r)_j^(1 - tau), in the potentials): O(B * A * N), no plan."""
    B, A = scores.shape
    if options.reg_desc == float("inf"):  # (then g may be zero-size: scores only)
        return torch.ones((B, A), dtype=scores.dtype, device=scores.device)
    N = g.shape[-1]
    valid = m.desc_mask if m.desc_mask is not None else torch.ones((A, N), dtype=torch.bool, device=g.device)
    w = valid.to(g.dtype) if m.desc_weights is None else torch.where(valid, m.desc_weights.detach().to(g.dtype), 0.0)
    nu = w / w.sum(-1, keepdim=True)                                  # (A, N), 0 where not valid
    return (nu * torch.exp(-g.detach() / options.reg_desc)).sum(-1)


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
        plan = plan_from_potentials(video.detach(), desc.detach(), frame_mask, desc_mask, f.detach(), g.detach(),
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


def _implicit(video, desc, m: _Marginals, options: SolverOptions, backend: str, return_info: bool):
    """od_solve with grad="implicit": the forward solved without autograd by the backend, the
    scores then tied to video, desc and the weights through ost_kernels.implicit."""
    weights = [w for w in (m.frame_weights, m.desc_weights) if w is not None]
    if _forward_mode(video, desc, *weights):
        raise NotImplementedError("od_solve: forward-mode AD (torch.func.jvp, forward_ad) with grad='implicit' is not "
                                  "implemented; use grad='plan' (the tangent with the plan held constant) or "
                                  "reverse mode")
    video, desc = _in_range(video, desc, options)
    detached = _Marginals(m.frame_mask, m.desc_mask, *(w.detach() if w is not None else None
                                                       for w in (m.frame_weights, m.desc_weights)))
    # Run with video / desc as given (not detached): a backend that keeps its sims for a
    # backward keeps them, and the implicit backward reuses the cpu kernel's instead of a GEMM. The op's own graph is dropped (its outputs detached).
    ran = _run(video, desc, detached, options, backend, rescaled=True)
    name = ran.name
    scores, f, g, iterations, error, cache = (t.detach() for t in ran.outputs)
    check_convergence(iterations, error, options, return_info)
    # A cache of the (B * T, A * N) cosines is what the implicit backward would compute again.
    sims = cache if backends.REGISTRY[name].cache == "cosines" and cache.numel() else None
    scores = implicit_scores(video, desc, m.frame_mask, m.desc_mask, m.frame_weights, m.desc_weights, scores, f, g,
                             options, sims)
    if return_info:
        return scores, ODInfo(iterations, error, name, _mass(m, scores, g, options), ran.choice)
    return scores


def od_solve(
    video: torch.Tensor,
    desc: torch.Tensor,
    *,
    eps: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-3,
    frame_mask: torch.Tensor | None = None,
    desc_mask: torch.Tensor | None = None,
    frame_weights: torch.Tensor | None = None,
    desc_weights: torch.Tensor | None = None,
    reg_m=None,
    normalize: bool = True,
    backend: str = "auto",
    return_info: bool = False,
    grad: str = "plan",
    chunk_mb: float | None = None,
):
    """Optimal-transport score of every (video, class) pair: the OST "Optimal Descriptor Solver".

    For video b and class a: sim_ij = cos(video[b, i], desc[a, j]), cost C = 1 - sim, P the
    entropic OT plan (Sinkhorn, regularization eps) between the marginals over the valid frames
    and descriptors (uniform, or the weights normalized), exact or KL-relaxed (reg_m), and
    score[b, a] = sum_ij P_ij * sim_ij (docs/design.md section 3 is the contract).

    Args:
        video: (B, T, d) frame embeddings; float32, float16, bfloat16 or float64.
        desc: (A, N, d) descriptor embeddings, same device and dtype.
        eps: entropic regularization, > 0 (the paper uses 0.1).
        max_iter: Sinkhorn iterations at most, >= 1.
        tol: a pair stops once sum_i |sum_j P_ij - mu_i| <= tol (with a relaxed side: once the
            row marginal's L1 change over one iteration is <= tol); 0 runs exactly max_iter.
        frame_mask: (B, T) bool, True = valid frame; None = all valid.
        desc_mask: (A, N) bool, True = valid descriptor; None = all valid.
        frame_weights: (B, T), desc_weights: (A, N): finite, >= 0, any float dtype,
            differentiated with grad="implicit" only; the marginals are the weights normalized over the valid entries
            (mu = w / sum w); a weight of 0 removes its entry as a mask does. None = uniform.
        reg_m: None (balanced), rho > 0 (both sides relaxed), or (rho_frames, rho_descriptors)
            with float("inf") keeping that side exact: the constraints become rho * KL(P 1 | mu)
            and rho * KL(P^T 1 | nu), POT's sinkhorn_unbalanced(reg_type="entropy") iterate for
            iterate; the plan's mass may then be below 1.
        normalize: L2-normalize along d inside the op (cosine); False if already unit vectors.
        backend: "auto", "triton", "cuda", "cpu" or "torch" (see ost_kernels.available_backends).
        return_info: also return an ODInfo with per-pair iterations, marginal error and
            transported mass (from the potentials: O(B * A * N), no plan rebuilt).
        grad: "plan" (default, the paper's): gradients with the plan held constant, d score /
            d sim = P. "implicit": the exact gradient of the returned scores through the plan
            (implicit function theorem at the solved fixed point, ost_kernels.implicit), also
            with respect to frame_weights / desc_weights that require grad; rebuilt from the
            saved potentials a chunk of classes at a time in PyTorch, whichever backend solved.
        chunk_mb: MiB of float32 sims the GPU paths ("triton", "cuda") compute per chunk of
            classes (their extra memory); None = OST_KERNELS_CHUNK_MB, else 24 MiB (half an
            H100 / H200 L2). Results do not depend on it beyond a GEMM's float32 rounding.

    Returns:
        (B, A) scores, float64 for float64 inputs and float32 otherwise; differentiable with
        respect to video and desc with the plan held constant (d score / d sim = P); only the
        gradients of inputs that require grad are computed. When no input requires grad (or
        under torch.no_grad()) the backend keeps no potentials: memory is the (B, A) outputs
        and one chunk, whatever A is. Forward mode (torch.func.jvp,
        torch.autograd.forward_ad) gives the matching tangent sum_ij P_ij dsim_ij, through the
        materialized plans. Second derivatives raise. With return_info=True, (scores, ODInfo).
    """
    options, m = _checked(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, eps, max_iter, tol,
                          normalize, reg_m, backend, grad, chunk_mb)
    if grad == "implicit":
        return _implicit(video, desc, m, options, backend, return_info)
    forward_mode = _forward_mode(video, desc)
    if forward_mode:  # the tangent is computed in PyTorch from video and desc
        video, desc = _in_range(video, desc, options)
    # The potentials f (B, A, T) and g (B, A, N) serve a backward, the tangent and a relaxed
    # side's mass; without any of those the forward neither allocates nor writes them.
    potentials = (forward_mode or (torch.is_grad_enabled() and (video.requires_grad or desc.requires_grad))
                  or (return_info and options.reg_desc != float("inf")))
    ran = _run(video, desc, m, options, backend, rescaled=forward_mode, potentials=potentials)
    scores, f, g, iterations, error, _cache = ran.outputs
    check_convergence(iterations, error, options, return_info)
    if forward_mode:
        scores = _with_tangent(scores, video, desc, m.frame_mask, m.desc_mask, f, g, options)
    if return_info:
        return scores, ODInfo(iterations, error, ran.name, _mass(m, scores, g, options), ran.choice)
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
    frame_weights: torch.Tensor | None = None,
    desc_weights: torch.Tensor | None = None,
    reg_m=None,
    normalize: bool = True,
    backend: str = "auto",
    return_info: bool = False,
    chunk_mb: float | None = None,
):
    """The transport plans (B, A, T, N) that od_solve uses, for inspection and plots.

    Same arguments as od_solve. Entries of masked frames or descriptors are 0. This
    materializes B * A * T * N values: meant for small inputs, refused above
    OST_KERNELS_PLAN_MAX_MB (default 4096) before any work. Not differentiable.
    """
    options, m = _checked(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, eps, max_iter, tol,
                          normalize, reg_m, backend, chunk_mb=chunk_mb)
    _check_plan_budget(video, desc)
    video, desc = _in_range(video, desc, options)  # the plans are rebuilt in PyTorch from them
    with torch.no_grad():
        ran = _run(video, desc, m, options, backend, rescaled=True)
        _scores, f, g, iterations, error, _cache = ran.outputs
        plan = plan_from_potentials(video, desc, m.frame_mask, m.desc_mask, f, g, options.eps, options.normalize)
    check_convergence(iterations, error, options, return_info, "od_plan")
    if return_info:
        return plan, ODInfo(iterations, error, ran.name, plan.sum((-1, -2)), ran.choice)
    return plan
