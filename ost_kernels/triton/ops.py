"""Backend "triton", the main GPU path, in two phases per chunk of classes:

  1. one GEMM of the raw inputs with float32 output, S (B * T, na * N) = video rows @ the
     chunk's descriptor rows^T (cuBLAS through torch.mm: bf16 / fp16 operands on tensor cores),
     into a buffer reused by every chunk; nothing is normalized, cast or masked ahead of it;
  2. one Triton launch (sinkhorn.py's od_sinkhorn_kernel) that solves every (video, class)
     pair of the chunk from S: inverse norms applied on load, masks, weights, relaxed
     marginals, per-pair stop, scores, potentials, iterations, errors.

The chunk holds the classes whose float32 sims fit chunk_mb MiB (od_solve's chunk_mb, else the
environment variable OST_KERNELS_CHUNK_MB, else options.DEFAULT_CHUNK_MB = 24: about half of
an H100 / H200's 50 MB L2, so the sims the GEMM writes are still in L2 when the kernel reads
them; the backward, whose op takes no chunk size, uses the variable or the default). The extra memory is that buffer, whatever A is. The backward redoes phase 1 chunk by
chunk, writes the weights grad_scores * P in the input dtype (od_chunk_weights_kernel) and turns
them into gradients with two GEMMs (float32 output), only the sides asked for.

Registered as custom ops (torch.library.triton_op) with the contract's schema, so that
torch.compile traces them, with the contract's autograd. Imported the first time backend
"triton" is asked for, never at package import. Under TRITON_INTERPRET=1 the kernels run on CPU
tensors (the GEMM in float32 on the CPU), which is how the tests run them.
"""
from __future__ import annotations

import torch
import triton
from torch.library import triton_op, wrap_triton

from .._env import triton_interpreting as interpreting
from ..constants import LOG2E
from ..options import CHUNK_ENV, DEFAULT_CHUNK_MB, resolve_chunk_mb  # noqa: F401 (the tests read them here)
from ..contract import (BACKWARD_SCHEMA, FORWARD_SCHEMA, OpScalars, check_forward_args, check_op_scalars,
                        empty_forward_outputs, not_requested, register_autograd)
from . import configs
from .launch import (KernelScalars, PlanGradients, device_guard, mask_bytes, mm_f32_into, scales, specializations,
                     weight_rows)
from .sinkhorn import od_chunk_weights_kernel, od_sinkhorn_kernel

# Entries of a pair's block a lane holds at most (registers: 64 of X, 64 of the sims).
ENTRIES_PER_LANE = 64
MAX_CLASSES_PER_PROGRAM = 1024
MAX_CLASSES_PER_LANE = 8
INTERPRETER_CLASSES_PER_PROGRAM = 4  # small, so the tests' problems span several programs
NUM_WARPS = 4
# The backward's weights kernel: a video's TP frames x BC columns a program, this many entries.
WEIGHTS_ENTRIES = 4096
INTERPRETER_WEIGHTS_COLUMNS = 8


def _t_lo_first() -> bool:
    """Which 5-D order of the Sinkhorn kernel's block puts its pairs' frames on few lanes with
    the installed Triton (sinkhorn._pairs): Triton 3.6 gives the first dimensions of no
    contiguity the lanes first, 3.8 the last ones (both read from their compiled layouts)."""
    major, minor = (int(x) for x in triton.__version__.split(".")[:2])
    return (major, minor) < (3, 7)


T_LO_FIRST = _t_lo_first()


