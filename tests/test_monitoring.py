"""Monitoring figures without a server: the drift test's false-alarm rate and power, measured
on the real builder's training days, and the rolling statistics' gates and windows."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stocktrend.inference.drift import DriftTest
from stocktrend.serving.monitoring import NOT_ENOUGH, RollingStats
from stocktrend.training.export import feature_distribution

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from monitoring_alarms import alarm_rates, last_days  # noqa: E402

pytestmark = pytest.mark.timeout(120)
ALERTS = {"share_shift_points": 10.0, "confidence_drop": 0.03, "p99_latency_ms": 250.0, "min_samples": 50}


@pytest.fixture(scope="module")
def distribution(small_real_dataset):
    from stocktrend.data.store import read_metadata

    return feature_distribution(small_real_dataset, read_metadata(small_real_dataset)["features"]["selected"])


def test_drift_false_alarms_stay_under_alpha_and_a_shift_is_caught(small_real_dataset, distribution):
    train, val = last_days(small_real_dataset, "train"), last_days(small_real_dataset, "val")
    (row,) = alarm_rates(train, val, distribution, sizes=[200], draws=400, seed=1)
    alpha = distribution["drift_null"]["alpha"]
    # Seeded draws of training-like traffic: consecutive days, or scattered ones.
    assert row["contiguous"] <= 3 * alpha and row["independent"] <= 3 * alpha, row
    # A threshold from independent draws alone fires on real consecutive days: why the block null.
    assert row["contiguous_iid_null"] >= 0.5, row
    assert row["shift_1.0"] >= 0.95 and row["shift_0.5"] >= 0.9, row  # power for a stated shift


def test_figures_below_the_minimum_say_so_and_are_never_judged(distribution):
    stats = RollingStats(distribution, {"share_up": 0.5, "mean_confidence": 0.55}, ALERTS, window=500, minutes=15)
    k = len(distribution["features"])
    far = np.full((10, k), 5.0, np.float32)  # 10 wildly drifted days: too few to judge
    stats.add({"t_pred": [time.time()] * 10, "classes": [1] * 10, "confidence": [0.99] * 10, "last_day": far,
               "t_req": [time.time()], "latency_ms": [900.0], "batch_sizes": [10]})
    s = stats.summary()
    window = s["windows"]["count"]
    for figure in ("distribution", "confidence", "latency_ms", "drift"):
        assert window[figure]["status"] == NOT_ENOUGH, figure
    assert s["alerts"] == []


def test_drift_counts_each_trading_day_once_and_the_time_window_forgets(distribution):
    stats = RollingStats(distribution, {"share_up": 0.5}, ALERTS, window=500, minutes=1)
    k = len(distribution["features"])
    day = np.zeros((1, k), np.float32)
    old = time.time() - 120
    stats.add({"t_pred": [old] * 60, "classes": [0] * 60, "confidence": [0.6] * 60, "last_day": np.repeat(day, 60, 0),
               "t_req": [old] * 60, "latency_ms": [5.0] * 60, "batch_sizes": [1] * 60})
    s = stats.summary()["windows"]
    assert s["count"]["predictions"] == 60 and s["count"]["distinct_days"] == 1
    assert s["count"]["drift"]["status"] == NOT_ENOUGH  # 60 requests of one day are one sample
    assert s["count"]["distribution"]["status"] == "ok"  # but 60 predictions
    assert s["time"]["predictions"] == 0  # two minutes old: outside the 1-minute window


def test_an_artifact_without_block_thresholds_says_which_null_it_used(distribution):
    plain = {**distribution, "drift_null": None}
    days = np.random.default_rng(0).standard_normal((300, len(distribution["features"])))
    verdict = DriftTest(plain, 50)(days)
    assert verdict["null"] == "independent multinomial draws from the training deciles"


def test_prebucketed_histograms_count_as_prometheus_does():
    """Prometheus buckets hold the values <= their bound (a value on a bound counts there),
    cumulatively, and "+Inf" holds every value: what histogram_quantile reads."""
    from stocktrend.serving.metrics import CONFIDENCE_BUCKETS, cumulative_counts

    assert cumulative_counts((0.5, 1, 2), [0.1, 0.5, 0.7, 1, 3, 9]) == [2, 4, 4, 6]
    assert cumulative_counts((0.5, 1, 2), []) == [0, 0, 0, 0]
    values = np.random.default_rng(0).uniform(0.5, 1.0, 1000)
    counts = cumulative_counts(CONFIDENCE_BUCKETS, values)
    assert counts == [int((values <= b).sum()) for b in CONFIDENCE_BUCKETS] + [1000]


def test_the_block_null_is_every_stretch_s_psi_quantile_in_memory_of_one_feature():
    """Each threshold is the quantile of the PSI of every n-day stretch of the training days
    (brute force here), computed one feature at a time: at 30,000 days of 50 features all at
    once it held some 0.9 GB (3.7 GB in a 3,000-name export)."""
    import tracemalloc

    from stocktrend.inference.drift import ALPHA, block_null, multinomial_thresholds, psi

    rng = np.random.default_rng(0)
    days = np.cumsum(rng.standard_normal((400, 3)), axis=0) * 0.1 + rng.standard_normal((400, 3))
    edges = [np.quantile(days[:, j], np.linspace(0, 1, 11)[1:-1]) for j in range(3)]
    edges[1] = edges[1][:5]  # a feature with fewer bins
    shares = [np.bincount(np.searchsorted(e, days[:, j], side="right"), minlength=len(e) + 1) / 400
              for j, e in enumerate(edges)]
    out = block_null(days, edges, shares, sizes=(50, 100, 250))
    assert out["sizes"] == [50, 100]  # 250 is past half the days
    for n in (50, 100):
        for j in range(3):
            bins = np.searchsorted(edges[j], days[:, j], side="right")
            stretch = [psi(shares[j], np.bincount(bins[s:s + n], minlength=len(shares[j])) / n)
                       for s in range(400 - n + 1)]
            want = max(np.quantile(stretch, 1 - ALPHA / 3, method="higher"), multinomial_thresholds(shares, n)[j])
            assert out["thresholds"][str(n)][j] == pytest.approx(want, rel=1e-12)
    big = rng.standard_normal((30_000, 50))
    big_edges = [np.quantile(big[:, j], np.linspace(0, 1, 11)[1:-1]) for j in range(50)]
    tracemalloc.start()
    block_null(big, big_edges, [np.full(10, 0.1)] * 50, sizes=(50, 5000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 2**20, peak
