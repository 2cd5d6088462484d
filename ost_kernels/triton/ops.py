"""Backend "triton": launchers of the kernels in kernels.py, registered as custom ops
(torch.library.triton_op) so that torch.compile traces them, with autograd.

Imported the first time backend "triton" is asked for, never at package import. Tile sizes
are autotuned on the GPU, keyed on T, N, d and the input dtype (B and A are not
specialized); under TRITON_INTERPRET=1 one small fixed tile is used instead.
"""
from __future__ import annotations

import functools

import torch
import triton
from torch.library import triton_op, wrap_triton

from .._autograd import register_autograd
from .._cosine import unit_backward
from .._env import triton_interpreting as interpreting
from .._outputs import empty_forward_outputs, not_requested
from ..constants import LOG2E
from .kernels import od_backward_kernel, od_forward_kernel


def _pow2(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(n))


def _fixed_tile(TP: int, NP: int) -> dict:
    # tl.dot needs every dimension >= 16.
    return dict(BB=max(1, 16 // TP), BA=max(1, 16 // NP))


def _prune(configs, named_args, **kwargs):
    """Keep tiles whose matmul sides are 16..128 frames / descriptors."""
    TP, NP = kwargs["TP"], kwargs["NP"]
    kept = [c for c in configs if 16 <= c.kwargs["BB"] * TP <= 128 and 16 <= c.kwargs["BA"] * NP <= 128]
    return kept or [triton.Config(_fixed_tile(TP, NP), num_warps=4)]


_CONFIGS = [
    triton.Config(dict(BB=bb, BA=ba), num_warps=w)
    for bb in (1, 2, 4, 8, 16, 32)
    for ba in (1, 2, 4, 8, 16, 32)
    for w in (4, 8)
]


@functools.cache
def _kernels():
    """(forward, backward), autotuned unless interpreting. Built on first use."""
    if interpreting():
        return od_forward_kernel, od_backward_kernel
    tune = functools.partial(triton.autotune, configs=_CONFIGS, prune_configs_by={"early_config_prune": _prune})
    return tune(key=["T", "N", "d"])(od_forward_kernel), tune(key=["T", "N", "d", "FOR_VIDEO"])(od_backward_kernel)


def _meta(T: int, N: int, d: int, dtype: torch.dtype) -> dict:
    TP, NP = _pow2(T), _pow2(N)
    meta = dict(TP=TP, NP=NP, BD=min(64, _pow2(d, 16)))
    if interpreting():
        meta.update(_fixed_tile(TP, NP))
    return meta


def _dot_options(dtype: torch.dtype) -> dict:
    # float32 keeps full precision unless the user opted in to TF32 the PyTorch way.
    precision = "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
    # The interpreter's tl.dot is wrong on bfloat16 operands; there the loads are upcast first.
    return dict(UPCAST=interpreting() or dtype == torch.float32, INPUT_PRECISION=precision)


def _mask_arg(mask, like):
    # The kernels read masks as contiguous int8 (1 = valid); without a mask they read nothing.
    return mask.to(torch.int8).contiguous() if mask is not None else like


def _grid2(B, A):
    return lambda meta: (triton.cdiv(B, meta["BB"]), triton.cdiv(A, meta["BA"]))


@triton_op("ost_kernels::od_forward_triton", mutates_args=())
def od_forward_triton(
    video: torch.Tensor,
    desc: torch.Tensor,
    frame_mask: torch.Tensor | None,
    desc_mask: torch.Tensor | None,
    eps: float,
    max_iter: int,
    tol: float,
    normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as ost_kernels::od_forward: scores (B, A), f (B, A, T), g (B, A, N),
    iterations (B, A) int32, error (B, A), all float32."""
    B, T, d = video.shape
    A, N, _ = desc.shape
    scores, f, g, iterations, error = empty_forward_outputs(video, desc)
    forward, _ = _kernels()
    wrap_triton(forward)[_grid2(B, A)](
        video, desc, _mask_arg(frame_mask, video), _mask_arg(desc_mask, video),
        scores, f, g, iterations, error,
        B, A, T, N, d,
        *video.stride(), *desc.stride(),
        LOG2E / eps, eps, max_iter, tol,
        HAS_FM=frame_mask is not None, HAS_DM=desc_mask is not None, NORMALIZE=normalize,
        **_dot_options(video.dtype), **_meta(T, N, d, video.dtype),
    )
    return scores, f, g, iterations, error


@triton_op("ost_kernels::od_backward_triton", mutates_args=())
def od_backward_triton(
    grad_scores: torch.Tensor,
    video: torch.Tensor,
    desc: torch.Tensor,
    frame_mask: torch.Tensor | None,
    desc_mask: torch.Tensor | None,
    f: torch.Tensor,
    g: torch.Tensor,
    eps: float,
    normalize: bool,
    video_grad: bool,
    desc_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of video (B, T, d) and desc (A, N, d) with the plan held constant; a side not
    asked for is not computed (zero-size result).

    One kernel, launched for each side asked for (videos' side, classes' side), each summing
    over the other side's tiles in a fixed order (no atomics, so results are deterministic);
    the cosine normalization's backward runs in PyTorch."""
    B, T, d = video.shape
    A, N, _ = desc.shape
    grad_scores = grad_scores.to(torch.float32).contiguous()
    f = f.contiguous()
    g = g.contiguous()
    _, backward = _kernels()
    common = (
        B, A, T, N, d, *video.stride(), *desc.stride(), LOG2E / eps,
    )
    # The backward rebuilds P from sims computed exactly as the forward computed them.
    flags = dict(HAS_FM=frame_mask is not None, HAS_DM=desc_mask is not None, NORMALIZE=normalize,
                 DP=_pow2(d, 16), INPUT_PRECISION=_dot_options(video.dtype)["INPUT_PRECISION"],
                 **_meta(T, N, d, video.dtype))
    fm, dm = _mask_arg(frame_mask, video), _mask_arg(desc_mask, video)
    grad_video, grad_desc = not_requested(video), not_requested(desc)
    if video_grad:
        grad_vn = video.new_empty((B * T, d), dtype=torch.float32)
        wrap_triton(backward)[lambda meta: (triton.cdiv(B, meta["BB"]),)](
            video, desc, fm, dm, grad_scores, f, g, grad_vn, *common, FOR_VIDEO=True, **flags
        )
        grad_video = unit_backward(video, grad_vn.view(B, T, d), normalize)
    if desc_grad:
        grad_dn = video.new_empty((A * N, d), dtype=torch.float32)
        wrap_triton(backward)[lambda meta: (triton.cdiv(A, meta["BA"]),)](
            video, desc, fm, dm, grad_scores, f, g, grad_dn, *common, FOR_VIDEO=False, **flags
        )
        grad_desc = unit_backward(desc, grad_dn.view(A, N, d), normalize)
    return grad_video, grad_desc


register_autograd("ost_kernels::od_forward_triton", od_backward_triton)
