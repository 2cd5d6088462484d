"""Python-side registrations for the ops of ost_kernels._C: fake (meta) kernels so that
torch.compile can trace them, and autograd so that od_forward is differentiable.

Imported by ost_kernels._extension right after the extension is loaded, never before.
"""
from __future__ import annotations

import torch

from ._cosine import compute_dtype
from .backends import refuse_double_backward

_ops = torch.ops.ost_kernels


@torch.library.register_fake("ost_kernels::od_forward")
def _od_forward_fake(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize):
    B, T, _ = video.shape
    A, N, _ = desc.shape
    dtype = compute_dtype(video.dtype)
    return (
        video.new_empty((B, A), dtype=dtype),
        video.new_empty((B, A, T), dtype=dtype),
        video.new_empty((B, A, N), dtype=dtype),
        video.new_empty((B, A), dtype=torch.int32),
        video.new_empty((B, A), dtype=dtype),
    )


@torch.library.register_fake("ost_kernels::od_backward")
def _od_backward_fake(grad_scores, video, desc, frame_mask, desc_mask, f, g, eps, normalize):
    return torch.empty_like(video), torch.empty_like(desc)


def _setup_context(ctx, inputs, output):
    video, desc, frame_mask, desc_mask, eps, _max_iter, _tol, normalize = inputs
    _scores, f, g, _iterations, _error = output
    ctx.save_for_backward(video, desc, frame_mask, desc_mask, f, g)
    ctx.eps, ctx.normalize = eps, normalize
    ctx.mark_non_differentiable(f, g, _iterations, _error)


def _backward(ctx, grad_scores, _grad_f, _grad_g, _grad_iterations, _grad_error):
    video, desc, frame_mask, desc_mask, f, g = ctx.saved_tensors
    with torch.no_grad():
        grads = _ops.od_backward(grad_scores, video, desc, frame_mask, desc_mask, f, g, ctx.eps, ctx.normalize)
    grad_video, grad_desc = refuse_double_backward(grads, (video, desc))
    return grad_video, grad_desc, None, None, None, None, None, None


torch.library.register_autograd("ost_kernels::od_forward", _backward, setup_context=_setup_context)
