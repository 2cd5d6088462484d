"""Weight-space ensembling (WiSE-FT), as OST evaluates its zero-shot models:

    theta = alpha * theta_zero_shot + (1 - alpha) * theta_finetuned

over all parameters and floating-point buffers (the paper uses alpha = 0.2 with the original
CLIP as the zero-shot model). Integer buffers are taken from the fine-tuned model.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def ensemble_state_dicts(zero_shot: dict, finetuned: dict, alpha: float) -> dict:
    """Interpolate two state dicts of the same architecture; alpha in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    missing = sorted(set(finetuned) - set(zero_shot))
    extra = sorted(set(zero_shot) - set(finetuned))
    if missing or extra:
        raise ValueError(
            "the two models have different parameters: "
            f"only in the fine-tuned model {missing[:5]}, only in the zero-shot model {extra[:5]}"
        )
    out = {}
    for name, ft in finetuned.items():
        zs = zero_shot[name]
        if zs.shape != ft.shape:
            raise ValueError(f"parameter {name!r} has shape {tuple(zs.shape)} in the zero-shot model but "
                             f"{tuple(ft.shape)} in the fine-tuned one")
        if not torch.is_floating_point(ft):
            out[name] = ft.clone()
        elif alpha == 0.0:  # exact, even where the other model holds inf or NaN
            out[name] = ft.clone()
        elif alpha == 1.0:
            out[name] = zs.to(ft.dtype).clone()
        else:
            out[name] = (alpha * zs.to(torch.float32) + (1.0 - alpha) * ft.to(torch.float32)).to(ft.dtype)
    return out


def ensemble_models(zero_shot: nn.Module, finetuned: nn.Module, alpha: float) -> nn.Module:
    """A new model with the ensembled weights (the inputs are left unchanged)."""
    merged = copy.deepcopy(finetuned)
    merged.load_state_dict(ensemble_state_dicts(zero_shot.state_dict(), finetuned.state_dict(), alpha))
    return merged

