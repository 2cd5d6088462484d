"""Evaluation and a training step against the class count (A up to 20,000 on the CPU,
100,000 on a GPU), time and peak extra memory.

* eval: top-5 over all classes with class-chunked OD logits (ost.model.large_classes.chunked_topk,
  1024 classes a chunk): memory stays flat as A grows.
* train-step: cross-entropy over all classes (ost.model.large_classes.sharded_cross_entropy on one
  rank) with backward to the frame embeddings: memory grows with B * A (the logits and the
  potentials kept for backward).
B = 8 videos, T = 8 frames, N = 4 descriptors, d = 512; descriptor embeddings precomputed.
"""
import pytest
import torch

from conftest import record
from memory import peak_extra_bytes
from ost.model.large_classes import chunked_topk, sharded_cross_entropy
from ost.model.logits import DescriptorEmbeddings, od_logits

B, T, N, D = 8, 8, 4, 512


def _classes(device):
    return (1000, 5000, 20000, 100000) if device.type == "cuda" else (1000, 5000, 20000)


def _inputs(A, device):
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(B, T, D, generator=g).to(device)
    mask = torch.ones(A, N, dtype=torch.bool, device=device)
    desc = DescriptorEmbeddings(torch.randn(A, N, D, generator=g).to(device), mask,
                                torch.randn(A, N, D, generator=g).to(device), mask)
    return frames, desc, torch.randint(0, A, (B,), generator=g).to(device)


@pytest.mark.parametrize("kind", ["eval", "train-step"])
@pytest.mark.parametrize("A", [1000, 5000, 20000, 100000])
def test_large_class_counts(benchmark, kind, A, bench_device):
    if A not in _classes(bench_device):
        pytest.skip(f"A={A} is for GPUs")
    frames, desc, labels = _inputs(A, bench_device)
    sync = torch.cuda.synchronize if bench_device.type == "cuda" else (lambda: None)

    def run():
        if kind == "eval":
            out = chunked_topk(frames, desc, 10.0, k=5, chunk=1024)
        else:
            f = frames.clone().requires_grad_(True)
            out = sharded_cross_entropy(od_logits(f, desc, 10.0), labels, 0)
            out.backward()
        sync()
        return out

    _, peak = peak_extra_bytes(run, bench_device)
    group = f"large {kind} A{A}"
    benchmark.group = group
    benchmark.pedantic(run, rounds=1 if A >= 20000 else 3, iterations=1, warmup_rounds=0)
    record(group, "ost", benchmark, peak)
