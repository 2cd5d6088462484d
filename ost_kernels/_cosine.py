"""Cosine similarity pieces shared by the PyTorch paths: normalization and its backward.

Every backend follows the same convention: x / max(||x||, NORM_EPS), so a zero vector
normalizes to zero and has cosine 0 with everything.
"""
from __future__ import annotations

import torch

from .constants import NORM_EPS


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32 / float16 / bfloat16 are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def unit(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(..., d) -> (..., d) in the compute dtype, L2-normalized along d when asked."""
    x = x.to(compute_dtype(x.dtype))
    if not normalize:
        return x
    return x / x.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)


def unit_backward(x: torch.Tensor, grad_unit: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Gradient of `unit(x)` given the gradient of its output; returned in x's dtype.

    With n = ||x||: for n > NORM_EPS, d(x/n) = (g - u (u . g)) / n with u = x / n; below
    NORM_EPS the denominator is the constant NORM_EPS, so the gradient is g / NORM_EPS.
    """
    if not normalize:
        return grad_unit.to(x.dtype)
    xc = x.to(grad_unit.dtype)
    n = xc.norm(dim=-1, keepdim=True)
    u = xc / n.clamp_min(NORM_EPS)
    radial = torch.where(n > NORM_EPS, (u * grad_unit).sum(-1, keepdim=True), torch.zeros_like(n))
    return ((grad_unit - u * radial) / n.clamp_min(NORM_EPS)).to(x.dtype)

