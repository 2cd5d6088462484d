"""What the Triton launchers share (ops.py: the two-phase path; fused.py: the fused kernels):
the per-row inverse norms, masks and weights as the kernels read them, the launch's device,
and float32-output GEMMs."""
from __future__ import annotations

from typing import NamedTuple

import torch

from .._cosine import unit, unit_backward
from .._plan import damping
from ..constants import LN2, LOG2E, NORM_EPS, SCALING_MAX_EPS
from ..contract import not_requested

# Normalized sims are cosines, so a pair's spread hi - lo is at most 2 (plus rounding, << 1%):
# from this eps on, 2 / eps <= 64 / 1.01 and every pair is safe for the scaling form, so the
# forward is compiled without its log-domain path (kernels.py, LOG_DOMAIN).
ALWAYS_SAFE_EPS = 2 * 1.01 / 64


class KernelScalars(NamedTuple):
    """The solver scalars both Sinkhorn kernels take after their tensors, in their order
    (kernels.py's od_forward_kernel, sinkhorn.py's od_sinkhorn_kernel): written here once for
    both launchers, so a new solver scalar touches one launch file."""

    scale2: float   # log2(e) / eps: exponents in base 2
    eps_ln2: float  # eps ln 2: potentials back in natural units
    max_iter: int
    tol: float
    tau_f: float    # each side's damping rho / (rho + eps); 1 = exact marginal
    tau_d: float

    @classmethod
    def of(cls, s) -> "KernelScalars":
        """From an op's OpScalars (contract.py)."""
        return cls(LOG2E / s.eps, s.eps * LN2, s.max_iter, s.tol, damping(s.eps, s.reg_frames),
                   damping(s.eps, s.reg_desc))

    @property
    def relaxed(self) -> bool:
        return (self.tau_f, self.tau_d) != (1.0, 1.0)


def scales(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(rows,) float32 factors that turn the rows of x (..., d) into what the sims use:
    1 / max(||x||, NORM_EPS) when normalizing (once per call, not per tile), else 1."""
    rows = x.shape[0] * x.shape[1]
    if not normalize:
        return torch.ones(rows, dtype=torch.float32, device=x.device)
    norms = torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32)
    return (1.0 / norms.clamp_min(NORM_EPS)).reshape(rows)


def mask_bytes(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    # The kernels read masks as contiguous int8 (1 = valid); without a mask, all ones.
    if mask is None:
        return torch.ones(like.shape[0] * like.shape[1], dtype=torch.int8, device=like.device)
    return mask.to(torch.int8).reshape(-1).contiguous()


def weight_rows(weights: torch.Tensor | None, like: torch.Tensor, weighted: bool) -> torch.Tensor:
    """The kernels read weights as contiguous float32 (rows,). A side without weights, when the
    other has them (WEIGHTED reads both sides), gets ones, one per row of `like`; without
    weights on either side a one-element placeholder that WEIGHTED = False never reads."""
    if weights is None:
        rows = like.shape[0] * like.shape[1] if weighted else 1
        return torch.ones(rows, dtype=torch.float32, device=like.device)
    return weights.to(torch.float32).reshape(-1).contiguous()


def device_guard(t: torch.Tensor):
    # Launch on the inputs' GPU, whichever is current.
    return torch.cuda.device(t.device) if t.is_cuda else _NoGuard()


class _NoGuard:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def matmul_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with float32 results: low-precision operands on tensor cores where the device
    has them (float32 accumulation), float32 math elsewhere."""
    if a.is_cuda and a.dtype != torch.float32:
        return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


def mm_f32_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out = a @ b, out float32 and contiguous: bf16 / fp16 operands on tensor cores with
    float32 accumulation and output (cuBLAS through torch.mm's out_dtype), float32 math
    elsewhere (CPU tensors under the interpreter)."""
    if a.is_cuda and a.dtype != torch.float32:
        return torch.mm(a, b, out_dtype=torch.float32, out=out)
    if a.dtype != torch.float32:
        a, b = a.float(), b.float()
    return torch.mm(a, b, out=out)


def specializations(eps: float, tol: float, normalize: bool, sims_from_k: bool, weighted: bool = False,
                    relaxed: bool = False) -> dict:
    """A forward's compile-time specializations for a call (kernels.py's _solve_pairs): FIXED
    when tol = 0 (every pair runs max_iter iterations: no stop rule in the loop), LOG_DOMAIN
    unless every pair is known to be safe for the scaling form (cosines with eps >=
    ALWAYS_SAFE_EPS, and with sims_from_k, the fused kernel's, eps <= SCALING_MAX_EPS; always
    with a relaxed side: its pairs may fall back to the log domain), WEIGHTED with frame or
    descriptor weights, RELAXED with a relaxed side (reg_m). FIXED and LOG_DOMAIN give results
    bitwise equal to the general kernel's (tests/kernels/test_triton_tiles.py); the weights and
    the damping are runtime values, so these four flags are all of a kernel's variants."""
    scaling_only = normalize and eps >= ALWAYS_SAFE_EPS and (not sims_from_k or eps <= SCALING_MAX_EPS)
    return dict(FIXED=tol <= 0, LOG_DOMAIN=relaxed or not scaling_only, WEIGHTED=weighted, RELAXED=relaxed)


class PlanGradients:
    """The plan backward's GEMMs, shared by both Triton backwards: for each chunk of columns
    (classes a0..a0 + na, N descriptors each) of the weights W = grad * P (B * T, na * N) in the
    input dtype, grad unit(video) += W @ unit(desc)[cols] and grad unit(desc)[cols] = W^T @
    unit(video), float32 accumulation, only the sides asked for; then back through the
    normalization. The unit rows are in the input dtype (the GEMM operands), zero where masked
    (fm, dm: mask_bytes)."""

    def __init__(self, video, desc, fm, dm, normalize: bool, video_grad: bool, desc_grad: bool):
        (B, T, d), (A, N, _) = video.shape, desc.shape
        self.video, self.desc, self.normalize = video, desc, normalize
        self.vn = unit(video, normalize).masked_fill(fm.view(B, T, 1) == 0, 0).to(video.dtype).reshape(B * T, d)
        self.dn = unit(desc, normalize).masked_fill(dm.view(A, N, 1) == 0, 0).to(desc.dtype).reshape(A * N, d)
        f32 = dict(dtype=torch.float32, device=video.device)
        self.grad_vn = torch.zeros(B * T, d, **f32) if video_grad else None
        self.grad_dn = torch.empty(A * N, d, **f32) if desc_grad else None

    def add(self, w: torch.Tensor, cols: slice) -> None:
        if self.grad_vn is not None:
            self.grad_vn += matmul_f32(w, self.dn[cols])
        if self.grad_dn is not None:
            self.grad_dn[cols] = matmul_f32(w.t(), self.vn)

    def result(self):
        """(grad video (B, T, d), grad desc (A, N, d)), zero-size where not asked for."""
        v, dsc = self.video, self.desc
        return (unit_backward(v, self.grad_vn.view(v.shape), self.normalize) if self.grad_vn is not None
                else not_requested(v),
                unit_backward(dsc, self.grad_dn.view(dsc.shape), self.normalize) if self.grad_dn is not None
                else not_requested(dsc))
