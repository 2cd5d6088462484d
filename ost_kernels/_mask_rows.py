"""The ops' own input checks: every mask row needs a valid entry, and the solver scalars.

A row with none has no mass to transport (mu_i = 1 / 0). od_solve refuses it before any work,
and so does every backend's op when called directly (torch.ops.ost_kernels.*; the C++ ops
with csrc/common.h's check_mask_rows), so that the backends agree. On CPU tensors the answer
is read at once (ValueError). On other devices reading it back would cost a host sync per
call, so there it is queued as a device-side assertion (torch._assert_async): the error
surfaces at the next synchronization and, as every device-side assertion, leaves the CUDA
context unusable (this message is printed by the device, not carried by the exception). While
torch.compile traces, the check is left out (it would break the graph).

This module imports nothing from ost_kernels: backends and the API both use it.
"""
from __future__ import annotations

import torch


def empty_rows_message(caller: str, name: str, rows: str = "") -> str:
    return (f"{caller}: {name} has rows with no valid entry (all False){rows}; "
            "every row needs at least one valid entry")


def check_mask_rows(mask: torch.Tensor | None, name: str, caller: str) -> None:
    """Refuse a (rows, cols) bool mask with an all-False row; `name` and `caller` go into the
    message (e.g. "`frame_mask`", "od_solve")."""
    if mask is None or torch.compiler.is_compiling() or mask.device.type == "meta":
        return
    if mask.device.type == "cpu":
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            rows = torch.nonzero(empty).flatten()[:5].tolist()
            raise ValueError(empty_rows_message(caller, name, f", e.g. rows {rows}"))
    else:
        torch._assert_async(mask.any(dim=1).all(), empty_rows_message(caller, name))


def check_op_scalars(eps: float, max_iter: int | None, tol: float | None, caller: str) -> None:
    """The solver scalars of an op called directly (torch.ops.ost_kernels.*), with the rules
    and words of csrc/common.h's checks; od_solve checks them first (options.py)."""
    if not 0 < eps < float("inf"):
        raise ValueError(f"{caller}: eps must be finite and > 0, got {eps}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"{caller}: max_iter must be >= 1, got {max_iter}")
    if tol is not None and not 0 <= tol < float("inf"):
        raise ValueError(f"{caller}: tol must be finite and >= 0, got {tol}")
