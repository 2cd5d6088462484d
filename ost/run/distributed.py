"""Several processes (torchrun): rank, device, gathering, gradient averaging, and the sampler
that gives each rank its share of every global batch.

Outside torchrun everything here is a world of one and costs nothing.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Distributed:
    """Rank, world size and device; a no-op world of one outside torchrun."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate x over ranks along dim 0, with gradients flowing back to each rank."""
        if self.world == 1:
            return x
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x.contiguous()), dim=0)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if flag is True on any."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def average_gradients(self, params) -> None:
        if self.world == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def close(self):
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class EpochSampler(torch.utils.data.Sampler):
    """This rank's share of a seeded per-epoch permutation, from position `start` on (resume).

    Yields (epoch, index) pairs: loader workers that persist across epochs hold their own copy
    of the dataset, so the epoch (which seeds each clip's random draws) travels with the index."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int, seed: int):
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.epoch, self.start = 0, 0

    def global_order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        usable = self.n // (self.batch_size * self.world) * self.batch_size * self.world  # whole global batches
        return perm[:usable]

    def __iter__(self):
        order = self.global_order()
        per_batch = self.batch_size * self.world
        for b in range(self.start, len(order) // per_batch):
            chunk = order[b * per_batch : (b + 1) * per_batch]
            for index in chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]:
                yield self.epoch, index

    def __len__(self) -> int:
        return (len(self.global_order()) // (self.batch_size * self.world) - self.start) * self.batch_size

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)


def loader_workers(requested: int | None, world: int) -> int:
    """Loader processes per rank: as asked, or by default this machine's cores shared among the
    ranks on it, at most 8 (decoding and cropping a clip takes a core; see docs/ost.md)."""
    if requested is not None:
        if requested < 0:
            raise ValueError(f"num_workers must be >= 0, got {requested}")
        return requested
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return min(8, max(1, (os.cpu_count() or 1) // max(1, local_world)))
