"""Backend "triton-fused": launchers of the fused kernels in kernels.py, registered as custom
ops (torch.library.triton_op) so that torch.compile traces them, with autograd. The fused
forward computes each tile's sims with tl.dot and solves them in one kernel; on the project's
own count it is bound by reloading operands from L2 (benchmarks/triton_cost.py), so backend
"triton" is the two-phase path (ops.py) and this one stays for calibration: registered, tested
and compiled, never picked by "auto".

Imported the first time backend "triton-fused" is asked for, never at package import. Tiles are
autotuned on the GPU among configs.candidates, keyed on T, N, d, the input dtype and size
buckets of B and A (so a first call with a small batch does not fix the tile for later large
ones); configs that spill or overflow shared memory are pruned from the resources measured
ahead of time (configs.py). OST_KERNELS_TRITON_AUTOTUNE=0 skips tuning (one compile per shape
instead of one per candidate: configs.default_config); OST_KERNELS_TRITON_TILE=<name> uses
that one tile. Under TRITON_INTERPRET=1 one small fixed tile is used instead.

Forward: the inverse norms (or ones) and int8 masks are prepared once per call, then one
kernel computes sims, the Sinkhorn of every pair and its outputs. Backward: a kernel writes
the weights W = grad_scores * P for a chunk of classes at a time (in the input dtype), and
tensor-core GEMMs with float32 accumulation turn them into gradients: W @ unit(desc) for the
videos, W^T @ unit(video) for the classes, only the sides asked for. Chunks are summed in a
fixed order: results are deterministic.
"""
from __future__ import annotations

import functools
import os

import torch
import triton
from torch.library import triton_op, wrap_triton

from .._env import triton_interpreting as interpreting
from ..constants import LOG2E
from ..contract import (BACKWARD_SCHEMA, FORWARD_SCHEMA, OpScalars, check_forward_args, check_op_scalars,
                        empty_forward_outputs, not_requested, register_autograd)
from . import configs
from .kernels import od_forward_kernel, od_weights_kernel
from .launch import KernelScalars, PlanGradients, device_guard, mask_bytes, scales, specializations, weight_rows

BD = 64  # the d-chunk of the tiles' matmul
AUTOTUNE_ENV = "OST_KERNELS_TRITON_AUTOTUNE"
# A tile config by name (configs.TileConfig.name, e.g. BB1_BA32_w4_s3) for every launch, no
# autotuning: to time one tile (benchmarks/gpu_check.py), pin one, or run one under the
# interpreter (tests/kernels/test_triton_tiles.py).
TILE_ENV = "OST_KERNELS_TRITON_TILE"
# Elements of one chunk of backward weights (B * T x classes * N): 128 MiB in bfloat16.
WEIGHTS_CHUNK_ELEMENTS = 1 << 26
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def size_bucket(n: int, cap: int) -> int:
    """Autotuning key for a size: its power of two, capped (tiles stop mattering above)."""
    return configs.pow2(min(n, cap))


def _prune(kernel: str):
    """The autotuner's pruning: configs.candidates for the shape that configs.fits on this
    GPU (all candidates when none does, rather than none)."""

    def prune(candidate_configs, named_args, **kwargs):
        TP, NP = kwargs["TP"], kwargs["NP"]
        rows = configs.forward_resources(kwargs.get("WEIGHTED", False), kwargs.get("RELAXED", False)) \
            if kernel == "forward" else kernel
        major, minor = torch.cuda.get_device_capability(named_args["V"].device)
        dtype = _DTYPE_NAMES[named_args["V"].dtype]
        allowed = (configs.usable_configs(10 * major + minor, rows, dtype, TP, NP)
                   or configs.candidates(TP, NP, dtype))
        allowed = set(allowed)
        return [c for c in candidate_configs
                if configs.TileConfig(c.kwargs["BB"], c.kwargs["BA"], c.num_warps, c.num_stages) in allowed]

    return prune


def _autotune_configs(kernel: str) -> list:
    # The forward maps its pairs onto the accumulator's warps: it reads num_warps as NW too.
    extra = (lambda c: dict(NW=c.num_warps)) if kernel == "forward" else (lambda c: {})
    return [triton.Config(dict(BB=c.BB, BA=c.BA, **extra(c)), num_warps=c.num_warps, num_stages=c.num_stages)
            for c in configs.CANDIDATES]


# The forward's variants (kernels.py flags) keep live different values: each is tuned on its own.
_KEY = ["T", "N", "d", "B_KEY", "A_KEY", "FIXED", "LOG_DOMAIN", "WEIGHTED", "RELAXED", "POTENTIALS"]


def _autotuning() -> bool:
    return not interpreting() and os.environ.get(AUTOTUNE_ENV, "1") != "0" and not os.environ.get(TILE_ENV)


def _kernels():
    """(forward, weights), autotuned unless interpreting or told not to. Built on first use."""
    return _kernel_pair(_autotuning())


@functools.cache
def _kernel_pair(autotune: bool):
    if not autotune:
        return od_forward_kernel, od_weights_kernel

    def tune(kernel, name):
        return triton.autotune(configs=_autotune_configs(name), key=_KEY,
                               prune_configs_by={"early_config_prune": _prune(name)})(kernel)

    return tune(od_forward_kernel, "forward"), tune(od_weights_kernel, "weights")


