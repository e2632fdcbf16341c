"""Everything that is *fitted*: the scaler, the top-K feature selection, oversampling.

Each function takes only the rows or windows it may learn from; the dataset builder
passes the training window (or, under the deliberately leaky ``seed`` protocol, all
rows), and the metadata records which rows each fit saw.
"""

from __future__ import annotations

import numpy as np
from imblearn.over_sampling import RandomOverSampler
from sklearn.feature_selection import mutual_info_classif
from sklearn.preprocessing import StandardScaler


def fit_scaler(rows: np.ndarray) -> StandardScaler:
    """Z-score statistics of the given (n_rows, n_features) matrix only."""
    return StandardScaler().fit(rows)


def separation_scores(x_last: np.ndarray, y: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Per-feature class separation on the last day of each window.

    ``mean_diff`` is the reference's rule: |mean(class 1) - mean(class 0)| of the scaled
    feature (for more classes, the spread between the highest and lowest class mean);
    ``mutual_info`` is scikit-learn's estimate, seeded.
    """
    if method == "mean_diff":
        means = np.stack([x_last[y == c].mean(axis=0) for c in np.unique(y)])
        return means.max(axis=0) - means.min(axis=0)
    if method == "mutual_info":
        return mutual_info_classif(x_last, y, random_state=seed)
    raise ValueError(f"unknown selection method {method!r}")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties go to the earlier feature."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


def oversample(indices: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Indices after imbalanced-learn's RandomOverSampler duplicated minority samples."""
    resampled, _ = RandomOverSampler(random_state=seed).fit_resample(indices.reshape(-1, 1), y)
    return resampled.ravel()
