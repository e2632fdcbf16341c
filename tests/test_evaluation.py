"""Evaluation: metrics, block bootstrap, baselines, backtest (hand-computed), and the full report."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from stocktrend.evaluation import backtest as bt
from stocktrend.evaluation import baselines as bl
from stocktrend.evaluation.bootstrap import (
    block_indices,
    cbb_mean_variance,
    data_block_length,
    default_block_length,
    mean_interval,
    window_block_length,
)
from stocktrend.evaluation.core import resampled_ci
from stocktrend.evaluation.metrics import SCALARS, predicted_class, scalar_metrics
from stocktrend.evaluation.report import EvaluationError, evaluate_artifact, resolve_dataset, summary_lines

ROOT = Path(__file__).resolve().parents[1]
C = 0.001  # 10 bps per side, the cost used in the hand-computed backtests


def accuracy(y, p):
    return {"accuracy": float(np.mean((p > 0.5) == y))}


def ci(metric_fn, arrays, n_boot, seed, **how):
    """``resampled_ci``'s interval of a one-metric function."""
    (out,) = resampled_ci(metric_fn, arrays, n_boot, seed, **how).values()
    return out


def sklearn_metrics(y_true: np.ndarray, p_up: np.ndarray) -> dict[str, float]:
    """``SCALARS`` computed by scikit-learn itself (the reference for ``scalar_metrics``)."""
    y = np.asarray(y_true, dtype=np.int64)
    pred = predicted_class(p_up)
    both = np.unique(y).size == 2
    nan = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        prec = skm.precision_score(y, pred, labels=[0, 1], average=None, zero_division=nan)
        rec = skm.recall_score(y, pred, labels=[0, 1], average=None, zero_division=nan)
        f1 = skm.f1_score(y, pred, labels=[0, 1], average=None, zero_division=nan)[1]
        return {
            "accuracy": float(skm.accuracy_score(y, pred)) if y.size else nan,
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if both else nan,
            "f1": nan if (y.sum() == 0 and pred.sum() == 0) else float(f1),
            "auroc": float(skm.roc_auc_score(y, np.asarray(p_up, dtype=float))) if both else nan,
            "mcc": float(skm.matthews_corrcoef(y, pred)) if both else nan,
            "precision_down": float(prec[0]),
            "precision_up": float(prec[1]),
            "recall_down": float(rec[0]),
            "recall_up": float(rec[1]),
        }


def agree(a: dict[str, float], b: dict[str, float], tol: float = 1e-9) -> bool:
    return all((math.isnan(a[k]) and math.isnan(b[k])) or abs(a[k] - b[k]) <= tol for k in SCALARS)


# -- metrics -------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_metrics_equal_sklearn_including_degenerate_samples():
    rng = np.random.default_rng(1)
    for i in range(150):
        n = int(rng.integers(1, 15))
        y = rng.integers(0, 2, n) if i % 3 else np.full(n, i % 2)  # every third sample: one class only
        p = rng.choice([0.0, 0.2, 0.5, 0.7, 1.0], n) if i % 2 else rng.random(n)  # ties and the 0.5 edge
        assert agree(scalar_metrics(y, p), sklearn_metrics(y, p)), (y, p)
    one_class = scalar_metrics(np.ones(5, int), np.array([0.9, 0.2, 0.7, 0.6, 0.1]))
    assert math.isnan(one_class["auroc"]) and math.isnan(one_class["mcc"]) and one_class["accuracy"] == 0.6
    # p_up = 0.5 is "down" (argmax picks the first of two equal outputs).
    assert scalar_metrics(np.array([0, 1]), np.array([0.5, 0.51]))["accuracy"] == 1.0


# -- bootstrap -----------------------------------------------------------------------
@pytest.mark.timeout(20)
def test_block_indices_are_circular_blocks():
    idx = block_indices(10, 50, 4, seed=3)
    assert idx.shape == (50, 10) and idx.min() >= 0 and idx.max() <= 9
    steps = np.diff(idx, axis=1)[:, :3]  # inside the first block: consecutive, wrapping 9 -> 0
    assert np.all((steps == 1) | (steps == -9))
    assert np.array_equal(idx, block_indices(10, 50, 4, seed=3))  # seeded
    moving = block_indices(10, 200, 4, seed=3, circular=False)
    assert moving[:, 0].max() <= 6 and np.all(np.diff(moving, axis=1)[:, :3] == 1)
    assert default_block_length(662, horizon=5) == 10 and default_block_length(5000) == 18
    assert default_block_length(3, horizon=5) == 3


def ar1(n: int, phi: float, seed: int = 0) -> np.ndarray:
    e = np.random.default_rng(seed).standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def test_block_lengths_come_from_the_data_above_their_floor():
    white, persistent = ar1(400, 0.0), ar1(400, 0.95)
    assert data_block_length(white) <= 12  # the floor, 8 (400^(1/3)), or near it
    assert data_block_length(persistent) >= 25  # a persistent series needs long blocks
    assert data_block_length(white, floor=35) == 35
    assert data_block_length(np.r_[persistent, np.nan, np.nan]) == data_block_length(persistent)
    assert data_block_length(np.ones(50), floor=3) == 4  # nothing to estimate: the floor (50^(1/3) -> 4)
    assert data_block_length(ar1(40, 0.999), floor=30) == 20  # at most n / 2
    # Overlapping windows: at least seq_len + h, the span over which two windows share days.
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 2, 600), rng.random(600)
    assert window_block_length(y, p, horizon=5) >= 10
    assert window_block_length(y, p, horizon=5, seq_len=30) >= 35


