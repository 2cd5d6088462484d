"""An independent float64 reference of docs/design.md section 3, written per pair in NumPy.

Deliberately unlike the library's code: NumPy instead of torch, one (video, class) pair at a
time, masked rows and columns dropped instead of carried as -inf, potentials in natural
units (f, g) rather than scaled, and its own normalization and log-sum-exp.
"""
from __future__ import annotations

import numpy as np

NORM_EPS = 1e-12


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _units(x: np.ndarray, normalize: bool) -> np.ndarray:
    if not normalize:
        return x
    n = np.sqrt((x * x).sum(-1, keepdims=True))
    return x / np.maximum(n, NORM_EPS)


def solve_pair(sim: np.ndarray, eps: float, max_iter: int, tol: float):
    """sim (T', N') over valid entries only. Returns score, iterations, final error, plan."""
    cost = 1.0 - sim
    t, n = sim.shape
    log_mu, log_nu = -np.log(t), -np.log(n)
    g = np.zeros(n)
    for it in range(1, max_iter + 1):
        f = eps * log_mu - eps * _lse((g[None, :] - cost) / eps, axis=1)
        g = eps * log_nu - eps * _lse((f[:, None] - cost) / eps, axis=0)
        plan = np.exp((f[:, None] + g[None, :] - cost) / eps)
        err = np.abs(plan.sum(1) - 1.0 / t).sum()
        if tol > 0 and err <= tol:
            break
    return float((plan * sim).sum()), it, float(err), plan


def od_reference(video, desc, frame_mask=None, desc_mask=None, *, eps=0.1, max_iter=100, tol=1e-3,
                 normalize=True, iterations=None):
    """Scores (B, A), iterations (B, A), errors (B, A) and plans (B, A, T, N), all float64 NumPy.

    `iterations` (B, A), if given, runs each pair exactly that many iterations (no stop rule):
    used to compare against a backend whose own stop landed one iteration off at a boundary.
    Inputs may be torch tensors of any dtype; they are taken to float64 as they are.
    """
    v = _units(np.asarray(video.double().cpu()), normalize)
    d = _units(np.asarray(desc.double().cpu()), normalize)
    B, T, _ = v.shape
    A, N, _ = d.shape
    fm = np.ones((B, T), bool) if frame_mask is None else np.asarray(frame_mask.cpu())
    dm = np.ones((A, N), bool) if desc_mask is None else np.asarray(desc_mask.cpu())
    scores = np.zeros((B, A))
    iters = np.zeros((B, A), dtype=np.int64)
    errors = np.zeros((B, A))
    plans = np.zeros((B, A, T, N))
    for b in range(B):
        for a in range(A):
            sim = v[b][fm[b]] @ d[a][dm[a]].T
            if iterations is None:
                out = solve_pair(sim, eps, max_iter, tol)
            else:
                out = solve_pair(sim, eps, int(iterations[b, a]), 0.0)
            scores[b, a], iters[b, a], errors[b, a], plan = out
            plans[b, a][np.ix_(fm[b], dm[a])] = plan
    return scores, iters, errors, plans
