"""Feature drift: PSI against the training distribution, with thresholds whose false-alarm
rate is known at the sample size being judged.

The reference is each training window's last day of scaled features, one value per
trading day (``training/export.py``), summarised as decile edges and bin shares. Live
samples are counted the same way: one per distinct trading day (a day requested twice
is one sample). Consecutive days are not independent (a 200-day moving-average gap moves
slowly), so a threshold from independent draws fires on almost any quiet stretch of real
days (measured: every time, ``bench/monitoring_alarms.py``). The thresholds come instead
from a block bootstrap over contiguous stretches of the training days themselves: for n
live days, feature k drifts when its PSI exceeds the ``1 - alpha / K`` quantile of the PSI
of every n-day stretch of training (Bonferroni over the K features), or of n independent
days, whichever is larger: a periodic feature (the calendar month) is more even over two
consecutive years than over 500 scattered days, so traffic of either kind stays under
``alpha`` family-wise. Artifacts without these thresholds fall back to independent
multinomial draws alone, and the answer says which null was used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-4  # floor on bin shares: an empty live bin must not make PSI infinite
ALPHA = 0.01  # family-wise false-alarm rate of the drift alert
SIZES = (50, 100, 200, 500, 1000, 2000, 5000)  # sample sizes the thresholds are tabulated for


def psi(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """PSI of each row of ``actual`` shares against ``expected`` shares (last axis: bins)."""
    e = np.clip(np.asarray(expected, np.float64), EPS, None)
    a = np.clip(np.asarray(actual, np.float64), EPS, None)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def bin_index(values: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """(n, K) bin of each value of each feature."""
    return np.stack([np.searchsorted(edges[k], values[:, k], side="right") for k in range(values.shape[1])], axis=1)


def block_null(days: np.ndarray, edges: list[np.ndarray], shares: list[np.ndarray],
               alpha: float = ALPHA, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Per-feature PSI thresholds for each sample size, from every contiguous stretch of
    ``days`` (chronological, (N, K), one row per trading day). Exact over all stretches:
    bin counts of a stretch are differences of cumulative one-hot counts, one feature at a
    time (all K at once held several (N, K, bins) arrays: 3.7 GB for 200,000 days of 50)."""
    n_days, k = days.shape
    bins = bin_index(days, edges)
    q = 1 - alpha / k
    usable = [n for n in sizes if n <= n_days // 2]  # past half the days, too few stretches to say anything
    block = np.empty((len(usable), k))
    for j in range(k):
        onehot = np.zeros((n_days + 1, len(shares[j])), np.int32)
        onehot[np.arange(1, n_days + 1), bins[:, j]] = 1
        cum = onehot.cumsum(axis=0)
        for i, n in enumerate(usable):
            values = psi(shares[j], (cum[n:] - cum[:-n]) / n)  # (starts,)
            block[i, j] = np.quantile(values, q, method="higher")
    table = {str(n): np.maximum(block[i], multinomial_thresholds(shares, n, alpha)).tolist()
             for i, n in enumerate(usable)}
    return {"method": "block bootstrap over contiguous training days (or independent days, if higher)",
            "alpha": alpha, "quantile": q,
            "sizes": [int(s) for s in table], "thresholds": table, "n_days": int(n_days)}


def multinomial_thresholds(shares: list[np.ndarray], n: int, alpha: float = ALPHA, draws: int = 2000,
                           seed: int = 0) -> np.ndarray:
    """Per-feature thresholds for ``n`` independent draws from the decile shares (the
    fallback null: it ignores serial dependence, so it fires more often on real days)."""
    rng = np.random.default_rng(seed)
    q = 1 - alpha / len(shares)
    out = []
    for s in shares:
        counts = rng.multinomial(n, np.asarray(s, np.float64) / np.sum(s), size=draws)
        out.append(float(np.quantile(psi(s, counts / n), q, method="higher")))
    return np.asarray(out)


class DriftTest:
    """The drift verdict for a set of live days, from a model's feature distribution."""

    def __init__(self, feature_distribution: dict[str, Any], min_samples: int):
        feats = feature_distribution["features"]
        self.names = [f["name"] for f in feats]
        self.edges = [np.asarray(f["edges"], np.float64) for f in feats]
        self.shares = [np.asarray(f["shares"], np.float64) for f in feats]
        self.null = feature_distribution.get("drift_null")
        self.min_samples = min_samples
        self.reference = (f"{feature_distribution.get('source', 'training distribution')}: "
                          f"{feature_distribution.get('n', '?')} days"
                          + (f", {feature_distribution['start']}..{feature_distribution['end']}"
                             if feature_distribution.get("start") else "") + ", decile bins")
        self._iid_cache: dict[int, np.ndarray] = {}

    def thresholds(self, n: int) -> tuple[np.ndarray, str, int]:
        """Thresholds for ``n`` samples: the block null's at the largest tabulated size not
        above ``n`` (a smaller size's thresholds are higher: conservative), else iid."""
        if self.null and self.null.get("sizes"):
            usable = [s for s in self.null["sizes"] if s <= n]
            if usable:
                size = max(usable)
                return np.asarray(self.null["thresholds"][str(size)]), self.null["method"], size
        size = min(n, 5000)
        if size not in self._iid_cache:
            self._iid_cache[size] = multinomial_thresholds(self.shares, size)
        return self._iid_cache[size], "independent multinomial draws from the training deciles", size

    def __call__(self, days: np.ndarray) -> dict[str, Any]:
        """``days``: (n, K) distinct live days of scaled features."""
        n = int(len(days))
        if n < self.min_samples:
            return {"status": "not enough data", "samples": n, "needed": self.min_samples,
                    "reference": self.reference}
        bins = bin_index(days, self.edges)
        values = np.array([psi(self.shares[k], np.bincount(bins[:, k], minlength=len(self.shares[k])) / n)
                           for k in range(len(self.names))])
        limits, method, size = self.thresholds(n)
        drifted = np.flatnonzero(values > limits)
        order = drifted[np.argsort(-(values[drifted] / limits[drifted]))]
        return {
            "status": "drift" if len(drifted) else "ok", "samples": n, "statistic": "psi", "null": method,
            "null_sample_size": size, "family_false_alarm_rate": (self.null or {}).get("alpha", ALPHA),
            "reference": self.reference,
            "drifted_features": [{"name": self.names[i], "psi": float(values[i]), "threshold": float(limits[i])}
                                 for i in order],
            "max_psi_over_threshold": float((values / limits).max()),
        }
