"""Autograd for every backend's forward op, written once.

Every backend registers a forward op (video, desc, frame_mask, desc_mask, eps, max_iter, tol,
normalize, keep_cache) -> (scores, f, g, iterations, error, cache) and a backward op

    backward(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache, eps, normalize,
             video_grad, desc_grad) -> (grad_video, grad_desc)

that computes only the gradients asked for (a side not asked for comes back as a zero-size
tensor: an op cannot return None). Rows of masked entries and of zero vectors get exactly zero
gradient here, for every backend (`_zero_rows`). The plan is held constant, d score / d sim = P*, so the
forward saves the potentials f, g (B * A * (T + N) floats) and the backward rebuilds P from
them in one pass instead of solving again (benchmarks/test_bench_backward_strategy.py). The
cache is whatever else the backend kept for its backward (zero-size when nothing: see
csrc/ops.cpp).

This module imports nothing from ost_kernels: it sits at the bottom of the import graph.
"""
from __future__ import annotations

import torch


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
    video, desc, frame_mask, desc_mask, eps, _max_iter, _tol, normalize, _keep_cache = inputs
    _scores, f, g, iterations, error, cache = output
    ctx.save_for_backward(video, desc, frame_mask, desc_mask, f, g, cache)
    ctx.eps, ctx.normalize = eps, normalize
    ctx.mark_non_differentiable(f, g, iterations, error, cache)


def register_autograd(forward_op, backward_op) -> None:
    """Make forward_op differentiable in its scores through backward_op (see module doc)."""

    def backward(ctx, grad_scores, _grad_f, _grad_g, _grad_iterations, _grad_error, _grad_cache):
        video, desc, frame_mask, desc_mask, f, g, cache = ctx.saved_tensors
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
        return grad_video, grad_desc, None, None, None, None, None, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=_setup_context)
