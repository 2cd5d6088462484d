"""What every backend is: a small record of the same shape, one per module in this package.

A backend module defines BACKEND = Backend(...):

    name      what users pass as od_solve(..., backend=name)
    dtypes    the input dtypes its kernels take
    reason    reason(device, dtype, shape) -> None if it can run this problem here, else why
              not: wrong device, unsupported dtype, not built, failed to load, or a hard limit
              of its kernels (so that "auto" falls back instead of failing); called before
              its ops are used, so it is where a backend loads them
    ops       the qualified names of its forward and backward ops ("ost_kernels::od_forward"),
              with ost_kernels.contract's signatures; Backend.forward calls the forward with
              the solver scalars in the contract's order (SolverOptions.op_args)
    cache     what its forward's cache output holds for its backward: "none"; "cosines", the
              (B * T, A * N) sims in the compute dtype (the implicit backward reuses them);
              "dot products", (B * T, A * N) raw float32 dot products
    keeps_cache  keeps_cache(video, desc) -> whether a forward on these inputs keeps its cache
    scales_huge_rows  whether its kernels divide rows beyond _magnitudes.RESCALE_ABOVE (or
              below RESCALE_BELOW) by their largest magnitude themselves (normalize=True);
              od_solve otherwise does it first
    features  what its kernels take beyond uniform balanced transport: "weights" (frame /
              descriptor weights), "reg_m" (relaxed marginals); a problem that needs one it
              lacks is refused with that reason, so "auto" passes over it

Adding a backend: its module here (the record, its ops), one register_backend line in
__init__.py, and its docs (docs/design.md's "Adding a backend" lists the rest).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says why."""


class ProblemShape(NamedTuple):
    """Sizes of one od_solve call: video (B, T, d), desc (A, N, d), and the features it needs
    ("weights", "reg_m"; see Backend.features)."""

    B: int
    T: int
    A: int
    N: int
    d: int
    needs: frozenset = frozenset()

    @classmethod
    def of(cls, video: torch.Tensor, desc: torch.Tensor, needs: frozenset = frozenset()) -> "ProblemShape":
        B, T, d = video.shape
        A, N, _ = desc.shape
        return cls(B, T, A, N, d, frozenset(needs))


def never(video: torch.Tensor, desc: torch.Tensor) -> bool:
    """keeps_cache of a backend that keeps nothing for its backward."""
    return False


def op(qualified: str):
    """The registered op "namespace::name" (it must be registered by now)."""
    namespace, name = qualified.split("::")
    return getattr(getattr(torch.ops, namespace), name)


@dataclass(frozen=True)
class Backend:
    name: str
    dtypes: tuple[torch.dtype, ...]
    reason: Callable[[torch.device, torch.dtype, ProblemShape | None], str | None]
    ops: tuple[str, str]
    cache: str = "none"
    keeps_cache: Callable[[torch.Tensor, torch.Tensor], bool] = never
    scales_huge_rows: bool = False
    features: frozenset = frozenset()

    def forward(self, video, desc, frame_mask, desc_mask, frame_weights, desc_weights, options,
                potentials: bool = True):
        """Its forward op on these inputs: (scores, f, g, iterations, error, cache); without
        potentials f and g are zero-size (scores only: no gradient will be asked for)."""
        return op(self.ops[0])(video, desc, frame_mask, desc_mask, frame_weights, desc_weights, *options.op_args(),
                               self.keeps_cache(video, desc), potentials)

    def backward(self, *args):
        """Its backward op (ost_kernels.contract.BACKWARD_ARGS)."""
        return op(self.ops[1])(*args)

    def why_not(self, device: torch.device, dtype: torch.dtype, shape: "ProblemShape | None" = None) -> str | None:
        """None if it can run this problem here: its own reason, then the features it needs."""
        missing = sorted(shape.needs - self.features) if shape is not None else []
        if missing:
            words = {"weights": "frame / descriptor weights", "reg_m": "relaxed marginals (reg_m)"}
            return f"the {self.name} kernels do not take {' or '.join(words[m] for m in missing)} yet"
        return self.reason(device, dtype, shape)

def dtype_names(dtypes) -> str:
    names = [str(t).removeprefix("torch.") for t in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def unsupported_dtype(kernels: str, dtypes, dtype: torch.dtype) -> str | None:
    """None if dtype is one of dtypes, else the refusal (one text for every backend)."""
    if dtype in dtypes:
        return None
    hint = " use backend 'cpu' or 'torch' for float64" if dtype == torch.float64 else ""
    return f"the {kernels} kernels take {dtype_names(dtypes)} inputs;{hint}".rstrip(";")


def wrong_device(name: str, device: torch.device, expected: str, note: str = "") -> str | None:
    """None if the tensors are on the expected device type, else the refusal."""
    if device.type == expected:
        return None
    return f"backend {name!r} runs on {expected.upper()} tensors{note}, but the inputs are on {device}"