@pytest.mark.timeout(30)
def test_interval_contains_point_and_widens_with_fewer_samples():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    p = np.where(rng.random(2000) < 0.7, y, 1 - y) * 0.8 + 0.1  # right 70% of the time
    big = ci(accuracy, (y, p), 300, 1, horizon=5)
    small = ci(accuracy, (y[:100], p[:100]), 300, 1, horizon=5)
    for iv in (big, small):
        assert iv.low < iv.point < iv.high and iv.n_nan == 0
    assert small.high - small.low > 2 * (big.high - big.low)  # ~sqrt(20) wider in theory
    # Dict-valued metrics: every key from the same resamples.
    many = resampled_ci(scalar_metrics, (y[:300], p[:300]), 100, 1)
    assert set(many) == set(SCALARS) and all(m.contains(m.point) for m in many.values())


@pytest.mark.timeout(30)
def test_block_bootstrap_is_wider_than_iid_on_autocorrelated_data():
    rng = np.random.default_rng(5)
    n, run = 1000, 25
    correct = np.repeat(rng.integers(0, 2, n // run), run).astype(bool)  # right/wrong in runs of 25 days
    y = rng.integers(0, 2, n)
    p = np.where(correct, y, 1 - y).astype(float)
    iid = ci(accuracy, (y, p), 400, 2, block=1)
    blocked = ci(accuracy, (y, p), 400, 2, horizon=12)  # default block 24
    assert blocked.point == iid.point
    assert blocked.high - blocked.low > 2.5 * (iid.high - iid.low)  # theory: ~sqrt(25) = 5x


@pytest.mark.timeout(30)
def test_the_exact_block_bootstrap_variance_is_what_resampling_gives():
    x = np.random.default_rng(3).standard_normal(200)
    assert cbb_mean_variance(x, 1) == pytest.approx(np.var(x) / 200)  # one-day blocks: the iid formula
    means = x[block_indices(200, 40_000, 10, seed=4)].mean(axis=1)  # 20 blocks of 10 per resample
    assert cbb_mean_variance(x, 10) == pytest.approx(means.var(), rel=0.03)


@pytest.mark.timeout(30)
def test_the_mean_interval_removes_the_block_bias_of_overlapping_labels():
    # Five-day sums of iid days (overlapping 5-day labels): the mean's long-run variance is 25 / n.
    rng = np.random.default_rng(8)
    n = 20_000
    x = np.convolve(rng.standard_normal(n + 4), np.ones(5), mode="valid")
    truth = 25 / n
    plain = cbb_mean_variance(x, 10)
    assert plain == pytest.approx(truth * (1 - 1.6 / 10), rel=0.06)  # the bias: sum 2|k| rho_k * 5 / block
    iv = mean_interval(x, block=10)
    half = (iv.high - iv.low) / 2
    corrected = (half / 1.96) ** 2  # t on ~1,000 degrees of freedom is 1.96
    assert abs(corrected - truth) < 0.4 * abs(plain - truth) and iv.low < x.mean() < iv.high
    short = mean_interval(x[:400], block=10)  # 20 blocks of 20: Student's t on 19 dof, not the normal's 1.96
    assert (short.high - short.low) / 2 > 2.09 * math.sqrt(cbb_mean_variance(x[:400], 20))
    # A block past n / 8 on a short series is cut there: t on one degree of freedom is not an answer.
    assert mean_interval(x[:95], block=47) == mean_interval(x[:95], block=95 // 8)
    assert math.isnan(mean_interval(x[:3], block=2).low)


@pytest.mark.timeout(30)
def test_paired_bootstrap_uses_the_same_rows_and_counts_undefined_resamples():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    p = rng.random(300)
    def difference(y, a, b):  # both scored on one resample: paired
        return {"d": accuracy(y, a)["accuracy"] - accuracy(y, b)["accuracy"]}

    same = ci(difference, (y, p, p.copy()), 200, 0, horizon=5)
    assert (same.point, same.low, same.high) == (0.0, 0.0, 0.0)  # unpaired resampling would not give 0
    better = np.where(np.arange(300) % 3 == 0, y, (p > 0.5)).astype(float)  # 1/3 of days fixed to the truth
    assert ci(difference, (y, better, p), 200, 0, horizon=5).low > 0
    # Resampling whole dates keeps a date's rows together: a date's rows all right or all wrong.
    dates = np.repeat(np.arange(100), 3)
    whole = resampled_ci(lambda d: {"rows": float(len(d)), "dates": float(len(np.unique(d)))}, (dates,), 50, 0,
                         dates=dates, block=4)
    assert whole["rows"].low == whole["rows"].high == 300 and whole["dates"].high < 100
    # Three "up" days out of 100: many resamples miss them all; AUROC is NaN there, never a crash.
    y2 = np.zeros(100, int)
    y2[-3:] = 1
    area = resampled_ci(scalar_metrics, (y2, rng.random(100)), 200, 0, block=5)["auroc"]
    assert area.n_nan > 0 and area.n_valid + area.n_nan == 200 and not math.isnan(area.low)


# -- baselines -----------------------------------------------------------------------
@pytest.mark.timeout(20)
def test_majority_and_previous_direction_by_hand():
    assert bl.majority_class([30, 70], 3).tolist() == [1.0, 1.0, 1.0]
    assert bl.majority_class([70, 30], 2).tolist() == [0.0, 0.0]
    assert bl.majority_class([50, 50], 2).tolist() == [0.0, 0.0]  # a tie goes to down
    days = pd.bdate_range("2021-01-04", periods=8)
    close = pd.Series([10, 11, 12, 11, 10, 10, 12, 9], index=days, dtype=float)
    # close[t] / close[t-2] - 1 for t = 2..7: 12/10, 11/11, 10/12, 10/11, 12/10, 9/10
    got = bl.previous_direction(close, days[2:].to_numpy(), horizon=2)
    assert got.tolist() == [1, 0, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="fewer than"):
        bl.previous_direction(close, days[1:3].to_numpy(), horizon=2)


def _windows(last_day: list[float], earlier: float = 0.0) -> np.ndarray:
    x = np.full((len(last_day), 3, 1), earlier)
    x[:, -1, 0] = last_day
    return x


@pytest.mark.timeout(30)
def test_fitted_baselines_use_last_day_and_drop_oversampled_duplicates():
    # Symmetric training set: x = -2, -1 down, 1, 2 up -> the fitted intercept is 0, so
    # p_up(0) = 0.5 and p_up(x) + p_up(-x) = 1. An oversampled copy of (x=1, up) with the
    # same date would break the symmetry unless it is dropped; huge values on earlier days
    # would break it unless only the last day is used.
    dates = np.array(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-03", "2020-01-06"], dtype="datetime64[D]")
    train_x = _windows([-2, -1, 1, 1, 2])
    train_x[:, 0, 0] = [50, -9, 30, 30, 7]
    train_y = np.eye(2)[[0, 0, 1, 1, 1]]
    fx, fy = bl.last_day_features(train_x, train_y, dates)
    assert fx[:, 0].tolist() == [-2, -1, 1, 2] and fy.tolist() == [0, 0, 1, 1]
    p = bl.logistic_regression(train_x, train_y, dates, _windows([0, 2, -2, 1.5]), seed=0)
    assert p[0] == pytest.approx(0.5, abs=1e-6) and p[1] + p[2] == pytest.approx(1, abs=1e-6)
    assert p[1] > 0.5 and p[3] > 0.5

    # Gradient boosting: up iff the last day is positive, 200 distinct days.
    rng = np.random.default_rng(0)
    last = rng.normal(size=200)
    days = np.arange(200).astype("datetime64[D]")
    gx, gy = _windows(list(last), earlier=3.0), np.eye(2)[(last > 0).astype(int)]
    test_x = _windows([-2.0, -1.0, 1.0, 2.0])
    p_gb = bl.gradient_boosting(gx, gy, days, test_x, seed=0)
    assert (p_gb > 0.5).tolist() == [False, False, True, True]
    assert np.array_equal(p_gb, bl.gradient_boosting(gx, gy, days, test_x, seed=0))  # seeded, repeatable


def test_the_headline_finds_a_planted_edge_and_holds_its_familywise_error():
    from stocktrend.evaluation.headline import panel_headline, single_headline, stepm

    rng = np.random.default_rng(3)
    n = 600
    # Three opponents: the model is truly better than one, equal to the others.
    model = rng.normal(0, 1, n)
    losses = {"worse": model + rng.normal(0.25, 1, n), "same_a": model + rng.normal(0, 1, n),
              "same_b": model + rng.normal(0, 1, n)}
    r = stepm(model, losses, n_boot=300, seed=0, floor=5)
    assert r["beats"] == {"worse": True, "same_a": False, "same_b": False}
    assert r["improvement"]["worse"] == pytest.approx(np.mean(losses["worse"] - model))
    # On pure noise, over 40 draws of 4 equal opponents, StepM says "beats" on at most a few draws
    # (5% familywise: about 2 expected; a per-comparison 5% test would fire on about 7).
    fired = sum(any(stepm(rng.normal(0, 1, 300), {k: rng.normal(0, 1, 300) for k in "abcd"}, 200, s, 5)["beats"].values())
                for s in range(40))
    assert fired <= 6
    # The panel form: a higher rank IC is better; compared on the dates every scorer has.
    dates = pd.RangeIndex(400)
    base = pd.Series(rng.normal(0, 0.1, 400), index=dates)
    ics = {"model": base + 0.05, "momentum_12_1": base + rng.normal(0, 0.05, 400),
           "reversal_1w": (base + 0.06 + rng.normal(0, 0.05, 400)).iloc[10:]}
    h = panel_headline(ics, n_boot=300, seed=0, floor=10)
    assert h["beats"] == {"momentum_12_1": True, "reversal_1w": False} and h["observations"] == 390
    assert "beats momentum_12_1, not reversal_1w" in h["verdict"]
    # The single-stock form: log-loss against the prior and the logistic regression.
    y = rng.integers(0, 2, 500)
    sharp = np.where(y == 1, 0.7, 0.3)
    h = single_headline(y, sharp, {"prior": np.full(500, 0.5), "logistic_regression": np.full(500, 0.5)}, 300, 0, 10)
    assert all(h["beats"].values()) and h["model"] == pytest.approx(-np.log(0.7))


# -- backtest ------------------------------------------------------------------------
# 7 trading days; h = 2; signals on days 0..5: up, -, up, -, down, - (only days 0, 2, 4 trade).
DAYS = pd.bdate_range("2021-01-04", periods=7)
CLOSE = pd.Series([100, 105, 110, 104.5, 99, 103.95, 108.9], index=DAYS)
P_UP = np.array([0.9, 0.1, 0.8, 0.3, 0.2, 0.6])
SAME = "same_close"  # the simulator checked by hand at the label's own prices; reports trade a day later
# The three holds move the price +10% (100 -> 110), -10% (110 -> 99), +10% (99 -> 108.9).


def _sharpe(daily, rf=0.0):
    ex = np.asarray(daily) - rf
    return ex.mean() / ex.std(ddof=1) * math.sqrt(252)


@pytest.mark.timeout(20)
def test_backtest_long_flat_by_hand():
    r = bt.run_backtest(CLOSE, DAYS[:6], bt.positions_from_p_up(P_UP, "long_flat"), 2, cost_bps=10, execution=SAME)
    s = r.stats
    # long on days 1-4, flat on 5-6; one entry (close 0) and one exit (close 4): 2 sides.
    final = 1.1 * 0.9 * (1 - C) ** 2
    assert s["final_equity"] == pytest.approx(final, rel=1e-12)
    assert s["total_return"] == pytest.approx(final - 1, rel=1e-12)
    assert s["total_return_before_costs"] == pytest.approx(0.99 - 1, rel=1e-12)
    assert s["annualised_return"] == pytest.approx(final ** (252 / 6) - 1, rel=1e-9)
    # Peak after day 2 (1.1 * (1 - C)), trough after the exit: 0.9 * (1 - C) of the peak.
    assert s["max_drawdown"] == pytest.approx(0.9 * (1 - C) - 1, rel=1e-12)
    daily = [(1 - C) * 1.05 - 1, 110 / 105 - 1, -0.05, 99 / 104.5 - 1, -C, 0.0]  # exit cost booked day 5
    assert np.allclose(np.diff(r.equity.to_numpy()) / r.equity.to_numpy()[:-1], daily)
    assert s["sharpe"] == pytest.approx(_sharpe(daily), rel=1e-9)
    assert (s["win_rate"], s["n_holds"], s["n_flat_holds"]) == (0.5, 2, 1)
    assert s["turnover"] == 2 and s["turnover_per_year"] == pytest.approx(2 * 252 / 6)
    assert s["exposure"] == pytest.approx(4 / 6) and s["days"] == 6
    assert [h.entry for h in r.holds] == [DAYS[0], DAYS[2], DAYS[4]]


@pytest.mark.timeout(20)
def test_backtest_long_short_and_buy_and_hold_by_hand():
    r = bt.run_backtest(CLOSE, DAYS[:6], bt.positions_from_p_up(P_UP, "long_short"), 2, cost_bps=10, execution=SAME,
                        borrow_bps=0)
    s = r.stats
    # +1 (days 1-2), +1 (3-4), -1 (5-6). Sides: enter 1, flip long->short 2, close the short 1.
    short_leg = (1 - 0.05) * (1 - 4.95 / 103.95)  # daily -5% and -4.76% on the way to 108.9
    final = 1.1 * 0.9 * short_leg * (1 - C) ** 2 * (1 - 2 * C)
    assert s["final_equity"] == pytest.approx(final, rel=1e-12)
    assert s["max_drawdown"] == pytest.approx(final / (1.1 * (1 - C)) - 1, rel=1e-12)  # from day 2 to the end
    assert s["win_rate"] == pytest.approx(1 / 3) and s["turnover"] == 4 and s["exposure"] == 1.0

    bh = bt.buy_and_hold(CLOSE, DAYS[0], DAYS[6], cost_bps=10, execution=SAME).stats
    assert bh["final_equity"] == pytest.approx(1.089 * (1 - C) ** 2, rel=1e-12)
    assert bh["max_drawdown"] == pytest.approx(99 / 110 - 1, rel=1e-12)
    assert (bh["n_holds"], bh["turnover"]) == (1, 2)

    report, curves = bt.backtest_report(CLOSE, DAYS[:6], P_UP, 2, cost_bps=10, execution=SAME, borrow_bps=0)
    assert report["long_short"] == s and report["buy_and_hold"] == bh
    assert set(curves) == {"long_flat", "long_short", "buy_and_hold"} and report["settings"]["end"] == "2021-01-12"


@pytest.mark.timeout(20)
def test_backtest_risk_free_rate_and_staggered_tranches_by_hand():
    rf_annual = pd.Series([0.0252, 0.0252], index=[DAYS[0] - pd.Timedelta(days=3), DAYS[3]])
    rf = bt.rf_daily_from_yield(rf_annual, DAYS)
    assert np.allclose(rf.to_numpy(), 0.0001)  # 2.52% a year / 252, carried forward
    r = bt.run_backtest(CLOSE, DAYS[:6], bt.positions_from_p_up(P_UP, "long_flat"), 2, 10, rf_daily=rf, execution=SAME)
    daily = [(1 - C) * 1.05 - 1, 110 / 105 - 1, -0.05, 99 / 104.5 - 1, (1 - C) * 1.0001 - 1, 0.0001]
    assert r.stats["final_equity"] == pytest.approx(0.99 * (1 - C) ** 2 * 1.0001**2, rel=1e-12)
    assert r.stats["sharpe"] == pytest.approx(_sharpe(daily, 0.0001), rel=1e-9)

    # Staggered, h = 2, all signals up on days 0..3: tranche A holds 0->2->4, tranche B 1->3->5,
    # each with half the capital; each pays one entry and one exit.
    days = pd.bdate_range("2021-01-04", periods=6)
    close = pd.Series([100, 102, 104, 103, 105, 107], index=days, dtype=float)
    st = bt.run_backtest(close, days[:4], np.ones(4, int), 2, cost_bps=10, staggered=True, execution=SAME)
    assert st.stats["final_equity"] == pytest.approx(0.5 * (1 - C) ** 2 * (105 / 100 + 107 / 102), rel=1e-12)
    assert st.equity.iloc[1] == pytest.approx(0.5 * ((1 - C) * 1.02 + 1), rel=1e-12)  # B still in cash
    assert (st.stats["n_holds"], st.stats["turnover"]) == (4, 2)


# A gap between the signal's close and the next open: day 0's close 100, day 1 opens at 101.
GAP_DAYS = pd.bdate_range("2021-02-01", periods=5)
GAP_CLOSE = pd.Series([100, 102, 104, 104, 105], index=GAP_DAYS, dtype=float)
GAP_OPEN = pd.Series([100, 101, 103, 103.5, 104], index=GAP_DAYS, dtype=float)


@pytest.mark.timeout(20)
def test_backtest_enters_after_the_signals_close_by_hand():
    up = np.array([1])
    # Next open: long from day 1's open (101) to day 3's open (103.5); equity marked at closes.
    r = bt.run_backtest(GAP_CLOSE, GAP_DAYS[:1], up, 2, cost_bps=10, opens=GAP_OPEN, execution="next_open")
    assert r.equity.index.equals(GAP_DAYS[:4])
    assert np.allclose(r.equity.to_numpy(), [1, (1 - C) * 102 / 101, (1 - C) * 104 / 101, (1 - C) ** 2 * 103.5 / 101])
    assert (r.holds[0].entry, r.holds[0].exit) == (GAP_DAYS[1], GAP_DAYS[3])
    assert r.holds[0].price_return == pytest.approx(103.5 / 101 - 1)
    # Next close: from day 1's close (102) to day 3's close (104); day 0 -> 1 is not earned.
    nc = bt.run_backtest(GAP_CLOSE, GAP_DAYS[:1], up, 2, cost_bps=10)
    assert nc.stats["final_equity"] == pytest.approx((1 - C) ** 2 * 104 / 102, rel=1e-12)
    assert nc.holds[0].entry == GAP_DAYS[1] and nc.equity.iloc[1] == 1.0
    # Only the labelled upper bound enters at the signal's own close and earns day 0 -> 2.
    sc = bt.run_backtest(GAP_CLOSE, GAP_DAYS[:1], up, 2, cost_bps=10, execution="same_close")
    assert sc.holds[0].entry == GAP_DAYS[0] and sc.stats["final_equity"] == pytest.approx((1 - C) ** 2 * 1.04)
    # Buy-and-hold over the same days pays the same timing.
    bh = bt.buy_and_hold(GAP_CLOSE, GAP_DAYS[0], GAP_DAYS[3], 10, opens=GAP_OPEN, execution="next_open")
    assert bh.stats["final_equity"] == pytest.approx(r.stats["final_equity"], rel=1e-12)
    with pytest.raises(ValueError, match="opening prices"):
        bt.run_backtest(GAP_CLOSE, GAP_DAYS[:1], up, 2, execution="next_open")
    with pytest.raises(ValueError, match="unknown execution"):
        bt.run_backtest(GAP_CLOSE, GAP_DAYS[:1], up, 2, execution="tomorrow")


@pytest.mark.timeout(20)
def test_a_short_pays_its_borrow_for_every_close_it_is_held_over():
    b = 50 / 1e4 / 252  # 50 bps a year
    r = bt.run_backtest(GAP_CLOSE, GAP_DAYS[:1], np.array([-1]), 2, cost_bps=10, opens=GAP_OPEN,
                        execution="next_open", borrow_bps=50)
    legs = [(102 / 101 - 1, b), (103 / 102 - 1, 0), (104 / 103 - 1, b), (103.5 / 104 - 1, 0)]
    want = (1 - C) ** 2 * np.prod([1 - move - fee for move, fee in legs])
    assert r.stats["final_equity"] == pytest.approx(want, rel=1e-12)


@pytest.mark.timeout(20)
def test_the_report_never_trades_at_the_signals_close():
    p_up = np.array([0.9, 0.2])
    with_opens, _ = bt.backtest_report(GAP_CLOSE, GAP_DAYS[:2], p_up, 2, opens=GAP_OPEN)
    closes_only, _ = bt.backtest_report(GAP_CLOSE, GAP_DAYS[:2], p_up, 2)
    assert with_opens["settings"]["execution"] == "next_open"
    assert closes_only["settings"]["execution"] == "next_close"
    for report in (with_opens, closes_only):
        assert "UPPER BOUND" not in report["settings"]["timing"]
        assert "not tradable" in report["upper_bound_same_close"]["note"]
        assert report["upper_bound_same_close"]["long_flat"]["total_return"] > report["long_flat"]["total_return"]


# A panel of 3 instruments x 7 days: instrument 2 jumps 10 -> 20 between the first signal's
# close and the next; later instrument 0 gains 10% twice and instrument 2 10% once.
PANEL_CLOSE = np.array([[100, 100, 110, 121, 121, 121, 121],
                        [50, 50, 50, 50, 50, 50, 50],
                        [10, 20, 20, 22, 22, 22, 22]], dtype=float)
PANEL_ROWS = np.repeat([0, 1, 2], 3)
PANEL_INST = np.tile([0, 1, 2], 3)
PANEL_SCORE = np.tile([0.1, 0.5, 0.9], 3)  # instrument 2 long, instrument 0 short, every day


@pytest.mark.timeout(30)
def test_panel_scores_rank_ic_and_its_table_by_hand():
    from stocktrend.evaluation.core import ic_table
    from stocktrend.evaluation.panel_metrics import momentum_12_1_score, rank_ic_by_date, reversal_score

    close = np.ones((2, 300))
    close[0, 290], close[0, 295] = 100.0, 110.0  # instrument 0 rose 10% over the week to row 295
    close[0, 43], close[0, 274] = 2.0, 3.0  # and 50% from 252 to 21 days before it
    inst, rows = np.array([0, 1, 0]), np.array([295, 295, 200])
    assert reversal_score(close, inst, rows)[:2] == pytest.approx([-0.10, 0.0])  # last week's winner last
    mom = momentum_12_1_score(close, inst, rows)
    assert mom[:2] == pytest.approx([0.5, 0.0]) and np.isnan(mom[2])  # row 200 has no year behind it

    # Date "a": score ranks 1 2 3, return ranks 1 3 2: Spearman 1 - 6 * 2 / (3 * 8) = 0.5. Date "b" has two
    # instruments and "c" one score for all (no ordering): both left out. Date "d": ranks 3 2 1 4 against
    # 1 2 3 4, sum of squared rank gaps 8: 1 - 6 * 8 / (4 * 15) = 0.2.
    dates = np.array(["a"] * 3 + ["b"] * 2 + ["c"] * 3 + ["d"] * 4)
    score = np.array([1, 2, 3, 1, 2, 5, 5, 5, 3, 2, 1, 4], float)
    ret = np.array([0.1, 0.3, 0.2, 0.1, 0.2, 0.1, 0.2, 0.3, 1, 2, 3, 4])
    ic = rank_ic_by_date(dates, score, ret)
    assert ic.to_dict() == pytest.approx({"a": 0.5, "d": 0.2})

    model = pd.Series([0.1, 0.3, -0.1, 0.2, 0.0, 0.1], index=list("abcdef"))
    rule = pd.Series([0.0, 0.1, 0.1, 0.1, 0.1], index=list("abcdg"))
    table = ic_table({"model": model, "rule": rule}, horizon=1)
    assert table["model"]["mean"]["point"] == pytest.approx(0.6 / 6) and table["model"]["dates"] == 6
    assert table["model"]["share_positive"] == pytest.approx(4 / 6) and "model_minus_this" not in table["model"]
    # Paired on the dates both have (a b c d): model - rule = 0.1 0.2 -0.2 0.1.
    assert table["rule"]["model_minus_this"]["point"] == pytest.approx(0.2 / 4)
    assert table["rule"]["mean"]["low"] < 0.08 < table["rule"]["mean"]["high"]


@pytest.mark.timeout(20)
def test_the_panel_book_trades_the_close_after_its_signal_by_hand():
    from stocktrend.evaluation.panel_metrics import long_short

    book = long_short(PANEL_ROWS, PANEL_INST, PANEL_SCORE, PANEL_CLOSE, 2, 10, False, borrow_bps=0)
    # Signals on rows 0 and 2 trade at rows 1 and 3; the book exits at row 5. At row 3 it is
    # worth 1 - 1.21 + 1.1 = 0.89 of its (cost-reduced) start and trades 0.32 + 0.21 back to equal weights.
    entry = 1 - 2 * C
    after_rebalance = entry * (0.89 - 0.53 * C)
    want = [1, entry, entry * 0.9, after_rebalance, after_rebalance, after_rebalance * (1 - 2 * C)]
    assert np.allclose(book["curve"]["long_short"], want, rtol=1e-12)
    assert book["long_short"]["total_return"] == pytest.approx(want[-1] - 1, rel=1e-12)
    assert book["long_short"]["days"] == 5 and book["first_row"] == 0
    assert book["turnover_per_rebalance"] == pytest.approx(np.mean([1.0, 0.53 / (2 * 0.89)]), rel=1e-9)  # of a gross 2x book
    # The equal-weight book of the same instruments, same dates, no costs: the mean price move.
    free = long_short(PANEL_ROWS, PANEL_INST, PANEL_SCORE, PANEL_CLOSE, 2, 0, False, borrow_bps=0)
    assert free["equal_weight_long"]["total_return"] == pytest.approx((1.21 + 1 + 1.1) / 3 - 1, rel=1e-12)
    # Entered at the signal's own close, the book would have earned instrument 2's doubling.
    bound = long_short(PANEL_ROWS, PANEL_INST, PANEL_SCORE, PANEL_CLOSE, 2, 0, False, borrow_bps=0,
                       execution="same_close")
    assert bound["long_short"]["total_return"] > 0.5 > free["long_short"]["total_return"]
    # Staggered: a second book with half the capital trades row 1's signal at row 2 and exits at
    # row 4; its long and short legs both gain 10% on row 3, so it stays at 0.5.
    st = long_short(PANEL_ROWS, PANEL_INST, PANEL_SCORE, PANEL_CLOSE, 2, 0, True, borrow_bps=0)
    assert np.allclose(st["curve"]["long_short"], [1, 1, 0.95, 0.945, 0.945, 0.945], rtol=1e-12)
    with pytest.raises(ValueError, match="panel execution"):
        long_short(PANEL_ROWS, PANEL_INST, PANEL_SCORE, PANEL_CLOSE, 2, 0, False, execution="next_open")


# -- the report on a real (small) artifact ------------------------------------------------
@pytest.fixture(scope="module")
def small_artifact(small_real_dataset, tmp_path_factory):
    from conftest import train_small_artifact

    root = tmp_path_factory.mktemp("eval_artifact")
    return train_small_artifact(small_real_dataset, root / "models", "small", None, 42, root / "run")


@pytest.mark.timeout(120)
def test_report_has_every_field_and_leaves_the_artifact_intact(small_artifact, small_real_dataset):
    from stocktrend.inference.artifact import verify

    manifest_before = (small_artifact / "manifest.json").read_text()
    report = evaluate_artifact(small_artifact, dataset_dir=small_real_dataset, n_boot=60, seed=0, cost_bps=5)
    out = small_artifact / "evaluation"
    on_disk = json.loads((out / "report.json").read_text())  # strict JSON: NaN would be written as null
    assert on_disk == report
    for key in ("schema", "policy", "model", "dataset", "validation", "bootstrap", "test", "baselines",
                "backtest", "plots", "files", "interpretation"):
        assert key in report, key
    assert "test" in report["policy"] and report["dataset"]["fingerprint_matches_training"]
    assert report["validation"]["metrics"]["val_acc"] is not None
    meta = json.loads((small_real_dataset / "metadata.json").read_text())
    n_test = meta["splits"]["test"]["n"]
    assert report["test"]["n"] == n_test and np.sum(report["test"]["confusion_matrix"]) == n_test
    for name, m in report["test"]["metrics"].items():
        assert set(m) == {"point", "low", "high", "n_valid", "n_nan"}, name
        assert m["n_valid"] + m["n_nan"] == 60 and (m["low"] is None or m["low"] <= m["high"]), name
    assert set(report["baselines"]) == {"majority", "previous_direction", "logistic_regression", "gradient_boosting"}
    for b in report["baselines"].values():
        assert set(b["difference"]) == {"accuracy", "balanced_accuracy", "f1", "auroc", "mcc"}
        for d in b["difference"].values():
            assert "verdict" not in d and (d["low"] is None or d["low"] <= d["high"])  # secondary: no verdict
    # One headline, judged against its pre-declared opponents with familywise control.
    h = report["headline"]
    assert h["metric"] == "log_loss" and set(h["opponents"]) == {"prior", "logistic_regression"}
    assert set(h["beats"]) == set(h["opponents"]) and "over 2 comparisons" in h["method"]
    assert any(h["verdict"] in line for line in report["interpretation"])
    up, down = (meta["splits"]["train"]["class_counts_before_balancing"][k] for k in (1, 0))
    prior = up / (up + down)
    y_test = np.load(small_real_dataset / "test_y.npy").argmax(1)
    assert h["opponents"]["prior"] == pytest.approx(float(-np.mean(y_test * np.log(prior) + (1 - y_test) * np.log(1 - prior))))
    md = (out / "report.md").read_text()
    assert "## Headline" in md and "| verdict |" not in md
    # The majority baseline on the test windows scores exactly the test share of the training majority.
    counts = meta["splits"]["train"]["class_counts_before_balancing"]
    share_up = report["test"]["share_up_true"]
    want = share_up if counts[1] > counts[0] else 1 - share_up
    assert report["baselines"]["majority"]["metrics"]["accuracy"]["point"] == pytest.approx(want)
    for strat in ("long_flat", "long_short", "buy_and_hold"):
        for key in ("total_return", "annualised_return", "sharpe", "max_drawdown", "win_rate", "turnover"):
            assert key in report["backtest"][strat], (strat, key)
    assert "3month" in report["backtest"]["settings"]["risk_free"]
    for png in report["plots"].values():
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "## Baselines" in md and "## Backtest" in md and "](equity.png)" in md and "## Interpretation" in md
    assert len((out / "predictions.csv").read_text().splitlines()) == n_test + 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind
    verify(small_artifact)  # the manifest still matches: the report lives outside it
    assert (small_artifact / "manifest.json").read_text() == manifest_before
    lines = summary_lines(report)
    assert any("accuracy" in line for line in lines) and any("majority" in line for line in lines)


@pytest.mark.timeout(60)
def test_refuses_a_dataset_the_model_was_not_trained_on(small_artifact, small_real_dataset, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(small_real_dataset, other)
    meta = json.loads((other / "metadata.json").read_text())
    meta["fingerprint"] = "f" * 64
    (other / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(EvaluationError, match="not the dataset this model was trained on"):
        evaluate_artifact(small_artifact, dataset_dir=other, out_dir=tmp_path / "out", n_boot=20)
    assert not (tmp_path / "out").exists()
    # Without --dataset it rebuilds; a config that no longer gives the recorded fingerprint is refused
    # before anything is built.
    from stocktrend.evaluation.report import artifact_data_config

    parts = json.loads((small_artifact / "preprocessing.json").read_text())
    cfg = artifact_data_config(parts, ROOT / "datasets")
    with pytest.raises(EvaluationError, match="cannot be rebuilt"):
        resolve_dataset({"dataset": {"fingerprint": "0" * 64}}, cfg, None, cache_root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@pytest.mark.timeout(120)
def test_cli_runs_without_ray_and_rebuilds_the_dataset(small_artifact, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_cli", ROOT / "ray_jobs" / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with pytest.raises(SystemExit) as help_exit:
        cli.main(["--help"])
    assert help_exit.value.code == 0 and "--cost-bps" in capsys.readouterr().out
    # In a fresh process (this one has long imported Ray through other test modules), with
    # the default cache (the repo's datasets/cache) moved to tmp for the rebuild.
    driver = f"""
import json, runpy, sys
import stocktrend.evaluation.report as report
from stocktrend.data.cache import build_cached
report.build_cached = lambda cfg, root: build_cached(cfg, {str(tmp_path / "cache")!r})
sys.argv = ["evaluate.py", "--model", {str(small_artifact)!r}, "--boot", "20", "--staggered", "--out", {str(tmp_path / "rep")!r}]
try:
    runpy.run_path({str(ROOT / "ray_jobs" / "evaluate.py")!r}, run_name="__main__")
except SystemExit as done:
    rc = done.code
print(json.dumps({{"rc": rc, "ray_imported": "ray" in sys.modules}}))
"""
    run = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=110)
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["rc"] == 0 and "accuracy" in run.stdout and str(tmp_path / "rep") in run.stdout, run.stderr[-2000:]
    assert facts["ray_imported"] is False  # evaluation never imports Ray
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["backtest"]["settings"]["staggered"] is True
    assert list((tmp_path / "cache").iterdir())  # the dataset was rebuilt from the artifact's config


@pytest.mark.timeout(180)
def test_the_panel_report_writes_its_figures_files_and_pictures(tmp_path):
    from stocktrend.data.synthetic import MarketSpec
    from stocktrend.data.windows import split_arrays
    from stocktrend.evaluation.known_answers import market_dataset
    from stocktrend.evaluation.panel_metrics import rank_ic_by_date
    from stocktrend.evaluation.panel_report import evaluate_panel

    dataset, _ = market_dataset(MarketSpec(instruments=24, days=1500, plant="linear", ic=0.08, seed=3), tmp_path)
    x = split_arrays(dataset, "test", mmap=False)["X"]
    p_up = 1 / (1 + np.exp(-x[:, -1, 0]))  # a feature of the window's last day as the score
    header = {"model": {"name": "m", "version": "v1"}, "dataset": {"tickers": [], "test": {}}}
    report = evaluate_panel(dataset, p_up, tmp_path / "eval", 200, 0, 5.0, False, header)
    out = tmp_path / "eval"
    for name in ("report.json", "report.md", "predictions.csv", "rank_ic.png", "quintiles.png", "equity.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    assert "](rank_ic.png)" in md and "](quintiles.png)" in md and "](equity.png)" in md
    assert json.loads((out / "report.json").read_text())["rank_ic"] == report["rank_ic"]
    # The figures are those of the predictions file: the model's mean rank IC recomputed from it.
    rows = pd.read_csv(out / "predictions.csv")
    assert len(rows) == len(p_up) == report["test"]["windows"]
    ic = rank_ic_by_date(rows["date"].to_numpy(), rows["score_model"].to_numpy(), rows["realised_return"].to_numpy())
    assert report["rank_ic"]["model"]["mean"]["point"] == pytest.approx(ic.mean(), abs=1e-5)
    assert report["rank_ic"]["model"]["dates"] == len(ic) == report["test"]["dates"]
