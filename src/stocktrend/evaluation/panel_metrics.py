"""What a panel model is judged on: the rank information coefficient per date, a long-short
book from prices, and the cross-sectional baselines a quant tries first.

Every figure comes from one table of test windows: (date, instrument, p_up, realised h-day
return, label). Intervals resample whole dates in blocks (circular block bootstrap over
the test dates): the instruments of one date share that date's market, so resampling single
windows would understate the uncertainty by about the panel's width.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from stocktrend.evaluation.bootstrap import (
    Interval,
    block_bootstrap_ci,
    block_indices,
    data_block_length,
    default_block_length,
    interval,
)

MIN_CROSS_SECTION = 3  # a rank correlation over fewer instruments says nothing


def rank_ic_by_date(dates: np.ndarray, score: np.ndarray, ret: np.ndarray) -> pd.Series:
    """Spearman correlation between score and realised return across the instruments of
    each date (dates with fewer than three instruments, or no spread, are left out)."""
    frame = pd.DataFrame({"date": dates, "s": score, "r": ret}).dropna()
    out = {}
    for date, g in frame.groupby("date", sort=True):
        if len(g) < MIN_CROSS_SECTION or g["s"].nunique() < 2 or g["r"].nunique() < 2:
            continue
        out[date] = float(np.corrcoef(rankdata(g["s"]), rankdata(g["r"]))[0, 1])
    return pd.Series(out, dtype=float)


def mean_interval(values: np.ndarray, n_boot: int, seed: int, horizon: int) -> Interval:
    """Mean of a per-date series with a circular block bootstrap over dates, its block length
    from the series itself (``bootstrap.data_block_length``; at least 2h: neighbouring dates'
    h-day labels share days)."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return Interval(float(np.mean(values)) if len(values) else math.nan, math.nan, math.nan, 0, 0)
    block = data_block_length(values, floor=default_block_length(len(values), horizon))
    return block_bootstrap_ci(np.mean, values, n_boot=n_boot, seed=seed, block=block)


def date_block_ci(metric_fn, dates: np.ndarray, arrays: tuple[np.ndarray, ...], n_boot: int, seed: int,
                  horizon: int) -> dict[str, Interval]:
    """Interval of each metric of ``metric_fn(*arrays)`` resampling whole dates in blocks."""
    days, inverse = np.unique(dates, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == d) for d in range(len(days))]
    idx = block_indices(len(days), n_boot, default_block_length(len(days), horizon), seed)
    points = metric_fn(*arrays)
    reps: dict[str, list[float]] = {k: [] for k in points}
    for sample in idx:
        rows = np.concatenate([rows_of[d] for d in sample])
        for k, v in metric_fn(*(a[rows] for a in arrays)).items():
            reps[k].append(v)
    return {k: interval(points[k], np.asarray(reps[k])) for k in points}


def long_short(dates: np.ndarray, instrument: np.ndarray, score: np.ndarray, ret: np.ndarray, horizon: int,
               cost_bps: float, staggered: bool) -> dict[str, Any]:
    """Each rebalancing date: long the top third by score, short the bottom third, equal
    weights, held h days (the window's realised h-day return), costs on the traded weight.
    Non-overlapping holds every h-th date, or (staggered) h books started on consecutive
    dates, each 1/h of the capital, averaged. Against the equal-weight long book of the same
    instruments (buy and hold, rebalanced at the same dates)."""
    frame = pd.DataFrame({"date": dates, "i": instrument, "s": score, "r": ret}).dropna()
    days = np.sort(frame["date"].unique())
    books = range(horizon) if staggered else range(1)
    runs = []
    for offset in books:
        stamps = days[offset::horizon]
        prev = pd.Series(dtype=float)
        pnl, bench, turnover = [], [], []
        for d in stamps:
            g = frame[frame["date"] == d]
            n = len(g) // 3
            if n == 0:
                continue
            order = g.sort_values("s")
            w = pd.Series(0.0, index=g["i"])
            w[order["i"].iloc[-n:]] = 1.0 / n
            w[order["i"].iloc[:n]] = -1.0 / n
            traded = w.sub(prev, fill_value=0.0).abs().sum()
            prev = w
            r = g.set_index("i")["r"]
            pnl.append(float((w * r).sum()) - traded * cost_bps / 1e4)
            bench.append(float(r.mean()))
            turnover.append(float(traded / 2))  # the share of the book replaced
        runs.append((np.asarray(pnl), np.asarray(bench), np.asarray(turnover)))
    periods_per_year = 252 / horizon

    def stats(returns: np.ndarray) -> dict[str, float]:
        equity = np.cumprod(1 + returns)
        peak = np.maximum.accumulate(equity)
        sd = returns.std(ddof=1) if len(returns) > 1 else math.nan
        return {"total_return": float(equity[-1] - 1) if len(equity) else math.nan,
                "annual_return": float(equity[-1] ** (periods_per_year / len(returns)) - 1) if len(returns) else math.nan,
                "sharpe": float(returns.mean() / sd * math.sqrt(periods_per_year)) if sd and sd > 0 else math.nan,
                "max_drawdown": float((equity / peak - 1).min()) if len(equity) else math.nan,
                "periods": int(len(returns))}

    # Staggered books each hold 1/h of the capital: average their period returns.
    length = min(len(r[0]) for r in runs)
    ls = np.mean([r[0][:length] for r in runs], axis=0)
    ew = np.mean([r[1][:length] for r in runs], axis=0)
    return {"long_short": stats(ls), "equal_weight_long": stats(ew),
            "turnover_per_rebalance": float(np.mean(np.concatenate([r[2] for r in runs]))),
            "cost_bps": cost_bps, "staggered": staggered, "holding_days": horizon,
            "curve": {"long_short": np.cumprod(1 + ls).tolist(), "equal_weight_long": np.cumprod(1 + ew).tolist()}}


def reversal_score(close: np.ndarray, inst: np.ndarray, rows: np.ndarray, days: int = 5) -> np.ndarray:
    """The one-week reversal rule: minus the past ``days``-day return (last week's losers first)."""
    return -(close[inst, rows] / close[inst, rows - days] - 1)


def momentum_12_1_score(close: np.ndarray, inst: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """12-1 momentum: the return from 12 months (252 days) to 1 month (21 days) ago."""
    ok = rows >= 252
    out = np.full(len(rows), np.nan)
    out[ok] = close[inst[ok], rows[ok] - 21] / close[inst[ok], rows[ok] - 252] - 1
    return out
