"""The solver settings as one validated, frozen value.

od_solve / od_plan build a SolverOptions from their keyword arguments and pass it down; only
the op schemas at the bottom take the scalars one by one.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass


MAX_ITER_LIMIT = 2**31 - 1
CHUNK_ENV = "OST_KERNELS_CHUNK_MB"
# Half of an H100 / H200's 50 MB L2, in MiB: a chunk's sims stay in L2 between the GEMM that
# writes them and the kernel that reads them (ost_kernels/triton/ops.py).
DEFAULT_CHUNK_MB = 24.0


def resolve_chunk_mb(requested: float = 0.0) -> float:
    """MiB of float32 sims a GPU path computes per chunk of classes: `requested` when > 0, else
    OST_KERNELS_CHUNK_MB, else DEFAULT_CHUNK_MB."""
    if requested > 0:
        return requested
    text = os.environ.get(CHUNK_ENV)
    if text is None:
        return DEFAULT_CHUNK_MB
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < math.inf:
        raise ValueError(f"{CHUNK_ENV} must be a number of MiB > 0, got {text!r}")
    return value


@dataclass(frozen=True)
class SolverOptions:
    """Entropic OT settings of the OD solver (DESIGN: docs/design.md, section 3).

    eps: entropic regularization, > 0 (the paper uses 0.1).
    max_iter: Sinkhorn iterations at most, 1 to 2**31 - 1.
    tol: a pair stops once sum_i |sum_j P_ij - mu_i| <= tol (with a relaxed side: once the row
        marginal's L1 change over one iteration is <= tol); 0 runs exactly max_iter.
    normalize: L2-normalize the embeddings along d inside the op (cosine).
    reg_m: None (balanced), rho > 0 for both sides, or (rho_frames, rho_descriptors), inf keeping
        that side exact: the marginal constraints become rho * KL penalties (docs/design.md).
        Stored as the pair `reg_frames`, `reg_desc` (inf = exact).
    chunk_mb: MiB of float32 sims the GPU paths ("triton", "cuda") compute per chunk of classes;
        None or 0 = their default (OST_KERNELS_CHUNK_MB, else 24 MiB: half an H100 / H200 L2).
        Results do not depend on it beyond a GEMM's float32 rounding.
    """

    eps: float = 0.1
    max_iter: int = 100
    tol: float = 1e-3
    normalize: bool = True
    reg_m: object = None
    chunk_mb: float = 0.0

    @property
    def reg_frames(self) -> float:
        return self._pair[0]

    @property
    def reg_desc(self) -> float:
        return self._pair[1]

    @property
    def balanced(self) -> bool:
        return self._pair == (math.inf, math.inf)

    def op_args(self) -> tuple:
        """The solver scalars in the ops' order (contract.SOLVER_SCALARS), for an op call; the
        chunk size resolved (resolve_chunk_mb), so every backend gets the same one."""
        from .contract import SCALAR_NAMES

        values = {name: getattr(self, name) for name in SCALAR_NAMES}
        values["chunk_mb"] = resolve_chunk_mb(self.chunk_mb)
        return tuple(values.values())

    def __post_init__(self):
        eps, max_iter, tol, normalize = self.eps, self.max_iter, self.tol, self.normalize
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
            raise TypeError(f"od_solve: `eps` must be a positive float, got {type(eps).__name__}")
        # Comparisons, not math.isfinite: under torch.compile(dynamic=True) eps is a SymFloat.
        if not (0 < eps < math.inf):
            raise ValueError(f"od_solve: `eps` must be a finite number > 0, got {eps}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
            raise TypeError(f"od_solve: `max_iter` must be an int >= 1, got {type(max_iter).__name__}")
        if not 1 <= max_iter <= MAX_ITER_LIMIT:
            # The kernels count iterations in int32.
            raise ValueError(f"od_solve: `max_iter` must be >= 1 and <= 2**31 - 1, got {max_iter}")
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
            raise TypeError(f"od_solve: `tol` must be a float >= 0, got {type(tol).__name__}")
        if not (0 <= tol < math.inf):
            raise ValueError(
                f"od_solve: `tol` must be a finite number >= 0 (0 = always max_iter iterations), got {tol}"
            )
        if type(normalize).__module__ == "numpy" and type(normalize).__name__ in ("bool", "bool_"):
            normalize = bool(normalize)  # numpy's bool is a bool to a user
            object.__setattr__(self, "normalize", normalize)
        if not isinstance(normalize, bool):
            raise TypeError(f"od_solve: `normalize` must be True or False, got "
                            f"{type(normalize).__module__}.{type(normalize).__qualname__} {normalize!r}")
        chunk_mb = 0.0 if self.chunk_mb is None else self.chunk_mb
        if isinstance(chunk_mb, bool) or not isinstance(chunk_mb, numbers.Real):
            raise TypeError(f"od_solve: `chunk_mb` must be a number of MiB > 0 or None, got {type(chunk_mb).__name__}")
        if not (0 <= chunk_mb < math.inf):
            raise ValueError(f"od_solve: `chunk_mb` must be a finite number of MiB > 0 (None = the default), "
                             f"got {chunk_mb}")
        object.__setattr__(self, "chunk_mb", float(chunk_mb))
        pair = _reg_pair(self.reg_m)
        object.__setattr__(self, "_pair", pair)
        object.__setattr__(self, "reg_m", None if pair == (math.inf, math.inf) else pair)  # one spelling each
        # Plain Python scalars from here on (numpy scalars, ints for eps, ...).
        object.__setattr__(self, "eps", float(eps))
        object.__setattr__(self, "max_iter", int(max_iter))
        object.__setattr__(self, "tol", float(tol))


def _reg_pair(reg_m) -> tuple[float, float]:
    """(rho_frames, rho_descriptors) of od_solve's `reg_m`, inf for an exact side."""
    if reg_m is None:
        return (math.inf, math.inf)
    values = tuple(reg_m) if isinstance(reg_m, (tuple, list)) else (reg_m, reg_m)
    if len(values) != 2:
        raise ValueError(f"od_solve: `reg_m` must be None, a number > 0 or a pair (rho_frames, rho_descriptors), "
                         f"got {reg_m!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"od_solve: `reg_m` must hold numbers > 0 (inf = that side exact), got {reg_m!r}")
        if not v > 0:  # NaN too
            raise ValueError(f"od_solve: `reg_m` must hold numbers > 0 (inf = that side exact), got {reg_m!r}")
    return (float(values[0]), float(values[1]))
