"""Large class counts: chunked evaluation equals unchunked; class-sharded logits, loss and
gradients over two gloo processes equal the single-process computation over all classes."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ost.model.large_classes import chunk_for_budget, chunked_topk, shard_range, sharded_cross_entropy
from ost.model.logits import DescriptorEmbeddings, ODLogitsConfig, od_logits


def _embeddings(seed=0, B=6, T=5, A=23, N=4, d=16):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(B, T, d, generator=g)
    masks = [torch.rand(A, N, generator=g) < 0.7 for _ in range(2)]
    for m in masks:
        m[:, 0] = True
    desc = DescriptorEmbeddings(torch.randn(A, N, d, generator=g), masks[0], torch.randn(A, N, d, generator=g), masks[1])
    labels = torch.randint(0, A, (B,), generator=g)
    return frames, desc, labels


@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 1000])
def test_chunked_topk_equals_unchunked(chunk):
    frames, desc, _ = _embeddings()
    full = od_logits(frames, desc, 10.0)
    want_v, want_i = full.topk(5, dim=1)
    got_v, got_i = chunked_topk(frames, desc, 10.0, k=5, chunk=chunk)
    torch.testing.assert_close(got_v, want_v, rtol=1e-6, atol=1e-6)
    assert torch.equal(got_i, want_i)


def test_memory_budget_sets_the_chunk():
    frames, desc, _ = _embeddings()
    assert chunk_for_budget(6, 5, 4, 6 * 4 * (5 + 16) * 3) == 3
    v, i = chunked_topk(frames, desc, 10.0, k=3, memory_budget=2000)
    assert torch.equal(i, od_logits(frames, desc, 10.0).topk(3, dim=1).indices)


def test_shards_cover_the_classes():
    ranges = [shard_range(23, r, 4) for r in range(4)]
    assert ranges == [(0, 6), (6, 12), (12, 18), (18, 23)]


def _sharded_worker(rank, world, out_dir):
    # A file rendezvous: no TCP port to race for.
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        frames, desc, labels = _embeddings()
        B, A = frames.shape[0], desc.num_classes
        rows = slice(rank * B // world, (rank + 1) * B // world)  # this rank's videos
        start, stop = shard_range(A, rank, world)                  # this rank's classes
        local_frames = frames[rows].clone().requires_grad_(True)
        local_desc = DescriptorEmbeddings(desc.spatio[start:stop].clone().requires_grad_(True),
                                          desc.spatio_mask[start:stop],
                                          desc.temporal[start:stop].clone().requires_grad_(True),
                                          desc.temporal_mask[start:stop])
        from torch.distributed.nn.functional import all_gather

        all_frames = torch.cat(all_gather(local_frames), 0)
        logits = od_logits(all_frames, local_desc, 10.0, ODLogitsConfig())
        loss = sharded_cross_entropy(logits, labels, start)
        loss.backward()
        torch.save({"rank": rank, "rows": (rows.start, rows.stop), "classes": (start, stop),
                    "logits": logits.detach(), "loss": loss.detach(), "grad_frames": local_frames.grad,
                    "grad_spatio": local_desc.spatio.grad, "grad_temporal": local_desc.temporal.grad},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks done with every collective before either tears gloo down: without it a
        # rank sometimes died at exit ("terminate called without an active exception", SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_class_sharding_matches_one_process(tmp_path):
    world = 2
    mp.spawn(_sharded_worker, args=(world, str(tmp_path)), nprocs=world, join=True)
    frames, desc, labels = _embeddings()
    frames.requires_grad_(True)
    desc.spatio.requires_grad_(True)
    desc.temporal.requires_grad_(True)
    logits = od_logits(frames, desc, 10.0, ODLogitsConfig())
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        (r0, r1), (c0, c1) = got["rows"], got["classes"]
        torch.testing.assert_close(got["logits"], logits.detach()[:, c0:c1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-6, atol=1e-7)
        # Every rank backpropagates the same loss, so each local gradient is world x the true
        # one; ost.run.train's gradient averaging divides it back out.
        torch.testing.assert_close(got["grad_frames"] / world, frames.grad[r0:r1], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got["grad_spatio"] / world, desc.spatio.grad[c0:c1], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got["grad_temporal"] / world, desc.temporal.grad[c0:c1], rtol=1e-5, atol=1e-7)


def test_without_a_process_group_it_is_cross_entropy():
    logits = torch.randn(4, 9)
    labels = torch.tensor([0, 3, 8, 3])
    torch.testing.assert_close(sharded_cross_entropy(logits, labels, 0), F.cross_entropy(logits, labels))
