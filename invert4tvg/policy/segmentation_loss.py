"""The frame-segmentation head's supervised losses (seed 004): weighted BCE, Tversky and generalised Dice over the
per-frame foreground probabilities, and the linear ramp that moves weight from the LM loss to them.

All functions take ``logits`` (N,) of foreground vs background (``logit('1') - logit('0')``, whose sigmoid is the
softmax over the two tokens' logits), ``target`` (N,) in {0, 1} and ``row`` (N,) the sample each frame belongs to;
Tversky and Dice are computed per sample and averaged, so a long answer does not outweigh a short one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POS_WEIGHT = 2.3378  # [paper] background:foreground frame ratio of their training data
TVERSKY_ALPHA, TVERSKY_BETA = 0.3, 0.7  # [paper] beta 0.7; alpha 0.3 [HEADS.md suggestion: 1 - beta]
START_WEIGHTS = (1.0, 0.0, 0.0, 0.0)  # [paper] (lm, bce, tversky, dice) at the start of training
END_WEIGHTS = (0.2, 0.2667, 0.2667, 0.2667)  # [paper] ... and after the ramp (6 epochs in the paper)
EPS = 1e-6


def ramp_weights(epoch: float, ramp_epochs: float) -> tuple[float, float, float, float]:
    """(w_lm, w_bce, w_tversky, w_dice), linear from START_WEIGHTS at epoch 0 to END_WEIGHTS at ``ramp_epochs``."""
    t = 1.0 if ramp_epochs <= 0 else min(max(epoch / ramp_epochs, 0.0), 1.0)
    return tuple(a + t * (b - a) for a, b in zip(START_WEIGHTS, END_WEIGHTS))  # type: ignore[return-value]


def weighted_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pos_weight = torch.tensor(POS_WEIGHT, device=logits.device, dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


def _per_sample(values: torch.Tensor, row: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, device=values.device, dtype=values.dtype).index_add(0, row, values)


def tversky_loss(logits: torch.Tensor, target: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """1 - TP / (TP + alpha FP + beta FN) per sample; beta > alpha weighs missed foreground more."""
    n = int(row.max()) + 1
    p = torch.sigmoid(logits)
    tp = _per_sample(p * target, row, n)
    fp = _per_sample(p * (1 - target), row, n)
    fn = _per_sample((1 - p) * target, row, n)
    return (1 - (tp + EPS) / (tp + TVERSKY_ALPHA * fp + TVERSKY_BETA * fn + EPS)).mean()


def generalised_dice_loss(logits: torch.Tensor, target: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Generalised Dice over the two classes per sample, each class weighted by 1 / (its frame count)^2."""
    n = int(row.max()) + 1
    p = torch.sigmoid(logits)
    numerator = torch.zeros(n, device=p.device, dtype=p.dtype)
    denominator = torch.zeros_like(numerator)
    for prob, truth in ((p, target), (1 - p, 1 - target)):
        weight = 1.0 / _per_sample(truth, row, n).clamp(min=1.0) ** 2
        numerator = numerator + weight * _per_sample(prob * truth, row, n)
        denominator = denominator + weight * _per_sample(prob + truth, row, n)
    return (1 - 2 * numerator / denominator.clamp(min=EPS)).mean()
