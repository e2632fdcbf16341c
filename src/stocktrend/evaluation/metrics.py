"""Binary classification metrics from (y_true, p_up), safe on degenerate samples.

``scalar_metrics`` computes them in closed form from one 2x2 count matrix and a rank-sum
AUROC (Mann-Whitney, ties averaged, as ``roc_auc_score`` does): scikit-learn 1.9 spends
~10 ms validating inputs per call, which made a 1000-resample bootstrap of five predictors
take a minute; the closed forms take ~0.1 ms. ``tests/test_evaluation.py`` checks them
against scikit-learn's own functions on random and degenerate samples.

Degenerate samples (a bootstrap resample may hold only one class) give NaN instead of an
exception or sklearn's silent 0: a metric that is undefined must not look like a score.
Conventions:
- the predicted class is "up" iff p_up > 0.5, the argmax of the model's two softmax
  outputs (ties go to "down", as ``argmax`` does). The threshold is fixed, never tuned;
- AUROC, MCC and balanced accuracy are NaN when y_true holds one class only;
- MCC is 0 when every prediction is the same class but both true classes occur (no skill;
  sklearn's convention);
- precision of a class never predicted and recall of a class that never occurs are NaN;
  F1 (of "up") is NaN when "up" is neither predicted nor true.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

THRESHOLD = 0.5
CLASSES = ("down", "up")
# Metrics that get a confidence interval and a baseline comparison, in report order.
HEADLINE = ("accuracy", "balanced_accuracy", "f1", "auroc", "mcc")
SCALARS = (*HEADLINE, "precision_down", "precision_up", "recall_down", "recall_up")


def predicted_class(p_up: np.ndarray) -> np.ndarray:
    return (np.asarray(p_up, dtype=float) > THRESHOLD).astype(np.int64)


def confusion_matrix(y_true: np.ndarray, p_up: np.ndarray) -> np.ndarray:
    """2x2 counts, rows = true class (down, up), columns = predicted class."""
    y = np.asarray(y_true, dtype=np.int64)
    return np.bincount(2 * y + predicted_class(p_up), minlength=4).reshape(2, 2)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def auroc(y_true: np.ndarray, p_up: np.ndarray) -> float:
    """P(score of a random up > score of a random down), ties counting 1/2."""
    y = np.asarray(y_true, dtype=bool)
    n_up = int(y.sum())
    n_down = y.size - n_up
    if n_up == 0 or n_down == 0:
        return math.nan
    ranks = rankdata(np.asarray(p_up, dtype=float))
    return float((ranks[y].sum() - n_up * (n_up + 1) / 2) / (n_up * n_down))


def scalar_metrics(y_true: np.ndarray, p_up: np.ndarray) -> dict[str, float]:
    """Every scalar metric of ``SCALARS`` (NaN where undefined on this sample)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    cm = confusion_matrix(y_true, p_up)
    (tn, fp), (fn, tp) = cm.astype(float)
    n = tn + fp + fn + tp
    both_classes = (tn + fp) > 0 and (fn + tp) > 0
    recall_down, recall_up = _ratio(tn, tn + fp), _ratio(tp, tp + fn)
    precision_down, precision_up = _ratio(tn, tn + fn), _ratio(tp, tp + fp)
    if both_classes:
        den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = (tp * tn - fp * fn) / den if den > 0 else 0.0
        balanced = (recall_down + recall_up) / 2
    else:
        mcc = balanced = math.nan
    return {
        "accuracy": _ratio(tn + tp, n),
        "balanced_accuracy": balanced,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auroc": auroc(y_true, p_up),
        "mcc": mcc,
        "precision_down": precision_down,
        "precision_up": precision_up,
        "recall_down": recall_down,
        "recall_up": recall_up,
    }


def all_metrics(y_true: np.ndarray, p_up: np.ndarray) -> dict:
    """Scalars plus the confusion matrix and the class balance, for the report."""
    y_true = np.asarray(y_true, dtype=np.int64)
    out: dict = scalar_metrics(y_true, p_up)
    out["confusion_matrix"] = confusion_matrix(y_true, p_up).tolist()
    out["n"] = int(y_true.size)
    out["share_up_true"] = float(y_true.mean()) if y_true.size else math.nan
    out["share_up_predicted"] = float(predicted_class(p_up).mean()) if y_true.size else math.nan
    return out


__all__ = ["THRESHOLD", "CLASSES", "HEADLINE", "SCALARS", "predicted_class", "confusion_matrix", "auroc",
           "scalar_metrics", "all_metrics"]
