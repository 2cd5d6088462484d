"""Python-side registrations for the ops of ost_kernels._C: fake (meta) kernels so that
torch.compile can trace them, and autograd so that od_forward is differentiable.

Imported by ost_kernels._extension right after the extension is loaded, never before.
"""
from __future__ import annotations

import torch

from ._cosine import compute_dtype
from ._op_autograd import register

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


register("ost_kernels::od_forward", _ops.od_backward)
