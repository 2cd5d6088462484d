"""The paper's Optimal Descriptor Solver (OST, CVPR'24, Algorithm 1), kept faithful.

This is the baseline the benchmarks beat. It materializes sim, cost, the Gibbs kernel
K = exp(-C / eps) and the plan for all B * A pairs, runs multiplicative Sinkhorn with batched
matmuls, and stops all pairs together when the mean change of the row scaling is below a
threshold, reading that mean back to the host (`.item()`) every iteration.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def sinkhorn_multiplicative(K: torch.Tensor, u: torch.Tensor, v: torch.Tensor, max_iter: int, thresh: float | None):
    """Scaling-form Sinkhorn on K (P, T, N) with marginals u (P, T), v (P, N); returns the plan.

    thresh=None runs exactly max_iter iterations (no host sync).
    """
    r = torch.ones_like(u)
    c = torch.ones_like(v)
    for _ in range(max_iter):
        r0 = r
        r = u / torch.matmul(K, c.unsqueeze(-1)).squeeze(-1)
        c = v / torch.matmul(K.permute(0, 2, 1).contiguous(), r.unsqueeze(-1)).squeeze(-1)
        if thresh is not None:
            err = (r - r0).abs().mean()
            if err.item() < thresh:
                break
    return torch.matmul(r.unsqueeze(-1), c.unsqueeze(-2)) * K


def od_solve_einops(
    video: torch.Tensor,
    desc: torch.Tensor,
    eps: float = 0.1,
    max_iter: int = 100,
    thresh: float = 1e-2,
    early_stop: bool = True,
    unrolled: bool = False,
) -> torch.Tensor:
    """Scores (B, A) of video (B, T, d) against desc (A, N, d), the paper's way.

    Computes in the input dtype. Gradients flow through sim with the plan held constant (the
    plan is solved under no_grad). early_stop=False runs exactly max_iter iterations.
    unrolled=True: autograd through every Sinkhorn iteration instead (the exact gradient of the
    score as computed, at max_iter times the memory: what methods that unroll do; the baseline
    of grad="implicit" in benchmarks/).
    """
    b = video.shape[0]
    t, n = video.shape[1], desc.shape[1]
    video = F.normalize(video, dim=-1)
    desc = F.normalize(desc, dim=-1)
    sim = torch.einsum("btd,and->batn", video, desc)
    sim = rearrange(sim, "b a t n -> (b a) t n")
    wdist = 1.0 - sim
    xx = torch.full((sim.shape[0], t), 1.0 / t, dtype=sim.dtype, device=sim.device)
    yy = torch.full((sim.shape[0], n), 1.0 / n, dtype=sim.dtype, device=sim.device)
    with torch.set_grad_enabled(unrolled and torch.is_grad_enabled()):
        KK = torch.exp(-wdist / eps)
        plan = sinkhorn_multiplicative(KK, xx, yy, max_iter, thresh if early_stop else None)
    score = torch.sum(plan * sim, dim=(1, 2))
    return rearrange(score, "(b a) -> b a", b=b)
