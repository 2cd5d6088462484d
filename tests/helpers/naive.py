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
    """Cosine directions: each row over its norm, scale-invariant at any magnitude (a finite
    row is first divided by its largest |entry|, so neither huge nor tiny rows over- or
    underflow); a zero row stays zero."""
    if not normalize:
        return x
    top = np.abs(x).max(-1, keepdims=True)
    y = x / np.where(np.isfinite(top) & (top > 0), top, 1.0)  # NaN / inf rows stay poisoned
    n = np.sqrt((y * y).sum(-1, keepdims=True))
    return y / np.maximum(n, NORM_EPS)


def solve_pair(sim: np.ndarray, eps: float, max_iter: int, tol: float, mu=None, nu=None,
               reg=(np.inf, np.inf)):
    """sim (T', N') over valid entries only; mu (T'), nu (N') the marginals (uniform when None);
    reg = (rho_frames, rho_descriptors), inf for an exact side. Returns score, iterations,
    final error, plan. A relaxed side damps its update by tau = rho / (rho + eps) and the
    error is then the row marginal's L1 change over the iteration."""
    cost = 1.0 - sim
    t, n = sim.shape
    mu = np.full(t, 1.0 / t) if mu is None else mu
    nu = np.full(n, 1.0 / n) if nu is None else nu
    tau_f, tau_d = (1.0 if r == np.inf else r / (r + eps) for r in reg)
    relaxed = (tau_f, tau_d) != (1.0, 1.0)
    g = np.zeros(n)
    prev = np.exp(-cost / eps).sum(1)  # the row marginal at f = g = 0
    for it in range(1, max_iter + 1):
        f = tau_f * (eps * np.log(mu) - eps * _lse((g[None, :] - cost) / eps, axis=1))
        g = tau_d * (eps * np.log(nu) - eps * _lse((f[:, None] - cost) / eps, axis=0))
        plan = np.exp((f[:, None] + g[None, :] - cost) / eps)
        rows = plan.sum(1)
        err = np.abs(rows - (prev if relaxed else mu)).sum()
        prev = rows
        if tol > 0 and err <= tol:
            break
    return float((plan * sim).sum()), it, float(err), plan


def od_reference(video, desc, frame_mask=None, desc_mask=None, *, eps=0.1, max_iter=100, tol=1e-3,
                 normalize=True, iterations=None, frame_weights=None, desc_weights=None, reg_m=None):
    """Scores (B, A), iterations (B, A), errors (B, A) and plans (B, A, T, N), all float64 NumPy.

    `iterations` (B, A), if given, runs each pair exactly that many iterations (no stop rule):
    used to compare against a backend whose own stop landed one iteration off at a boundary.
    Inputs may be torch tensors of any dtype; they are taken to float64 as they are. Weights
    (B, T) / (A, N): the marginals are them normalized over the valid entries, a weight of 0
    dropping its entry; reg_m as od_solve's.
    """
    v = _units(np.asarray(video.double().cpu()), normalize)
    d = _units(np.asarray(desc.double().cpu()), normalize)
    B, T, _ = v.shape
    A, N, _ = d.shape
    fm = np.ones((B, T), bool) if frame_mask is None else np.asarray(frame_mask.cpu())
    dm = np.ones((A, N), bool) if desc_mask is None else np.asarray(desc_mask.cpu())
    fw = np.ones((B, T)) if frame_weights is None else np.asarray(frame_weights.double().cpu())
    dw = np.ones((A, N)) if desc_weights is None else np.asarray(desc_weights.double().cpu())
    fm, dm = fm & (fw > 0), dm & (dw > 0)
    reg = (np.inf, np.inf) if reg_m is None else tuple(reg_m) if isinstance(reg_m, (tuple, list)) else (reg_m, reg_m)
    scores = np.zeros((B, A))
    iters = np.zeros((B, A), dtype=np.int64)
    errors = np.zeros((B, A))
    plans = np.zeros((B, A, T, N))
    for b in range(B):
        for a in range(A):
            sim = v[b][fm[b]] @ d[a][dm[a]].T
            mu, nu = fw[b][fm[b]] / fw[b][fm[b]].sum(), dw[a][dm[a]] / dw[a][dm[a]].sum()
            if iterations is None:
                out = solve_pair(sim, eps, max_iter, tol, mu, nu, reg)
            else:
                out = solve_pair(sim, eps, int(iterations[b, a]), 0.0, mu, nu, reg)
            scores[b, a], iters[b, a], errors[b, a], plan = out
            plans[b, a][np.ix_(fm[b], dm[a])] = plan
    return scores, iters, errors, plans
