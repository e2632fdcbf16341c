"""The leakage audit: how much the reference's protocol inflates the numbers, measured.

Twins: a test window's *identical* twin is a training sample ending on the same day (the
reference duplicated windows by oversampling before its shuffled split); an *overlapping*
twin is a training sample sharing at least one day of [window start, label end] with it.
A 1-nearest-neighbour classifier on flattened windows is a pure memorisation probe: it
can only score above chance on test if test windows have near-copies in training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier

from stocktrend.evaluation.metrics import scalar_metrics


def twin_counts(train_pos: np.ndarray, test_pos: np.ndarray, seq_len: int, horizon: int) -> dict[str, int]:
    """Test samples (by window end row) with an identical / overlapping training sample.

    Samples ending on rows s and t share a day iff |s - t| <= seq_len + horizon - 1.
    """
    train = np.unique(np.asarray(train_pos))
    test = np.asarray(test_pos)
    reach = seq_len + horizon - 1
    i = np.searchsorted(train, test)
    left = np.where(i > 0, test - train[np.maximum(i - 1, 0)], np.iinfo(np.int64).max)
    right = np.where(i < len(train), train[np.minimum(i, len(train) - 1)] - test, np.iinfo(np.int64).max)
    nearest = np.minimum(np.abs(left), np.abs(right))
    return {"n_test": int(len(test)), "identical": int((nearest == 0).sum()), "overlapping": int((nearest <= reach).sum())}


def positions(calendar: pd.DatetimeIndex, dates: np.ndarray) -> np.ndarray:
    return calendar.get_indexer(pd.DatetimeIndex(np.asarray(dates).astype("datetime64[ns]")))


def nearest_neighbour_probe(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict:
    """1-NN on flattened windows (training duplicates kept: that is what the model saw)."""
    knn = KNeighborsClassifier(n_neighbors=1).fit(train_x.reshape(len(train_x), -1), train_y)
    p_up = knn.predict(x.reshape(len(x), -1)).astype(float)
    return scalar_metrics(y, p_up)
