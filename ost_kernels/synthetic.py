"""Synthetic inputs with CLIP-like similarity statistics, for benchmarks and demos.

The Sinkhorn iteration count depends on the spread of the cosines, so timing on plain
Gaussian vectors (cosines near 0 in high d) would not tell how the solver behaves on real
CLIP features. Here every embedding is a mix of three unit directions:

    x = normalize(sqrt(w_shared) * s + sqrt(w_class) * c_y + sqrt(w_noise) * n)

with s one direction shared by everything (CLIP's embeddings share a large common
component), c_y a direction per class, and n fresh noise. Frames of a video of class y and
descriptors of class y share c_y, so in high d:

    cos(frame, descriptor of another class) ~ w_shared             (0.25 by default)
    cos(frame, descriptor of its own class) ~ w_shared + w_class   (0.60 by default)

which puts the cosines in CLIP's 0.2-0.7 range with separable classes.
"""
from __future__ import annotations

import math

import torch


def clip_like_inputs(
    B: int,
    A: int,
    T: int = 8,
    N: int = 4,
    d: int = 512,
    *,
    w_shared: float = 0.25,
    w_class: float = 0.35,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
):
    """Returns video (B, T, d), desc (A, N, d) (unit rows, in `dtype`) and labels (B,) int64.

    Video b belongs to class labels[b] = b % A; w_shared + w_class must be < 1 (the rest is noise).
    """
    w_noise = 1.0 - w_shared - w_class
    if not (w_shared >= 0 and w_class >= 0 and w_noise > 0):
        raise ValueError(f"clip_like_inputs: need w_shared, w_class >= 0 and w_shared + w_class < 1, got {w_shared}, {w_class}")
    gen = torch.Generator().manual_seed(seed)

    def unit(*shape):
        x = torch.randn(*shape, d, generator=gen)
        return x / x.norm(dim=-1, keepdim=True)

    shared = unit(1)
    classes = unit(A)
    labels = torch.arange(B) % A

    def mix(class_dirs, *shape):
        x = math.sqrt(w_shared) * shared + math.sqrt(w_class) * class_dirs + math.sqrt(w_noise) * unit(*shape)
        return x / x.norm(dim=-1, keepdim=True)

    video = mix(classes[labels][:, None, :], B, T)
    desc = mix(classes[:, None, :], A, N)
    return video.to(device=device, dtype=dtype), desc.to(device=device, dtype=dtype), labels.to(device)
