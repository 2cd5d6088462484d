"""Random test inputs: embeddings with a spread of cosines, arbitrary norms, and masks."""
from __future__ import annotations

import torch


def embeddings(shape, d: int, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """(*shape, d) vectors with cosines spread over roughly [-0.3, 0.9] and norms in [0.5, 3]."""
    shared = torch.randn(d, generator=gen, dtype=torch.float64)
    x = torch.randn(*shape, d, generator=gen, dtype=torch.float64) + 0.7 * shared
    x = x / x.norm(dim=-1, keepdim=True)
    x = x * (0.5 + 2.5 * torch.rand(*shape, 1, generator=gen, dtype=torch.float64))
    return x.to(dtype)


def mask(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """(rows, cols) bool with varied valid counts per row (each row at least one True)."""
    keep = torch.rand(rows, cols, generator=gen) < torch.rand(rows, 1, generator=gen)
    first = torch.randint(0, cols, (rows,), generator=gen)
    keep[torch.arange(rows), first] = True
    return keep


def case(B, A, T, N, d, gen, dtype=torch.float32, masks=False):
    """video (B, T, d), desc (A, N, d), frame_mask (B, T) or None, desc_mask (A, N) or None."""
    video = embeddings((B, T), d, gen, dtype)
    desc = embeddings((A, N), d, gen, dtype)
    if not masks:
        return video, desc, None, None
    return video, desc, mask(B, T, gen), mask(A, N, gen)
