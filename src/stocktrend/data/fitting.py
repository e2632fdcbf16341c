"""Everything that is *fitted*: the scaler, the top-K feature selection, oversampling.

Each function takes only the rows or windows it may learn from; the dataset builder
passes the training window (or, under the deliberately leaky ``seed`` protocol, all
rows), and the metadata records which rows each fit saw.
"""

from __future__ import annotations

import dataclasses

import numpy as np
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
    """Indices after random oversampling: every class but the largest gets copies of its own
    samples, drawn with replacement, until it is as large; the originals first, in order.

    This is imbalanced-learn's RandomOverSampler (sampling_strategy="auto") step for step, same
    seed, same draws (a test holds them equal), without its copies of the labels: on a
    universe's millions of training windows those cost a gigabyte."""
    classes, counts = np.unique(y, return_counts=True)
    largest = counts.max()
    rng = np.random.RandomState(seed)  # what scikit-learn's check_random_state makes of an int seed
    picked = [np.arange(len(y))]
    for c, n in zip(classes, counts):
        if c != classes[np.argmax(counts)]:
            picked.append(rng.choice(np.flatnonzero(y == c), size=largest - n, replace=True))
    return np.asarray(indices)[np.concatenate(picked)]


# -- fits from per-instrument statistics ----------------------------------------------------------
# A panel's training rows can be larger than any one process should hold, so its fits are
# made from statistics each instrument's rows give on their own, combined in ticker order.
# The in-memory and the streamed panel builds both go through these, so they agree to the bit.

MI_ROWS = 200_000  # mutual information's rows: a seeded sample of the training windows past this


@dataclasses.dataclass
class TrainStats:
    """What one instrument's training rows contribute: the scaler's moments over the days its
    training windows cover, and per-class sums of the raw features on its windows' last days."""

    n: int
    mean: np.ndarray
    m2: np.ndarray  # sum of squared deviations from ``mean``
    class_sums: np.ndarray  # (2, features)
    class_counts: np.ndarray  # (2,)
    first_row: int  # the first and last day covered (-1: none)
    last_row: int


def train_stats(x: np.ndarray, train_ends: np.ndarray, labels: np.ndarray, seq_len: int) -> TrainStats:
    """``x``: one instrument's (days, features) candidates; ``train_ends``: its training windows'
    last rows (distinct, before oversampling) and ``labels`` theirs."""
    covered = np.zeros(len(x) + 1, np.int64)
    np.add.at(covered, train_ends - seq_len + 1, 1)
    np.add.at(covered, train_ends + 1, -1)
    rows = np.flatnonzero(np.cumsum(covered[:-1]) > 0)
    fit = x[rows]
    mean = fit.mean(axis=0) if len(rows) else np.zeros(x.shape[1])
    last = x[train_ends]
    sums = np.stack([last[labels == c].sum(axis=0) for c in (0, 1)])
    return TrainStats(len(rows), mean, ((fit - mean) ** 2).sum(axis=0), sums, np.bincount(labels, minlength=2)[:2],
                      int(rows[0]) if len(rows) else -1, int(rows[-1]) if len(rows) else -1)


@dataclasses.dataclass
class Scaler:
    """A z-score with scikit-learn's StandardScaler conventions (population variance; a
    constant feature keeps scale 1)."""

    mean_: np.ndarray
    scale_: np.ndarray
    n_rows: int

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) / self.scale_


def combine(stats: list[TrainStats]) -> tuple[Scaler, np.ndarray, np.ndarray, tuple[int, int]]:
    """(scaler, per-class raw sums, class counts, (first, last) covered row) of all instruments
    (Chan et al.'s pairwise update of the moments, in the order given)."""
    n, mean, m2 = 0, np.zeros_like(stats[0].mean), np.zeros_like(stats[0].m2)
    for s in stats:
        if s.n == 0:
            continue
        total = n + s.n
        delta = s.mean - mean
        mean = mean + delta * (s.n / total)
        m2 = m2 + s.m2 + delta**2 * (n * s.n / total)
        n = total
    if n == 0:
        raise ValueError("no training rows to fit on")
    std = np.sqrt(m2 / n)
    constant = std < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
    sums = np.sum([s.class_sums for s in stats], axis=0)
    counts = np.sum([s.class_counts for s in stats], axis=0)
    firsts = [s.first_row for s in stats if s.n]
    return Scaler(mean, np.where(constant, 1.0, std), n), sums, counts, (min(firsts), max(s.last_row for s in stats))


def mean_diff_scores(scaler: Scaler, class_sums: np.ndarray, class_counts: np.ndarray) -> np.ndarray:
    """``separation_scores``' mean_diff from class sums: |mean(class 1) - mean(class 0)| of the
    scaled feature (the z-score is affine, so the scaled class mean is the raw one, scaled)."""
    means = scaler.transform(class_sums / class_counts[:, None])
    return means.max(axis=0) - means.min(axis=0)


def mi_sample(n_train: int, seed: int) -> np.ndarray:
    """The positions (in training-index order) of the windows mutual information is scored on:
    all of them up to ``MI_ROWS``, else a seeded sample."""
    if n_train <= MI_ROWS:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(seed).choice(n_train, MI_ROWS, replace=False))
