"""OST's training losses.

The paper's loss (Eq. 14-15, as its code computes it) is a symmetric contrastive KL over the
mini-batch: logits (B, B) of video i against the descriptors of sample j's class, a target
that spreads each row's mass over its same-class samples, softmax(10 * [y_i == y_j]), and

    loss = KL(target || softmax(logits)) + KL(target || softmax(logits^T))   (batch means)

Cross-entropy over all classes is the alternative (`cross_entropy_loss`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TARGET_SHARPNESS = 10.0  # the paper's softmax(10 * same_class) target


def same_class_target(labels: torch.Tensor, sharpness: float = TARGET_SHARPNESS) -> torch.Tensor:
    """(B,) labels -> (B, B) row-stochastic target, mass on same-class pairs."""
    same = (labels[:, None] == labels[None, :]).float()
    return torch.softmax(sharpness * same, dim=1)


def symmetric_kl_loss(logits: torch.Tensor, labels: torch.Tensor, sharpness: float = TARGET_SHARPNESS) -> torch.Tensor:
    """The paper's video-to-text + text-to-video KL loss. logits (B, B), labels (B,)."""
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be (B, B) in-batch logits, got shape {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must be (B,) = ({logits.shape[0]},), got shape {tuple(labels.shape)}")
    target = same_class_target(labels, sharpness)
    v2t = F.kl_div(F.log_softmax(logits.float(), dim=1), target, reduction="batchmean")
    # same-class is symmetric, so the text-to-video rows have the same target
    t2v = F.kl_div(F.log_softmax(logits.float().T, dim=1), target, reduction="batchmean")
    return v2t + t2v


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, A) logits against all classes."""
    return F.cross_entropy(logits.float(), labels)
