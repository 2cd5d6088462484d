"""ost_kernels: fused optimal-transport scoring for OST (CVPR'24).

    from ost_kernels import od_solve
    scores = od_solve(video, desc)   # video (B, T, d), desc (A, N, d) -> (B, A)

Importing this package touches no GPU and loads no compiled module; backends are looked up
the first time they are asked for.
"""
from ._convergence import ConvergenceWarning
from .api import ODInfo, od_plan, od_solve
from .implicit import GRADS
from .backends import BackendUnavailableError, available_backends, backend_names, register_backend
from .options import SolverOptions
from .paper_einops import od_solve_einops
from .synthetic import clip_like_inputs

__all__ = [
    "od_solve",
    "od_plan",
    "ODInfo",
    "ConvergenceWarning",
    "GRADS",
    "SolverOptions",
    "od_solve_einops",
    "available_backends",
    "backend_names",
    "register_backend",
    "BackendUnavailableError",
    "clip_like_inputs",
]
__version__ = "0.1.0"