def _meta(kernel: str, x: torch.Tensor, T: int, N: int, d: int, rows: str | None = None) -> dict:
    """The launch's tile (unless autotuned): OST_KERNELS_TRITON_TILE's, else the interpreter's
    small one, else configs.default_config."""
    TP, NP = configs.pow2(T), configs.pow2(N)
    meta = dict(TP=TP, NP=NP, BD=BD, EVEN_K=d % BD == 0)
    if _autotuning():
        return meta
    if os.environ.get(TILE_ENV):
        try:
            tile = configs.by_name(os.environ[TILE_ENV], TP, NP)
        except ValueError as exc:
            raise ValueError(f"{TILE_ENV}: {exc}") from None
    elif interpreting():
        tile = configs.interpreter_tile(TP, NP)
    else:
        major, minor = torch.cuda.get_device_capability(x.device)
        tile = configs.default_config(10 * major + minor, rows or kernel, _DTYPE_NAMES[x.dtype], TP, NP)
    meta.update(BB=tile.BB, BA=tile.BA, **({"NW": tile.num_warps} if kernel == "forward" else {}))
    if not interpreting():  # the interpreter takes no launch options
        meta.update(num_warps=tile.num_warps, num_stages=tile.num_stages)
    return meta


def _kernel_options(dtype: torch.dtype) -> dict:
    # float32 keeps full precision unless the user opted in to TF32 the PyTorch way.
    precision = "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
    return dict(INTERPRETED=interpreting(), INPUT_PRECISION=precision)


def _grid(B: int, A: int):
    # Class tiles on axis 0 (up to 2^31 - 1), video tiles on axis 1 (up to configs.MAX_VIDEO_TILES:
    # backend "triton" refuses larger B before a launch).
    return lambda meta: (triton.cdiv(A, meta["BA"]), triton.cdiv(B, meta["BB"]))


@triton_op("ost_kernels::od_forward_triton_fused", mutates_args=(), schema=FORWARD_SCHEMA)
def od_forward_fused(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, *scalars):
    """Same contract as ost_kernels::od_forward: scores (B, A), f (B, A, T), g (B, A, N),
    iterations (B, A) int32, error (B, A), all float32, and an empty cache (the backward
    recomputes the sims inside its weights kernel). frame_weights (B, T) / desc_weights (A, N)
    or None, with zero-weight entries already folded into the masks (od_solve does); the
    solver scalars in the contract's order (reg_frames / reg_desc: rho of each side, inf =
    exact)."""
    s = OpScalars(*scalars)
    check_forward_args(s, frame_mask, desc_mask, "ost_kernels::od_forward_triton_fused")
    eps, tol, normalize = s.eps, s.tol, s.normalize
    B, T, d = video.shape
    A, N, _ = desc.shape
    scores, f, g, iterations, error, cache = empty_forward_outputs(video, desc, potentials=s.potentials)
    k = KernelScalars.of(s)
    flags = specializations(eps, tol, normalize, sims_from_k=True, weighted=frame_weights is not None or desc_weights is not None,
                            relaxed=k.relaxed)
    forward, _ = _kernels()
    with device_guard(video):
        wrap_triton(forward)[_grid(B, A)](
            video, desc, scales(video, normalize), scales(desc, normalize),
            mask_bytes(frame_mask, video), mask_bytes(desc_mask, desc),
            weight_rows(frame_weights, video, flags["WEIGHTED"]), weight_rows(desc_weights, desc, flags["WEIGHTED"]),
            scores, f, g, iterations, error,
            B, A, T, N, d,
            *video.stride(), *desc.stride(),
            *k,
            size_bucket(B, 1024), size_bucket(A, 1 << 16),
            POTENTIALS=s.potentials, **flags, **_kernel_options(video.dtype), **_meta("forward", video, T, N, d, configs.forward_resources(flags["WEIGHTED"], flags["RELAXED"])),
        )
    return scores, f, g, iterations, error, cache


@triton_op("ost_kernels::od_backward_triton_fused", mutates_args=(), schema=BACKWARD_SCHEMA)
def od_backward_fused(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache, eps, normalize, video_grad,
                       desc_grad):
    """Gradients of video (B, T, d) and desc (A, N, d) with the plan held constant; a side not
    asked for is not computed (zero-size result). See the module doc for the scheme."""
    check_op_scalars(eps, None, None, "ost_kernels::od_backward_triton_fused")
    B, T, d = video.shape
    A, N, _ = desc.shape
    if not (video_grad or desc_grad):
        return not_requested(video), not_requested(desc)
    grad_scores = grad_scores.to(torch.float32).contiguous()
    f, g = f.contiguous(), g.contiguous()
    fm, dm = mask_bytes(frame_mask, video), mask_bytes(desc_mask, desc)
    vs, ds = scales(video, normalize), scales(desc, normalize)
    grads = PlanGradients(video, desc, fm, dm, normalize, video_grad, desc_grad)
    _, weights = _kernels()
    chunk = max(1, min(A, WEIGHTS_CHUNK_ELEMENTS // max(1, B * T * N)))
    with device_guard(video):
        for a0 in range(0, A, chunk):
            na = min(chunk, A - a0)
            w = torch.empty(B * T, na * N, dtype=video.dtype, device=video.device)
            wrap_triton(weights)[_grid(B, na)](
                video, desc, vs, ds, fm, dm, grad_scores, f, g, w,
                B, A, T, N, d, a0, na,
                *video.stride(), *desc.stride(), w.stride(0),
                LOG2E / eps,
                size_bucket(B, 1024), size_bucket(na, 1 << 16),
                **_kernel_options(video.dtype), **_meta("weights", video, T, N, d),
            )
            grads.add(w, slice(a0 * N, (a0 + na) * N))
    return grads.result()


register_autograd("ost_kernels::od_forward_triton_fused", od_backward_fused)
