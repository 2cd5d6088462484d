"""Argument checks for od_solve / od_plan, run before any work.

Every failure names the argument and what was expected. Data-dependent checks (a mask row
with no valid entry) need the mask's values; they are skipped while torch.compile traces,
where they would break the graph.
"""
from __future__ import annotations

import math
import numbers

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
BACKENDS = ("auto", "triton", "cuda", "cpu", "torch")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _check_embeddings(name: str, x, letters: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"od_solve: `{name}` must be a torch.Tensor of shape {letters}, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"od_solve: `{name}` must be a 3-D tensor {letters}, got shape {_shape(x)}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"od_solve: `{name}` has dtype {x.dtype}; expected one of float32, float16, bfloat16, float64"
        )
    if x.numel() == 0:
        raise ValueError(f"od_solve: `{name}` {letters} must have no zero-size dimension, got shape {_shape(x)}")


def _check_mask(name: str, mask, expected: tuple[int, int], letters: str, device: torch.device) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"od_solve: `{name}` must be a bool tensor {letters} or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"od_solve: `{name}` must have dtype torch.bool (True = valid), got {mask.dtype}")
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"od_solve: `{name}` must have shape {letters} = {tuple(expected)}, got {_shape(mask)}"
        )
    if mask.device != device:
        raise ValueError(f"od_solve: `{name}` is on {mask.device} but the embeddings are on {device}")
    if not torch.compiler.is_compiling():
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            rows = torch.nonzero(empty).flatten()[:5].tolist()
            raise ValueError(
                f"od_solve: `{name}` has rows with no valid entry (all False), e.g. rows {rows}; "
                "every row needs at least one valid entry"
            )


def check_inputs(video, desc, frame_mask, desc_mask, eps, max_iter, tol, normalize, backend) -> None:
    """Raise a clear TypeError / ValueError for anything od_solve cannot take."""
    _check_embeddings("video", video, "(B, T, d)")
    _check_embeddings("desc", desc, "(A, N, d)")
    if video.shape[-1] != desc.shape[-1]:
        raise ValueError(
            f"od_solve: embedding sizes differ: `video` has d={video.shape[-1]}, `desc` has d={desc.shape[-1]}"
        )
    if video.device != desc.device:
        raise ValueError(f"od_solve: `video` is on {video.device} but `desc` is on {desc.device}; use one device")
    if video.dtype != desc.dtype:
        raise TypeError(
            f"od_solve: `video` is {video.dtype} but `desc` is {desc.dtype}; cast both to one dtype"
        )
    B, T, _ = video.shape
    A, N, _ = desc.shape
    _check_mask("frame_mask", frame_mask, (B, T), "(B, T)", video.device)
    _check_mask("desc_mask", desc_mask, (A, N), "(A, N)", video.device)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"od_solve: `eps` must be a positive float, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"od_solve: `eps` must be a finite number > 0, got {eps}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"od_solve: `max_iter` must be an int >= 1, got {type(max_iter).__name__}")
    if max_iter < 1:
        raise ValueError(f"od_solve: `max_iter` must be >= 1, got {max_iter}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"od_solve: `tol` must be a float >= 0, got {type(tol).__name__}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"od_solve: `tol` must be a finite number >= 0 (0 = always max_iter iterations), got {tol}")
    if not isinstance(normalize, bool):
        raise TypeError(f"od_solve: `normalize` must be a bool, got {type(normalize).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"od_solve: unknown `backend` {backend!r}; expected one of {', '.join(map(repr, BACKENDS))}")
