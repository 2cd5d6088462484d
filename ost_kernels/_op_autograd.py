"""Autograd glue shared by the custom-op backends (C++ ops and Triton ops): the plan is held
constant, so backward is one call of the backend's backward op on the saved potentials."""
from __future__ import annotations

import torch

from .backends import refuse_double_backward


def register(forward_op: str, backward_op) -> None:
    """Make forward_op (returning scores, f, g, iterations, error) differentiable in scores."""

    def setup_context(ctx, inputs, output):
        video, desc, frame_mask, desc_mask, eps, _max_iter, _tol, normalize = inputs
        _scores, f, g, iterations, error = output
        ctx.save_for_backward(video, desc, frame_mask, desc_mask, f, g)
        ctx.eps, ctx.normalize = eps, normalize
        ctx.mark_non_differentiable(f, g, iterations, error)

    def backward(ctx, grad_scores, _grad_f, _grad_g, _grad_iterations, _grad_error):
        video, desc, frame_mask, desc_mask, f, g = ctx.saved_tensors
        with torch.no_grad():
            grads = backward_op(grad_scores, video, desc, frame_mask, desc_mask, f, g, ctx.eps, ctx.normalize)
        grad_video, grad_desc = refuse_double_backward(grads, (video, desc))
        return grad_video, grad_desc, None, None, None, None, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)
