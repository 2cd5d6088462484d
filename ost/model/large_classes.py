"""OST at large class counts.

* `chunked_topk`: the OD logits of videos against any number of classes, a chunk of classes
  at a time with a running top-k, so memory is bounded by the chunk, not by A. The chunk is
  given, or derived from a memory budget. Results equal the unchunked computation.
* `sharded_cross_entropy`: cross-entropy over all classes when each rank holds the logits of
  its own shard of classes only (the way large-scale classification shards its classifier):
  the softmax is normalized across ranks with an all-reduce of the max and of the sum of
  exponentials, differentiably, so the gradients equal those of one process holding every
  class (with the gradient averaging of ost.run.train).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .logits import DescriptorEmbeddings, ODLogitsConfig, od_logits

def pair_bytes(T: int, N: int) -> int:
    """Bytes one (video, class) pair of a chunk costs, roughly: the solver's potentials f (T)
    and g (N) for each descriptor kind, its scores and the pooled term, in float32."""
    return 4 * (T + 2 * N + 8)


def chunk_for_budget(B: int, T: int, N: int, budget_bytes: int) -> int:
    """Classes per chunk so that one chunk's logits stay within budget_bytes."""
    return max(1, budget_bytes // max(1, B * pair_bytes(T, N)))


@torch.no_grad()
def chunked_topk(frames: torch.Tensor, desc: DescriptorEmbeddings, logit_scale, k: int = 5,
                 config: ODLogitsConfig = ODLogitsConfig(), chunk: int | None = None,
                 memory_budget: int | None = None, frame_mask: torch.Tensor | None = None):
    """(values (B, k), class indices (B, k)) of the top-k OD logits of frames (B, T, d) over all
    classes of desc, computed `chunk` classes at a time."""
    A = desc.num_classes
    k = min(k, A)
    if chunk is None:
        budget = memory_budget if memory_budget is not None else 256 * 2**20
        chunk = chunk_for_budget(frames.shape[0], frames.shape[1], desc.spatio.shape[1], budget)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    best_v = best_i = None
    for a0 in range(0, A, chunk):
        ids = torch.arange(a0, min(A, a0 + chunk), device=frames.device)
        logits = od_logits(frames, desc.select(ids), logit_scale, config, frame_mask)
        v, i = logits.topk(min(k, logits.shape[1]), dim=1)
        i = i + a0
        if best_v is None:
            best_v, best_i = v, i
        else:
            cand_v, cand_i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
            best_v, pos = cand_v.topk(min(k, cand_v.shape[1]), dim=1)
            best_i = cand_i.gather(1, pos)
    return best_v, best_i


def sharded_cross_entropy(local_logits: torch.Tensor, labels: torch.Tensor, class_offset: int,
                          group=None) -> torch.Tensor:
    """Mean cross-entropy over all classes from this rank's logits (B, A_local) of classes
    [class_offset, class_offset + A_local); labels (B,) are global class ids. Every rank gets
    the same loss. Without an initialized process group it is plain cross-entropy."""
    from torch.distributed.nn.functional import all_reduce

    distributed = dist.is_available() and dist.is_initialized()
    logits = local_logits.float()
    m = logits.detach().max(dim=1).values
    if distributed:
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)  # a constant shift: no gradient needed
    sum_exp = torch.exp(logits - m[:, None]).sum(1)
    local = (labels >= class_offset) & (labels < class_offset + logits.shape[1])
    idx = (labels - class_offset).clamp(0, logits.shape[1] - 1)
    target = torch.where(local, logits.gather(1, idx[:, None])[:, 0], torch.zeros_like(m))
    if distributed:
        sum_exp = all_reduce(sum_exp, group=group)
        target = all_reduce(target, group=group)
    return (torch.log(sum_exp) + m - target).mean()


def shard_range(num_classes: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of the classes rank holds: contiguous, sizes differing by at most one."""
    base, extra = divmod(num_classes, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
