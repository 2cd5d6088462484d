"""OST's classifier head, the paper's Eq. 13 as its code computes it.

With s = CLIP's logit scale, v_bar the mean of a video's unit frame embeddings and d_bar the
mean of a class's unit descriptor embeddings (neither renormalized), for each descriptor kind
K (Spatio, Temporal):

    term_K = s * (v_bar . d_bar_K) + s * OD_K          OD_K = od_solve(frames, descriptors_K)
    logits = w_S * term_S + w_T * term_T               (w_S = w_T = 0.5 by default)

Scale: the paper prints Eq. 13 as the mean of the four terms, 1/4 each; the official code
(trainers/OST.py, get_logit / inference), which this follows, weights each kind's pair of
terms by 0.5, i.e. twice the printed formula. Weights 0.25 / 0.25 give the printed equation.
The factor only rescales the logits (the same argmax), but it changes the loss's temperature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ost_kernels import SolverOptions, backend_names, od_solve
from ost_kernels import GRADS


def _reg_m(value):
    """reg_m as YAML or --set gives it: "inf" (YAML 1.1 reads only ".inf" as a number) is
    infinity, a list is a pair."""
    def number(x):
        return float("inf") if isinstance(x, str) and x.strip().lower().lstrip("+.") in ("inf", "infinity") else x
    if isinstance(value, list):
        value = tuple(value)
    return tuple(number(x) for x in value) if isinstance(value, tuple) else number(value)


@dataclass(frozen=True)
class ODLogitsConfig:
    """How the OD logits are formed; defaults follow the paper's code (see the module doc).

    spatio_weight / temporal_weight: w_S, w_T of the two descriptor kinds (0.5 / 0.5 is the
    official code, 2x the printed Eq. 13; 0.25 / 0.25 gives the printed equation);
    use_pooled: the s * v_bar . d_bar term; use_ot: the s * od_solve term; eps, max_iter,
    tol, backend, reg_m: passed to ost_kernels.od_solve (reg_m: None = balanced, a number, or
    [rho_frames, rho_descriptors] with inf keeping a side exact; YAML `od: {reg_m: [inf, 1.0]}`
    or `--set od.reg_m=[inf,1.0]`: frames exact, descriptors relaxed, so a step a video lacks
    can receive less than 1/N of the mass); grad: "plan" (the paper's gradient, the plan held
    constant) or "implicit" (the exact gradient through the plan; `od: {grad: implicit}` or
    `--set od.grad=implicit`).
    """

    spatio_weight: float = 0.5
    temporal_weight: float = 0.5
    use_pooled: bool = True
    use_ot: bool = True
    eps: float = 0.1
    max_iter: int = 100
    tol: float = 1e-3
    backend: str = "auto"
    reg_m: object = None
    grad: str = "plan"

    def __post_init__(self):
        object.__setattr__(self, "reg_m", _reg_m(self.reg_m))
        # Raises on bad values, naming them; keeps reg_m in its one spelling (None or a pair).
        try:
            solver = SolverOptions(eps=self.eps, max_iter=self.max_iter, tol=self.tol, reg_m=self.reg_m)
        except TypeError as exc:  # a setting of the wrong kind is a user's error, said in one line
            raise ValueError(str(exc)) from None
        object.__setattr__(self, "reg_m", solver.reg_m)
        for name in ("spatio_weight", "temporal_weight"):
            w = getattr(self, name)
            # Finite: an infinite weight makes infinite logits (NaN probabilities, and
            # -Infinity in JSON output, which is not JSON).
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
                raise ValueError(f"od.{name} must be a finite number >= 0, got {w!r}")
        for name in ("use_pooled", "use_ot"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not (self.use_pooled or self.use_ot):
            raise ValueError("use_pooled and use_ot are both off: the logits would be 0")
        if self.grad not in GRADS:
            raise ValueError(f"od.grad must be one of {', '.join(GRADS)}, got {self.grad!r}")
        if self.backend not in backend_names():
            raise ValueError(f"backend must be one of {', '.join(backend_names())}, got {self.backend!r}")

    def solve_kwargs(self) -> dict:
        """The od_solve keyword arguments these settings stand for."""
        return dict(eps=self.eps, max_iter=self.max_iter, tol=self.tol, backend=self.backend, reg_m=self.reg_m)


@dataclass
class DescriptorEmbeddings:
    """Descriptor embeddings of A classes: for each kind, (A, N_max, d) and an (A, N_max) mask."""

    spatio: torch.Tensor
    spatio_mask: torch.Tensor
    temporal: torch.Tensor
    temporal_mask: torch.Tensor

    @property
    def dim(self) -> int:
        return self.spatio.shape[-1]

    @property
    def num_classes(self) -> int:
        return self.spatio.shape[0]

    def select(self, class_ids: torch.Tensor) -> "DescriptorEmbeddings":
        """The embeddings of the given classes, in that order (repeats allowed)."""
        return DescriptorEmbeddings(self.spatio[class_ids], self.spatio_mask[class_ids],
                                    self.temporal[class_ids], self.temporal_mask[class_ids])

    def save(self, path) -> None:
        torch.save({k: getattr(self, k).cpu() for k in ("spatio", "spatio_mask", "temporal", "temporal_mask")}, path)

    @classmethod
    def load(cls, path) -> "DescriptorEmbeddings":
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def _mean_unit(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of the unit rows of x (B, T, d), over valid rows only: (B, d)."""
    if mask is None:
        return F.normalize(x.float(), dim=-1).mean(1)
    # Select, not multiply: NaN or inf in a masked row must reach neither the mean nor the
    # gradient (0 * NaN is NaN; a zeroed row normalizes to zero).
    u = F.normalize(torch.where(mask[..., None], x.float(), 0.0), dim=-1)
    return u.sum(1) / mask.sum(1, keepdim=True).to(u.dtype)


def od_logits(
    frames: torch.Tensor,
    desc: DescriptorEmbeddings,
    logit_scale: torch.Tensor | float,
    config: ODLogitsConfig = ODLogitsConfig(),
    frame_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """OD logits (B, A) of frame embeddings (B, T, d) against descriptor embeddings of A classes."""
    if frames.shape[-1] != desc.dim:
        raise ValueError(
            f"frame embeddings have d={frames.shape[-1]} but the descriptor embeddings have d={desc.dim}; "
            "were the descriptor embeddings computed with another model?"
        )
    v_bar = _mean_unit(frames, frame_mask) if config.use_pooled else None
    logits = 0.0
    for kind, weight in (("spatio", config.spatio_weight), ("temporal", config.temporal_weight)):
        if weight == 0:
            continue
        emb, mask = getattr(desc, kind), getattr(desc, f"{kind}_mask")
        term = 0.0
        if config.use_pooled:
            term = term + v_bar @ _mean_unit(emb, mask).T
        if config.use_ot:
            term = term + od_solve(frames.float(), emb.float(), frame_mask=frame_mask, desc_mask=mask,
                                   grad=config.grad, **config.solve_kwargs())
        logits = logits + weight * term
    return logit_scale * logits