def weights_columns(TP: int) -> int:
    """BC: the columns (a * N + j) a program of the weights kernel writes, a power of two."""
    if interpreting():
        return INTERPRETER_WEIGHTS_COLUMNS
    return max(16, WEIGHTS_ENTRIES // TP)


def chunk_classes(B: int, T: int, N: int, A: int, mb: float) -> int:
    """Classes per chunk: as many as keep B * T * classes * N float32 sims within mb MiB (at
    least one, at most A)."""
    return max(1, min(A, int(mb * 2**20) // (4 * B * T * N)))


def program_tile(TP: int, NP: int, na: int, lean: bool = True, interpreted: bool | None = None) -> tuple[int, int]:
    """(T_LO, BA): the lanes a pair's frames spread over and the classes a program solves.
    A lane holds up to ENTRIES_PER_LANE of a pair's TP x NP block: 64 on the lean path (no
    masks, weights or log domain: `lean`), 32 where the kernel keeps more per entry (the log
    domain keeps the sims beside X, and spilled at 64); T_LO = 2 lanes at the key shape, more
    for larger blocks, up to a warp (a log-domain pair of more than 32 x 32 entries then holds
    more than 32 a lane, and spills registers: slower, still exact). BA fills NUM_WARPS warps
    with pairs (a power of two, fewer where the chunk has fewer classes). SASS per pair at the
    key shape: benchmarks/triton_cost.py."""
    per_lane = ENTRIES_PER_LANE if lean else ENTRIES_PER_LANE // 2
    t_lo = min(TP, 32, max(2, TP * NP // per_lane))
    if interpreting() if interpreted is None else interpreted:
        return t_lo, min(INTERPRETER_CLASSES_PER_PROGRAM, configs.pow2(na))
    # Each class a lane holds keeps its own per-pair values too: at most MAX_CLASSES_PER_LANE.
    classes_per_lane = max(1, min(MAX_CLASSES_PER_LANE, per_lane // max(1, TP * NP // t_lo)))
    return t_lo, max(1, min(MAX_CLASSES_PER_PROGRAM, configs.pow2(na), classes_per_lane * (32 // t_lo) * NUM_WARPS))


@triton_op("ost_kernels::od_forward_triton", mutates_args=(), schema=FORWARD_SCHEMA)
def od_forward_triton(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, *scalars):
    """Same contract as ost_kernels::od_forward: scores (B, A), f (B, A, T), g (B, A, N),
    iterations (B, A) int32, error (B, A), all float32, and an empty cache (the backward redoes
    the GEMM). Weights with zero-weight entries folded into the masks (od_solve does)."""
    s = OpScalars(*scalars)
    check_forward_args(s, frame_mask, desc_mask, "ost_kernels::od_forward_triton")
    B, T, d = video.shape
    A, N, _ = desc.shape
    scores, f, g, iterations, error, cache = empty_forward_outputs(video, desc, potentials=s.potentials)
    k = KernelScalars.of(s)
    weighted = frame_weights is not None or desc_weights is not None
    flags = specializations(s.eps, s.tol, s.normalize, sims_from_k=False, weighted=weighted, relaxed=k.relaxed)
    TP, NP = configs.pow2(T), configs.pow2(N)
    v2, d2 = video.reshape(B * T, d), desc.reshape(A * N, d)
    vs, ds = scales(video, s.normalize), scales(desc, s.normalize)
    fm, dm = mask_bytes(frame_mask, video), mask_bytes(desc_mask, desc)
    fw, dw = weight_rows(frame_weights, video, weighted), weight_rows(desc_weights, desc, weighted)
    step = chunk_classes(B, T, N, A, resolve_chunk_mb(s.chunk_mb))
    buffer = torch.empty(B * T * step * N, dtype=torch.float32, device=video.device)
    masked = frame_mask is not None or desc_mask is not None
    dense = not (masked or weighted) and (T, N) == (TP, NP)
    launch = dict(N=N, INTERPRETED=interpreting(), POTENTIALS=s.potentials, MASKED=masked, DENSE=dense, TP=TP, NP=NP,
                  T_LO_FIRST=T_LO_FIRST, **flags)
    if not interpreting():
        launch["num_warps"] = NUM_WARPS
    with device_guard(video):
        for a0 in range(0, A, step):
            na = min(step, A - a0)
            sims = buffer[: B * T * na * N].view(B * T, na * N)
            mm_f32_into(sims, v2, d2[a0 * N:(a0 + na) * N].t())
            t_lo, BA = program_tile(TP, NP, na, lean=dense and not flags["LOG_DOMAIN"])
            a_tiles = triton.cdiv(na, BA)
            wrap_triton(od_sinkhorn_kernel)[(B, a_tiles)](
                sims, na * N, vs, ds, fm, dm, fw, dw, scores, f, g, iterations, error,
                A, T, na, a0, *k,
                BA=BA, T_LO=t_lo, **launch,
            )
    return scores, f, g, iterations, error, cache


@triton_op("ost_kernels::od_backward_triton", mutates_args=(), schema=BACKWARD_SCHEMA)
def od_backward_triton(grad_scores, video, desc, frame_mask, desc_mask, f, g, cache, eps, normalize, video_grad,
                       desc_grad):
    """Gradients of video (B, T, d) and desc (A, N, d) with the plan held constant; a side not
    asked for is not computed (zero-size result). Chunks of classes as the forward's (module
    doc), summed in a fixed order: results are deterministic."""
    check_op_scalars(eps, None, None, "ost_kernels::od_backward_triton")
    B, T, d = video.shape
    A, N, _ = desc.shape
    if not (video_grad or desc_grad):
        return not_requested(video), not_requested(desc)
    grad_scores = grad_scores.to(torch.float32).contiguous()
    f, g = f.contiguous(), g.contiguous()
    fm, dm = mask_bytes(frame_mask, video), mask_bytes(desc_mask, desc)
    vs, ds = scales(video, normalize), scales(desc, normalize)
    v2, d2 = video.reshape(B * T, d), desc.reshape(A * N, d)
    grads = PlanGradients(video, desc, fm, dm, normalize, video_grad, desc_grad)
    step = chunk_classes(B, T, N, A, resolve_chunk_mb())
    buffer = torch.empty(B * T * step * N, dtype=torch.float32, device=video.device)
    weights = torch.empty(B * T * step * N, dtype=video.dtype, device=video.device)
    TP = configs.pow2(T)
    BC = weights_columns(TP)
    launch = {} if interpreting() else dict(num_warps=NUM_WARPS)
    with device_guard(video):
        for a0 in range(0, A, step):
            na = min(step, A - a0)
            cols = slice(a0 * N, (a0 + na) * N)
            sims = buffer[: B * T * na * N].view(B * T, na * N)
            w = weights[: B * T * na * N].view(B * T, na * N)
            mm_f32_into(sims, v2, d2[cols].t())
            wrap_triton(od_chunk_weights_kernel)[(B, triton.cdiv(na * N, BC))](
                sims, na * N, vs, ds, fm, dm, grad_scores, f, g, w,
                A, T, na, a0, LOG2E / eps,
                N=N, TP=TP, BC=BC, MASKED=frame_mask is not None or desc_mask is not None, **launch,
            )
            grads.add(w, cols)
    return grads.result()


register_autograd("ost_kernels::od_forward_triton", od_backward_triton)
