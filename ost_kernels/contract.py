"""The op contract every backend implements, in one place: the two ops' signature and
outputs, the rules their inputs follow, the outputs' allocation (shared by fake kernels and
launchers), the fake kernels torch.compile traces with, and the one autograd registration.
csrc/op_schema.h is its only C++ mirror (tests/kernels/test_contract.py checks it and every
backend's registered ops against FORWARD_ARGS / BACKWARD_ARGS).

Every backend registers a forward op

    od_forward(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, <SOLVER_SCALARS>,
               keep_cache) -> (scores, f, g, iterations, error, cache)

(the solver scalars eps, max_iter, tol, reg_frames, reg_desc, normalize, chunk_mb:
SOLVER_SCALARS below is their one definition; then keep_cache and potentials)

with video (B, T, d), desc (A, N, d), frame_mask (B, T) / desc_mask (A, N) bool or None;
frame_weights (B, T) / desc_weights (A, N) or None (uniform), finite, >= 0, float; reg_frames /
reg_desc the KL penalties rho of the relaxed marginals, inf for an exact side (balanced: both);
scores (B, A), the Sinkhorn potentials f (B, A, T) and g (B, A, N) with
P_ij = exp((f_i + g_j - C_ij) / eps) (with potentials=False zero-size: neither allocated nor
written, for scores without gradients: at 100,000 classes f alone would be B * A * T floats), iterations (B, A) int32, the final row-marginal error
(B, A), and cache: whatever else the backend keeps for its backward (zero-size when nothing);
float64 for float64 inputs, float32 otherwise. And a backward op

    od_backward(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache, eps, normalize,
                video_grad, desc_grad) -> (grad_video, grad_desc)

that computes only the gradients asked for (a side not asked for comes back as a zero-size
tensor: an op cannot return None). Rules every op follows (docs/design.md gives the
semantics):

* Mask rows: every row of a mask needs a valid entry (mu_i = 1 / 0 otherwise); each op
  refuses one with no valid entry itself (check_mask_rows; csrc/common.h's check_mask_rows in
  C++), so a caller of a raw op gets the same error as od_solve's. On CPU tensors the answer is
  read at once (ValueError). On other devices reading it back would cost a host sync per call,
  so there it is queued as a device-side assertion (torch._assert_async): the error surfaces at
  the next synchronization and, as every device-side assertion, leaves the CUDA context
  unusable (this message is printed by the device, not carried by the exception). While
  torch.compile traces, the check is left out (it would break the graph).
* Solver scalars: eps finite and > 0, max_iter >= 1, tol finite and >= 0, reg_frames and
  reg_desc > 0 or inf (check_op_scalars). A backend whose kernels do not take weights or
  relaxed marginals yet says so in its reason (Backend.features) and refuses them in its op.
* Gradients: rows of masked entries and of zero vectors get exactly zero gradient, for every
  backend (`_zero_rows`). The plan is held constant, d score / d sim = P*, so the forward saves
  the potentials f, g (B * A * (T + N) floats) and the backward rebuilds P from them in one
  pass instead of solving again (benchmarks/test_bench_backward_strategy.py). Differentiating
  a gradient again raises.

This module imports nothing from ost_kernels but _cosine (which imports only constants): it
sits at the bottom of the import graph.
"""
from __future__ import annotations

import collections

import torch

from ._cosine import compute_dtype

# The solver's scalar arguments, in op order, with their schema types: written once, here.
# SolverOptions.op_args() gives their values in this order, OpScalars names them inside an op,
# FORWARD_SCHEMA spells them for torch.library, and csrc/op_schema.h mirrors that schema (its
# SolverScalars struct and forward_entry are the one C++ place that lists them; tests check it).
SOLVER_SCALARS = (("eps", "float"), ("max_iter", "int"), ("tol", "float"), ("reg_frames", "float"),
                  ("reg_desc", "float"), ("normalize", "bool"), ("chunk_mb", "float"))
SCALAR_NAMES = tuple(name for name, _ in SOLVER_SCALARS)
FORWARD_TENSORS = ("video", "desc", "frame_mask", "desc_mask", "frame_weights", "desc_weights")
FORWARD_ARGS = FORWARD_TENSORS + SCALAR_NAMES + ("keep_cache", "potentials")
FORWARD_OUTPUTS = ("scores", "f", "g", "iterations", "error", "cache")
BACKWARD_ARGS = ("grad_scores", "video", "desc", "frame_mask", "desc_mask", "f", "g", "cache", "eps", "normalize",
                 "video_grad", "desc_grad")
BACKWARD_OUTPUTS = ("grad_video", "grad_desc")
_OPTIONAL = {"frame_mask", "desc_mask", "frame_weights", "desc_weights"}
_TYPES = {**dict(SOLVER_SCALARS), "keep_cache": "bool", "potentials": "bool", "video_grad": "bool",
          "desc_grad": "bool"}
