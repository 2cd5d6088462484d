"""The output tensors of the ops, allocated in one place: by the fake (meta) kernels that
torch.compile traces with and by the launchers that fill them."""
from __future__ import annotations

import torch

from ._cosine import compute_dtype


def empty_forward_outputs(video: torch.Tensor, desc: torch.Tensor, keep_cache: bool = False):
    """Uninitialized scores (B, A), f (B, A, T), g (B, A, N), iterations (B, A) int32, error
    (B, A) and the backward's cache (B * T, A * N) (zero-size unless keep_cache) for video
    (B, T, d) and desc (A, N, d); float64 for float64 inputs, else float32."""
    B, T, _ = video.shape
    A, N, _ = desc.shape
    dtype = compute_dtype(video.dtype)
    return (
        video.new_empty((B, A), dtype=dtype),
        video.new_empty((B, A, T), dtype=dtype),
        video.new_empty((B, A, N), dtype=dtype),
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
