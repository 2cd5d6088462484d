"""Comparisons of a backend's od_solve against the float64 NumPy reference (tests/helpers/naive.py)."""
from __future__ import annotations

import numpy as np
import torch

from .naive import od_reference
from ost_kernels import od_solve


def float32_rtol(eps: float) -> float:
    """1e-5 relative at eps >= 0.1; looser in proportion below, since float32 rounding of
    sim is amplified by 1/eps in the exponent."""
    return 1e-5 * max(1.0, 0.1 / eps)


def check_scores(backend, video, desc, frame_mask=None, desc_mask=None, *, eps=0.1, max_iter=100,
                 tol=1e-3, normalize=True, rtol=None):
    """od_solve(..., backend) matches the reference on the same (possibly rounded) inputs.

    The stop rule is checked separately from the arithmetic: each pair must stop after the
    same number of iterations as the reference, or one off only where the reference's error
    sits at tol within float32 noise; the scores and errors are then compared with the
    reference run for exactly the iterations the backend ran.
    """
    scores, info = od_solve(video, desc, frame_mask=frame_mask, desc_mask=desc_mask, eps=eps,
                            max_iter=max_iter, tol=tol, normalize=normalize, backend=backend,
                            return_info=True)
    B, A = video.shape[0], desc.shape[0]
    expected_dtype = torch.float64 if video.dtype == torch.float64 else torch.float32
    assert scores.shape == (B, A) and scores.dtype == expected_dtype
    assert info.iterations.shape == (B, A) and info.iterations.dtype == torch.int32
    assert info.backend == backend
    iters = info.iterations.cpu().numpy().astype(np.int64)
    assert (iters >= 1).all() and (iters <= max_iter).all()
    if tol == 0:
        assert (iters == max_iter).all(), "tol=0 must run exactly max_iter iterations"
    else:
        _, ref_iters, _, _ = od_reference(video, desc, frame_mask, desc_mask, eps=eps,
                                          max_iter=max_iter, tol=tol, normalize=normalize)
        off = iters != ref_iters
        if off.any():
            assert (np.abs(iters - ref_iters)[off] <= 1).all(), (iters, ref_iters)
            first = np.minimum(iters, ref_iters)
            _, _, boundary_err, _ = od_reference(video, desc, frame_mask, desc_mask, eps=eps,
                                                 normalize=normalize, iterations=first)
            assert (np.abs(boundary_err[off] - tol) <= 0.05 * tol).all(), (boundary_err[off], tol)
    ref_scores, _, ref_err, _ = od_reference(video, desc, frame_mask, desc_mask, eps=eps,
                                             normalize=normalize, iterations=iters)
    rtol = float32_rtol(eps) if rtol is None else rtol
    torch.testing.assert_close(scores.cpu().double(), torch.from_numpy(ref_scores), rtol=rtol, atol=rtol * 0.1)
    torch.testing.assert_close(info.marginal_error.cpu().double(), torch.from_numpy(ref_err),
                               rtol=0, atol=max(rtol, 1e-7) * 10)
    return scores, info
