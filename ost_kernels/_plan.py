"""The plan math every PyTorch-side path shares: the backend "torch", od_plan, the implicit
backward and the Triton launchers. Nothing here is a backend; backends/ imports from here,
never the other way (tests/test_layout.py keeps it so).

Shapes: video (B, T, d), desc (A, N, d); a chunk of `a` classes at a time, so memory stays
bounded whatever A is. Potentials f (B, A, T), g (B, A, N) in natural units, P_ij =
exp((f_i + g_j - C_ij) / eps) with C = 1 - sim.
"""
from __future__ import annotations

import torch

from ._cosine import unit

# Upper bound on the elements of one (B, a, T, N) chunk: 16M floats, 64 MiB in float32.
MAX_CHUNK_ELEMENTS = 1 << 24


def class_chunk(B: int, A: int, T: int, N: int) -> int:
    """How many classes one chunk holds so that B * a * T * N <= MAX_CHUNK_ELEMENTS."""
    return max(1, min(A, MAX_CHUNK_ELEMENTS // max(1, B * T * N)))


def valid_entries(mask: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor | None:
    """The entries that carry mass: the mask's valid ones, less those of weight 0."""
    if weights is None:
        return mask
    positive = weights > 0
    return positive if mask is None else mask & positive


def damping(eps: float, reg: float) -> float:
    """tau = rho / (rho + eps) of a relaxed side; 1 for an exact one (rho = inf)."""
    return 1.0 if reg == float("inf") else reg / (reg + eps)


def pair_masks(frame_mask, desc_mask, B, a, T, N, device):
    """Valid rows (B, 1, T), valid columns (1, a, N), valid entries (B, a, T, N) or None."""
    rows = frame_mask[:, None, :] if frame_mask is not None else torch.ones(B, 1, T, dtype=torch.bool, device=device)
    cols = desc_mask[None, :, :] if desc_mask is not None else torch.ones(1, a, N, dtype=torch.bool, device=device)
    entries = None
    if frame_mask is not None or desc_mask is not None:
        entries = rows[..., :, None] & cols[..., None, :]
    return rows, cols, entries


def scaled_cost(sim: torch.Tensor, entries, eps: float) -> torch.Tensor:
    """Z = -C / eps for (B, a, T, N) sims, -inf where an entry is masked (no mass there)."""
    z = (sim - 1.0) / eps
    return z if entries is None else z.masked_fill(~entries, float("-inf"))


def units(video, desc, frame_mask, desc_mask, normalize: bool):
    """Unit (or raw) embeddings in the compute dtype, zeroed where masked so that whatever a
    masked row holds (padding, even NaN) never reaches a score or a gradient."""
    vn, dn = unit(video, normalize), unit(desc, normalize)
    if frame_mask is not None:
        vn = vn.masked_fill(~frame_mask[..., None], 0.0)
    if desc_mask is not None:
        dn = dn.masked_fill(~desc_mask[..., None], 0.0)
    return vn, dn


def sims(vn: torch.Tensor, dn_chunk: torch.Tensor) -> torch.Tensor:
    """(B, T, d) x (a, N, d) -> (B, a, T, N) dot products."""
    return torch.einsum("btd,and->batn", vn, dn_chunk)


def plan_from_potentials(video, desc, frame_mask, desc_mask, f, g, eps: float, normalize: bool):
    """Transport plans (B, A, T, N) from potentials f (B, A, T), g (B, A, N); 0 where masked."""
    vn, dn = units(video, desc, frame_mask, desc_mask, normalize)
    B, T, _ = video.shape
    A, N, _ = desc.shape
    _, _, entries = pair_masks(frame_mask, desc_mask, B, A, T, N, video.device)
    z = scaled_cost(sims(vn, dn), entries, eps)
    return torch.exp(z + (f / eps)[..., :, None] + (g / eps)[..., None, :])
