"""Baselines scored on the same test windows as the model; each returns p_up per window.

A model is only worth something if it beats these out of sample:
- majority class: always predict the class that was more frequent in the TRAINING split,
  counted before oversampling (after balancing both counts are equal by construction,
  which would make the baseline meaningless);
- previous direction: predict that the next h days go the way the last h days went;
- logistic regression and gradient boosting on the last day of each window (the
  simplest learned models on the same features; on financial data they often match
  deep models).

Only training data feeds the fitted baselines, with fixed hyperparameters chosen before
looking at any result; nothing is tuned on validation or test.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "majority": "the training split's more frequent class (counted before balancing), every day",
    "previous_direction": "up iff close[t] > close[t-h]: the last h days' direction continues",
    "logistic_regression": "logistic regression on the last day's features of each window",
    "gradient_boosting": "gradient boosting (HistGradientBoosting) on the last day's features",
}


def majority_class(class_counts_before_balancing: list[int], n: int) -> np.ndarray:
    """p_up = 1 if "up" was strictly more frequent in training, else 0 (a tie goes to
    "down", as argmax would)."""
    down, up = (int(c) for c in class_counts_before_balancing[:2])
    return np.full(n, 1.0 if up > down else 0.0)


def previous_direction(close: pd.Series, dates: np.ndarray, horizon: int) -> np.ndarray:
    """p_up = 1 iff close[t] / close[t-h] - 1 > 0, with t-h counted in trading days of
    ``close`` (the label rule mirrored backwards: a flat move counts as down)."""
    idx = close.index.get_indexer(pd.DatetimeIndex(dates))
    if (idx < 0).any():
        missing = pd.DatetimeIndex(dates)[idx < 0][0].date()
        raise ValueError(f"test date {missing} is not a trading day of the price series")
    if (idx < horizon).any():
        raise ValueError(f"a test date has fewer than h={horizon} earlier prices")
    values = close.to_numpy(dtype=float)
    past = values[idx] / values[idx - horizon] - 1
    if np.isnan(past).any():
        raise ValueError("the price series has gaps (NaN closes) at or h days before a test date")
    return (past > 0).astype(float)


def last_day_features(x: np.ndarray, y: np.ndarray, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features of each window's last day, class), one row per unique window end date.

    The training split holds oversampled duplicates of minority windows; fitting on them
    would weight those days twice. Dates identify windows (one window ends per day).
    """
    _, first = np.unique(np.asarray(dates), return_index=True)
    keep = np.sort(first)
    labels = np.asarray(y)
    labels = labels.argmax(axis=1) if labels.ndim == 2 else labels
    return np.asarray(x[keep, -1, :], dtype=np.float64), labels[keep].astype(np.int64)


def _fit_predict(model, train_x, train_y, train_dates, test_x) -> np.ndarray:
    fx, fy = last_day_features(train_x, train_y, train_dates)
    if np.unique(fy).size < 2:
        raise ValueError("the training split holds one class only; cannot fit a classifier baseline")
    model.fit(fx, fy)
    return model.predict_proba(np.asarray(test_x[:, -1, :], dtype=np.float64))[:, 1]


def classifiers(seed: int = 0) -> dict:
    """The fitted baselines, hyperparameters fixed before looking at any result."""
    return {
        # Features are already z-scored by the dataset's training-window scaler; default L2.
        "logistic_regression": LogisticRegression(C=1.0, max_iter=2000, random_state=seed),
        # Shallow, slow-learning trees with a fixed number of rounds; no early stopping, whose
        # internal split would add a second, undocumented validation set.
        "gradient_boosting": HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_depth=3, min_samples_leaf=40,
            l2_regularization=1.0, early_stopping=False, random_state=seed),
    }


def logistic_regression(train_x, train_y, train_dates, test_x, seed: int = 0) -> np.ndarray:
    return _fit_predict(classifiers(seed)["logistic_regression"], train_x, train_y, train_dates, test_x)


def gradient_boosting(train_x, train_y, train_dates, test_x, seed: int = 0) -> np.ndarray:
    return _fit_predict(classifiers(seed)["gradient_boosting"], train_x, train_y, train_dates, test_x)


def all_baselines(
    train: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    class_counts_before_balancing: list[int],
    close: pd.Series,
    horizon: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """{name: p_up on the test windows}. ``train``/``test`` hold arrays X, y, dates."""
    n = len(test["X"])
    out = {
        "majority": majority_class(class_counts_before_balancing, n),
        "previous_direction": previous_direction(close, test["dates"], horizon),
        "logistic_regression": logistic_regression(train["X"], train["y"], train["dates"], test["X"], seed),
        "gradient_boosting": gradient_boosting(train["X"], train["y"], train["dates"], test["X"], seed),
    }
    log.info("baselines scored on %d test windows", n)
    return out


__all__ = ["DESCRIPTIONS", "majority_class", "previous_direction", "last_day_features", "logistic_regression",
           "gradient_boosting", "all_baselines"]
