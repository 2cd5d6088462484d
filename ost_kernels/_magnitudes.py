"""Inputs at the edge of the compute dtype's range, handled before any work.

* normalize=True is scale-invariant, but a backend computes ||x||^2 in the compute dtype
  (float32 for float32 / float16 / bfloat16 inputs), which overflows for entries above ~1e19,
  and divides by max(||x||, NORM_EPS), which shrinks the cosines of rows below NORM_EPS: rows
  with an entry that large, or with no entry above RESCALE_BELOW (and not all zero), are
  divided by their largest magnitude first (exact for the cosine and, with the factor held
  constant, for its gradient: the cosine is homogeneous of degree 0). A zero row stays zero
  (cosine 0).
* The solver scales costs by log2(e) / eps: an eps so small that a pair's range of sims over
  eps leaves the compute dtype is refused, naming eps, as are unnormalized CPU inputs whose dot
  products would overflow (on a GPU that check would cost a host sync per call).
"""
from __future__ import annotations

import math

import torch

from ._cosine import compute_dtype
from .constants import LOG2E

# Rows with an entry above this are rescaled (normalize=True): its square times d stays far
# inside the compute dtype's range.
RESCALE_ABOVE = {torch.float32: 1e15, torch.float64: 1e150}
# Rows whose largest |entry| is below this (and above 0) are rescaled too (csrc/cpu/rows.h's
# kRescaleBelow): their norms stay far above NORM_EPS.
RESCALE_BELOW = 1e-10
# Margin between the largest scaled cost and the compute dtype's largest value.
COST_MARGIN = 1e3


def rescaled_rows(x: torch.Tensor) -> torch.Tensor:
    """x (..., d) with every finite row whose largest |entry| passes RESCALE_ABOVE, or is below
    RESCALE_BELOW and not 0, divided by that entry (the factor carries no gradient). On CPU
    tensors, outside torch.compile, the rows' magnitudes decide first and x itself comes back
    in the common case; elsewhere the rows are divided unconditionally (by 1 where nothing is
    needed), as reading the answer back would cost a host sync or a graph break."""
    big = RESCALE_ABOVE[compute_dtype(x.dtype)]
    eager_cpu = x.device.type == "cpu" and not torch.compiler.is_compiling()
    with torch.no_grad():
        top = torch.linalg.vector_norm(x, ord=math.inf, dim=-1, keepdim=True, dtype=compute_dtype(x.dtype))
        off = (top > big) | ((top < RESCALE_BELOW) & (top > 0))
        scale = torch.where(torch.isfinite(top) & off, top, torch.ones((), dtype=top.dtype, device=top.device))
        if eager_cpu and not bool((scale != 1).any()):
            return x
    return x / scale.to(x.dtype)


def _largest_norm(x: torch.Tensor, mask: torch.Tensor | None) -> float:
    """The largest norm of a finite, unmasked row of x (..., d), as a Python float (inf when it
    passes float64's range): each row is divided by its largest |entry| first, so rows whose
    squares would overflow (float64 entries of 1e200) are measured, not dropped as inf."""
    x = x.detach().to(torch.float64)
    top = torch.linalg.vector_norm(x, ord=math.inf, dim=-1)
    finite = torch.isfinite(top) & (top > 0)
    if mask is not None:
        finite = finite & mask
    if not bool(finite.any()):  # NaN or inf rows poison only themselves (documented)
        return 0.0
    top = top[finite]
    n = torch.linalg.vector_norm(x[finite] / top[:, None], dim=-1)
    return float((top * n).max())  # inf where a norm itself passes float64's range


def check_ranges(video, desc, frame_mask, desc_mask, eps: float, normalize: bool) -> None:
    """ValueError when the solver's arithmetic cannot be represented in the compute dtype."""
    dtype = compute_dtype(video.dtype)
    top = torch.finfo(dtype).max
    if normalize:
        spread = 2.0  # cosines
    elif video.device.type != "cpu" or torch.compiler.is_compiling():
        return  # reading the norms back would cost a host sync or a graph break: CPU tensors only
    else:
        product = _largest_norm(video, frame_mask) * _largest_norm(desc, desc_mask)
        if product > top / COST_MARGIN:
            raise ValueError(
                f"od_solve: with normalize=False the dot products reach "
                f"{f'{product:.3g}' if product < math.inf else 'more than 1.8e308'} (largest frame norm x largest "
                f"descriptor norm), beyond what {dtype} holds with margin ({top / COST_MARGIN:.3g}): scale the "
                "inputs down or use normalize=True")
        spread = 2.0 * product
    if spread * LOG2E / eps > top / COST_MARGIN:
        smallest = spread * LOG2E * COST_MARGIN / top
        raise ValueError(
            f"od_solve: `eps` = {eps:g} is too small for {dtype} arithmetic: a pair's costs over eps reach "
            f"{spread * LOG2E / eps:.3g}; use eps >= {smallest:.3g} here (or float64 inputs)")