# chunk_mb: MiB of float32 sims a GPU path computes per chunk of classes; 0 = the backend's
# default (what results do not depend on beyond a GEMM's rounding; the CPU paths tile their own).
_DEFAULTS = {"chunk_mb": "0.", "keep_cache": "False", "potentials": "True"}


def _schema(args, outputs) -> str:
    """A torch.library schema (without the op name) for these arguments and outputs."""
    def arg(name):
        kind = _TYPES.get(name, "Tensor?" if name in _OPTIONAL else "Tensor")
        return f"{kind} {name}" + (f"={_DEFAULTS[name]}" if name in _DEFAULTS else "")
    return f"({', '.join(map(arg, args))}) -> ({', '.join(f'Tensor {o}' for o in outputs)})"


FORWARD_SCHEMA = _schema(FORWARD_ARGS, FORWARD_OUTPUTS)
BACKWARD_SCHEMA = _schema(BACKWARD_ARGS, BACKWARD_OUTPUTS)

# An op's scalar arguments by name: OpScalars(*scalars) inside an op whose Python function
# takes (video, desc, frame_mask, desc_mask, frame_weights, desc_weights, *scalars); chunk_mb,
# keep_cache and potentials may be left out (their defaults).
OpScalars = collections.namedtuple("OpScalars", SCALAR_NAMES + ("keep_cache", "potentials"),
                                   defaults=(0.0, False, True))


# ---- input rules ------------------------------------------------------------------------

def empty_rows_message(caller: str, name: str, rows: str = "") -> str:
    return (f"{caller}: {name} has rows with no valid entry (all False){rows}; "
            "every row needs at least one valid entry")


def check_mask_rows(mask: torch.Tensor | None, name: str, caller: str) -> None:
    """Refuse a (rows, cols) bool mask with an all-False row; `name` and `caller` go into the
    message (e.g. "`frame_mask`", "od_solve")."""
    if mask is None or torch.compiler.is_compiling() or mask.device.type == "meta":
        return
    if mask.device.type == "cpu":
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            rows = torch.nonzero(empty).flatten()[:5].tolist()
            raise ValueError(empty_rows_message(caller, name, f", e.g. rows {rows}"))
    else:
        torch._assert_async(mask.any(dim=1).all(), empty_rows_message(caller, name))


