"""Telling users that pairs stopped at max_iter before meeting tol.

od_solve stops each (video, class) pair once its marginal error is <= tol, or after max_iter
iterations. A pair stopped by max_iter with an error above tol has not converged (at eps =
1e-3 and the default max_iter = 100 most pairs do not): its score is that of an unconverged
plan. This is said once per process for each combination of solver settings, through Python's
warnings (category ConvergenceWarning, so it can be silenced or turned into an error), with
the share of such pairs and the worst error.

When it is checked (the check reads the op's error tensor back):
  * CPU tensors: every call (the values are already in host memory).
  * GPU tensors: only with return_info=True, where the caller asked for these tensors anyway;
    otherwise reading them would cost a host sync per call, so nothing is checked.
  * Never while torch.compile traces (it would break the graph), and never with tol = 0 (a
    fixed number of iterations was asked for).
"""
from __future__ import annotations

import warnings

import torch

from .options import SolverOptions


class ConvergenceWarning(UserWarning):
    """Some (video, class) pairs stopped at max_iter with a marginal error above tol."""


_told: set = set()


def check_convergence(iterations: torch.Tensor, error: torch.Tensor, options: SolverOptions, return_info: bool,
                      caller: str = "od_solve") -> None:
    """Warn (once per process for these settings) if pairs stopped unconverged; see the module doc."""
    if options.tol <= 0 or torch.compiler.is_compiling() or iterations.numel() == 0:
        return
    if error.device.type != "cpu" and not return_info:
        return
    key = (caller, options.eps, options.max_iter, options.tol, options.reg_frames, options.reg_desc)
    if key in _told:
        return
    with torch.no_grad():
        stuck = (iterations >= options.max_iter) & (error > options.tol)  # NaN errors compare False
        count = int(stuck.sum())
        if count == 0:
            return
        worst = float(error[stuck].max())
    _told.add(key)
    what = "row-marginal error" if options.balanced else "row marginal's change over the last iteration"
    share = count / iterations.numel()
    warnings.warn(
        f"{caller}: {count} of {iterations.numel()} (video, class) pairs ({share:.0%}) stopped at max_iter = "
        f"{options.max_iter} before reaching tol = {options.tol:g} (worst {what}: {worst:.3g}) at eps = "
        f"{options.eps:g}: raise max_iter or eps, or pass tol=0 to run max_iter iterations without a stop rule "
        "(said once per process for these settings; return_info=True gives each pair's error)",
        ConvergenceWarning, stacklevel=3)
