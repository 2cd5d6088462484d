"""Argument checks for od_solve / od_plan, run before any work.

Every failure names the argument and what was expected. The solver scalars are checked by
SolverOptions (options.py); the tensors and the backend name here.

A mask row with no valid entry is refused by contract.check_mask_rows (see there).
"""
from __future__ import annotations

import torch

from .contract import check_mask_rows
from .backends import backend_names

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


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
    check_mask_rows(mask, f"`{name}`", "od_solve")


def check_inputs(video, desc, frame_mask, desc_mask, backend) -> None:
    """Raise a clear TypeError / ValueError for any tensor or backend od_solve cannot take."""
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
    names = backend_names()  # read now: backends may be registered after import
    if backend not in names:
        raise ValueError(f"od_solve: unknown `backend` {backend!r}; expected one of {', '.join(map(repr, names))}")


def _check_weight(name: str, w, expected: tuple[int, int], letters: str, device: torch.device, mask,
                  differentiable: bool = False) -> None:
    if w is None:
        return
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"od_solve: `{name}` must be a float tensor {letters} or None, got {type(w).__name__}")
    if not w.dtype.is_floating_point:
        raise TypeError(f"od_solve: `{name}` must have a float dtype, got {w.dtype}")
    if tuple(w.shape) != expected:
        raise ValueError(f"od_solve: `{name}` must have shape {letters} = {tuple(expected)}, got {_shape(w)}")
    if w.device != device:
        raise ValueError(f"od_solve: `{name}` is on {w.device} but the embeddings are on {device}")
    if w.requires_grad and not differentiable:
        raise ValueError(f"od_solve: `{name}` requires grad, but the weights are not differentiated with "
                         f"grad='plan' (the gradient holds the plan constant); pass `{name}.detach()`, or "
                         "grad='implicit' for their exact gradient")
    if not differentiable and _has_tangent(w):
        # The plan-held-constant tangent has no term for the weights: it would silently be 0.
        raise ValueError(f"od_solve: `{name}` carries a forward-mode tangent (torch.func.jvp, forward_ad), but the "
                         f"weights are not differentiated with grad='plan' (the plan is held constant); pass "
                         f"`{name}` without a tangent, or grad='implicit' with reverse mode for their exact gradient")
    if torch.compiler.is_compiling() or w.device.type == "meta":
        return
    # Where the mask keeps an entry, its weight counts; masked entries may hold anything.
    kept = w if mask is None else torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device))
    bad = ~(torch.isfinite(kept) & (kept >= 0))
    empty = ~(kept > 0).any(dim=1)
    what = f"od_solve: `{name}` must be finite and >= 0 where the mask keeps an entry"
    rows = f"od_solve: `{name}` has rows whose valid weights sum to 0; every row needs a valid entry of weight > 0"
    if w.device.type == "cpu":
        if bool(bad.any()):
            raise ValueError(f"{what}, e.g. at {tuple(torch.nonzero(bad)[0].tolist())}")
        if bool(empty.any()):
            raise ValueError(f"{rows}, e.g. rows {torch.nonzero(empty).flatten()[:5].tolist()}")
    else:  # no host sync: a device-side assertion, as for the masks (contract.check_mask_rows)
        torch._assert_async(~bad.any(), what)
        torch._assert_async(~empty.any(), rows)


def _has_tangent(x: torch.Tensor) -> bool:
    """Whether forward-mode AD tracks x (a dual tensor of forward_ad or torch.func.jvp)."""
    import torch.autograd.forward_ad as fwAD

    return not torch.compiler.is_compiling() and fwAD.unpack_dual(x).tangent is not None


def check_weights(frame_weights, desc_weights, video, desc, frame_mask, desc_mask, differentiable: bool = False
                  ) -> None:
    """Raise a clear TypeError / ValueError for weights od_solve cannot take, naming them.
    differentiable: the weights may require grad (grad="implicit")."""
    B, T, _ = video.shape
    A, N, _ = desc.shape
    _check_weight("frame_weights", frame_weights, (B, T), "(B, T)", video.device, frame_mask, differentiable)
    _check_weight("desc_weights", desc_weights, (A, N), "(A, N)", video.device, desc_mask, differentiable)
