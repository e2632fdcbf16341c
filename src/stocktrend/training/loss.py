"""The training loss: cross-entropy with optional class weights and label smoothing.

Class weights (TrainConfig.class_weights):
- "auto": inverse frequency of the class counts of the training labels the loss
  actually sees, w_c = N / (C * n_c). Balanced counts (e.g. after oversampling the
  training split) give neutral weights [1, 1]; 43.5/56.5 gives ~[1.15, 0.88].
- a list, used as given. [1.15, 0.87] reproduces the reference - which kept those
  weights after balancing the classes 50/50, so it corrected the imbalance twice
  and biased the model toward class 0. Only use it to replicate that run.
- "none": unweighted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)


def resolve_class_weights(
    spec: str | Sequence[float], class_counts: Sequence[int], n_classes: int | None = None
) -> torch.Tensor | None:
    """Per-class loss weights as a float32 tensor, or None for an unweighted loss."""
    counts = [int(c) for c in class_counts]
    n_classes = n_classes if n_classes is not None else len(counts)
    if len(counts) != n_classes:
        raise ValueError(f"got {len(counts)} class counts for {n_classes} classes")
    if isinstance(spec, str):
        if spec == "none":
            return None
        if spec != "auto":
            raise ValueError(f"class_weights must be 'auto', 'none' or a list of floats, got {spec!r}")
        missing = [c for c, n in enumerate(counts) if n <= 0]
        if missing:
            raise ValueError(f"class(es) {missing} have no training labels; inverse-frequency weights undefined")
        total = sum(counts)
        weights = [total / (n_classes * n) for n in counts]
        logger.info("class weights (auto, from train counts %s): %s", counts, [round(w, 4) for w in weights])
        return torch.tensor(weights, dtype=torch.float32)
    weights = [float(w) for w in spec]
    if len(weights) != n_classes:
        raise ValueError(f"class_weights has {len(weights)} entries for {n_classes} classes")
    if any(w <= 0 for w in weights):
        raise ValueError(f"class_weights must be positive, got {weights}")
    if len(set(counts)) == 1 and len(set(weights)) > 1:
        logger.warning(
            "explicit class_weights %s on balanced training labels %s re-weight classes that are "
            "already balanced (the reference's double correction)", weights, counts,
        )
    return torch.tensor(weights, dtype=torch.float32)


def rank_ic_loss(score: torch.Tensor, ret: torch.Tensor) -> torch.Tensor:
    """1 - the Pearson correlation of ``score`` with the ranks of ``ret`` over one cross-section
    (a date's windows): 0 when the scores order the returns exactly, 1 when unrelated, 2 when
    reversed. Differentiable in ``score`` (the ranks are constants). Windows without a return,
    or a cross-section of fewer than two, add nothing."""
    known = torch.isfinite(ret)
    score, ret = score[known].float(), ret[known]  # float32 even under bf16 autocast: ranks past 256
    if len(ret) < 2:
        return score.sum() * 0.0
    ranks = ret.argsort().argsort().float()  # ties ranked in the order they come
    s, r = score - score.mean(), ranks - ranks.mean()
    return 1.0 - (s * r).sum() / (s.norm() * r.norm() + 1e-8)


def build_loss(
    class_weights: str | Sequence[float], class_counts: Sequence[int], label_smoothing: float
) -> nn.CrossEntropyLoss:
    """CrossEntropyLoss on logits and class-index targets; weights live in a buffer (moves with .to())."""
    weight = resolve_class_weights(class_weights, class_counts)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