def check_op_scalars(eps: float, max_iter: int | None, tol: float | None, caller: str,
                     reg: tuple[float, float] = (float("inf"), float("inf"))) -> None:
    """The solver scalars of an op called directly (torch.ops.ost_kernels.*), with the rules
    and words of csrc/common.h's checks; od_solve checks them first (options.py)."""
    if not 0 < eps < float("inf"):
        raise ValueError(f"{caller}: eps must be finite and > 0, got {eps}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"{caller}: max_iter must be >= 1, got {max_iter}")
    if tol is not None and not 0 <= tol < float("inf"):
        raise ValueError(f"{caller}: tol must be finite and >= 0, got {tol}")
    if not all(r > 0 for r in reg):  # NaN too
        raise ValueError(f"{caller}: reg_frames and reg_desc must be > 0 (inf = exact), got {reg}")


def check_forward_args(s: "OpScalars", frame_mask, desc_mask, caller: str) -> None:
    """What every forward op checks first: its scalars and its masks' rows."""
    check_op_scalars(s.eps, s.max_iter, s.tol, caller, (s.reg_frames, s.reg_desc))
    if not 0 <= s.chunk_mb < float("inf"):
        raise ValueError(f"{caller}: chunk_mb must be finite and >= 0 (0 = the backend's default), got {s.chunk_mb}")
    check_mask_rows(frame_mask, "frame_mask", caller)
    check_mask_rows(desc_mask, "desc_mask", caller)


# ---- outputs ----------------------------------------------------------------------------

def empty_forward_outputs(video: torch.Tensor, desc: torch.Tensor, keep_cache: bool = False,
                          potentials: bool = True):
    """Uninitialized scores (B, A), f (B, A, T), g (B, A, N) (zero-size unless potentials),
    iterations (B, A) int32, error (B, A) and the backward's cache (B * T, A * N) (zero-size
    unless keep_cache) for video (B, T, d) and desc (A, N, d); float64 for float64 inputs, else
    float32."""
    B, T, _ = video.shape
    A, N, _ = desc.shape
    dtype = compute_dtype(video.dtype)
    return (
        video.new_empty((B, A), dtype=dtype),
        video.new_empty((B, A, T) if potentials else (0,), dtype=dtype),
        video.new_empty((B, A, N) if potentials else (0,), dtype=dtype),
        video.new_empty((B, A), dtype=torch.int32),
        video.new_empty((B, A), dtype=dtype),
        video.new_empty((B * T, A * N), dtype=dtype) if keep_cache else no_cache(video),
    )


def no_cache(video: torch.Tensor) -> torch.Tensor:
    """The forward's cache output of a backend that keeps nothing: zero-size, compute dtype."""
    return video.new_empty((0,), dtype=compute_dtype(video.dtype))


def not_requested(x: torch.Tensor) -> torch.Tensor:
    """What a backward op returns for a gradient nobody asked for (an op cannot return None)."""
    return x.new_empty((0,))


def empty_backward_outputs(video: torch.Tensor, desc: torch.Tensor, video_grad: bool, desc_grad: bool):
    """Gradients shaped like video and desc, or zero-size where not requested."""
    return (torch.empty_like(video) if video_grad else not_requested(video),
            torch.empty_like(desc) if desc_grad else not_requested(desc))


def register_fakes(namespace: str) -> None:
    """Fake kernels (for torch.compile) of <namespace>::od_forward / od_backward, a library
    with csrc/op_schema.h's schema. The ops exist only once the library is loaded, so this
    cannot run at import time."""
    torch.library.register_fake(f"{namespace}::od_forward")(fake_forward)
    torch.library.register_fake(f"{namespace}::od_backward")(fake_backward)


def fake_forward(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, *scalars):
    s = OpScalars(*scalars)
    return empty_forward_outputs(video, desc, s.keep_cache, s.potentials)


def fake_backward(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache, eps, normalize, video_grad,
                  desc_grad):
    return empty_backward_outputs(video, desc, video_grad, desc_grad)


# ---- autograd ---------------------------------------------------------------------------

class _RefuseDoubleBackward(torch.autograd.Function):
    """Identity on a gradient, tied to the input it belongs to, whose own backward raises:
    differentiating od_solve's gradient again fails loudly instead of returning zeros."""

    @staticmethod
    def forward(ctx, grad, *_owners):
        return grad.clone()

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(
            "od_solve: double backward is not supported (the gradient holds the transport plan "
            "constant; differentiating it again is not implemented)"
        )


def _refuse_double_backward(grad, *inputs):
    # Tied to every input that requires grad: a mixed second derivative (d/d desc of the video
    # gradient) raises too, instead of coming back as None.
    owners = [x for x in inputs if x.requires_grad]
    if grad is None or not torch.is_grad_enabled() or not owners:
        return grad
    return _RefuseDoubleBackward.apply(grad, *owners)


def _zero_rows(grad, x, mask, normalize):
    """grad (..., d) with exactly zero rows where the mask is False (a masked entry has no
    effect, so no gradient, whatever NaN or inf it holds) and where x is the zero vector.

    A zero vector is where the cosine x / ||x|| is not differentiable (its value jumps from 0
    to the direction it moves in); the clamp max(||x||, 1e-12) that keeps the forward defined
    would give it a slope of 1e12, inf in float16, so its gradient is defined as 0, as
    torch.linalg.vector_norm's is at 0 (without normalization the dot product's gradient is
    kept: it is defined there)."""
    if grad is None or grad.numel() == 0:
        return grad
    keep = (x != 0).any(-1) if normalize else torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    if mask is not None:
        keep = keep & mask
    return torch.where(keep[..., None], grad, torch.zeros((), dtype=grad.dtype, device=grad.device))


def _setup_context(ctx, inputs, output):
    args = dict(zip(FORWARD_ARGS, inputs))
    _scores, f, g, iterations, error, cache = output
    ctx.save_for_backward(args["video"], args["desc"], args["frame_mask"], args["desc_mask"], f, g, cache)
    ctx.eps, ctx.normalize = args["eps"], args["normalize"]
    ctx.mark_non_differentiable(f, g, iterations, error, cache)


def register_autograd(forward_op, backward_op) -> None:
    """Make forward_op differentiable in its scores through backward_op (see module doc)."""

    def backward(ctx, grad_scores, _grad_f, _grad_g, _grad_iterations, _grad_error, _grad_cache):
        video, desc, frame_mask, desc_mask, f, g, cache = ctx.saved_tensors
        if f.numel() == 0 and grad_scores.numel():
            raise RuntimeError("od_solve: this forward ran with potentials=False (scores only), so its gradient "
                               "cannot be computed; od_solve asks for them whenever an input requires grad")
        video_grad, desc_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.no_grad():
            grad_video, grad_desc = backward_op(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache,
                                                ctx.eps, ctx.normalize, video_grad, desc_grad)
        if video_grad:
            grad_video = _zero_rows(grad_video, video, frame_mask, ctx.normalize)
        if desc_grad:
            grad_desc = _zero_rows(grad_desc, desc, desc_mask, ctx.normalize)
        grad_video = _refuse_double_backward(grad_video if video_grad else None, video, desc)
        grad_desc = _refuse_double_backward(grad_desc if desc_grad else None, video, desc)
        return (grad_video, grad_desc) + (None,) * (len(FORWARD_ARGS) - 2)

    torch.library.register_autograd(forward_op, backward, setup_context=_setup_context)
