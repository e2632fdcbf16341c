"""What a panel model is judged on: the rank information coefficient per date, a long-short
book from prices (a daily portfolio traded the close after its signal), and the
cross-sectional baselines a quant tries first.

Every figure comes from one table of test windows: (date, instrument, p_up, realised h-day
return, label), and the instruments' closes for the book. Intervals (``evaluation.core``) treat
whole dates as the unit: the instruments of one date share that date's market.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from stocktrend.evaluation.backtest import DEFAULT_BORROW_BPS

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


PANEL_EXECUTIONS = ("next_close", "same_close")  # a close panel has no opens


def _price_growth(close: np.ndarray) -> np.ndarray:
    """growth[i, j] = close[i, j] / close[i, j-1]; 1 where either is missing (a delisted
    instrument's holding keeps its last value: no return, no loss)."""
    px = pd.DataFrame(close.T).ffill().to_numpy().T
    growth = np.ones_like(px)
    with np.errstate(invalid="ignore", divide="ignore"):
        growth[:, 1:] = px[:, 1:] / px[:, :-1]
    return np.where(np.isfinite(growth), growth, 1.0)


def _book_values(targets: dict[int, np.ndarray | None], growth: np.ndarray, first: int, last: int, capital: float,
                 cost: float, borrow: float) -> tuple[np.ndarray, list[float]]:
    """Value, on calendar rows first..last, of a book that starts as ``capital`` in cash and at
    each row of ``targets`` trades (at that close) to those weights of its value (None: all
    cash). Holdings drift with prices between trades; ``cost`` per unit of traded notional;
    shorts pay ``borrow`` per close held over. Also the share of the book replaced per trade."""
    held, cash = np.zeros(growth.shape[0]), capital
    values, replaced = np.empty(last - first + 1), []
    for j in range(first, last + 1):
        if j > first and held.any():
            held = held * growth[:, j]
            cash -= borrow * -held[held < 0].sum()
        if j in targets:
            value, w = cash + held.sum(), targets[j]
            want = np.zeros_like(held) if w is None else w * value
            traded = float(np.abs(want - held).sum())
            fee = cost * traded
            held = want * (1 - fee / value)
            cash = value - fee - held.sum()
            if w is not None:
                replaced.append(traded / (np.abs(w).sum() * value))
        values[j - first] = cash + held.sum()
    return values, replaced


def _daily_stats(values: np.ndarray) -> dict[str, float]:
    """From a daily value series starting at 1 (the first signal's close)."""
    returns = values[1:] / values[:-1] - 1
    days = len(returns)
    sd = returns.std(ddof=1) if days > 1 else math.nan
    return {"total_return": float(values[-1] - 1),
            "annual_return": float(values[-1] ** (252 / days) - 1) if days else math.nan,
            "sharpe": float(returns.mean() / sd * math.sqrt(252)) if sd and sd > 0 else math.nan,
            "max_drawdown": float((values / np.maximum.accumulate(values) - 1).min()),
            "days": int(days)}


def long_short(rows: np.ndarray, instrument: np.ndarray, score: np.ndarray, close: np.ndarray, horizon: int,
               cost_bps: float, staggered: bool, *, borrow_bps: float = DEFAULT_BORROW_BPS,
               execution: str = "next_close") -> dict[str, Any]:
    """A long-short portfolio from prices, traded as a desk could.

    Each rebalancing signal date (a calendar row of ``close``, instruments x days): long the
    top third by score, short the bottom third, equal weights of the book's value on each
    side, among the instruments with a window that day. The signal is known at that close;
    the book trades at the next close (``execution='next_close'``; ``'same_close'`` is the
    untradable upper bound) and holds h days, its positions drifting with prices. Costs
    (``cost_bps``) on every traded notional, entry, rebalance and the final exit; shorts pay
    ``borrow_bps`` a year. Non-overlapping holds every h-th signal date, or (staggered) h
    books started on consecutive dates, each with 1/h of the capital: their values are summed
    into one daily portfolio. Against the equal-weight long book of the same instruments,
    traded and charged the same way. The long-short book is self-financing (the shorts fund
    the longs; collateral interest is not credited), so its return is already an excess
    return; no rate is subtracted from either book's Sharpe (the panel carries none)."""
    if execution not in PANEL_EXECUTIONS:
        raise ValueError(f"unknown panel execution {execution!r}; use one of {PANEL_EXECUTIONS}")
    delay = 0 if execution == "same_close" else 1
    frame = pd.DataFrame({"row": rows, "i": instrument, "s": score}).dropna()
    n_inst, n_rows = close.shape
    ls_w, ew_w = {}, {}
    for row, g in frame.groupby("row", sort=True):
        if row + delay + horizon > n_rows - 1 or len(g) < MIN_CROSS_SECTION:
            continue  # its hold could not be priced to the end, or no thirds to rank
        n, order = len(g) // 3, g.sort_values("s", kind="stable")["i"].to_numpy()
        ls_w[row] = np.zeros(n_inst)
        ls_w[row][order[-n:]], ls_w[row][order[:n]] = 1.0 / n, -1.0 / n
        ew_w[row] = np.zeros(n_inst)
        ew_w[row][order] = 1.0 / len(order)
    signals = np.asarray(sorted(ls_w), dtype=int)
    if not len(signals):
        raise ValueError("no signal date has a cross-section whose hold fits before the prices end")
    growth = _price_growth(close)
    first, last = int(signals[0]), int(signals[-1]) + delay + horizon
    starts = range(min(horizon, len(signals))) if staggered else range(1)
    cost, borrow = cost_bps / 1e4, borrow_bps / 1e4 / 252

    def portfolio(weights: dict[int, np.ndarray]) -> tuple[np.ndarray, list[float]]:
        total, replaced = np.zeros(last - first + 1), []
        for offset in starts:
            trades = signals[offset::horizon] + delay
            targets: dict[int, np.ndarray | None] = {int(t) + horizon: None for t in trades}
            targets |= {int(t): weights[int(t) - delay] for t in trades}
            values, rep = _book_values(targets, growth, first, last, 1 / len(starts), cost, borrow)
            total += values
            replaced += rep
        return total, replaced

    ls, replaced = portfolio(ls_w)
    ew, _ = portfolio(ew_w)
    return {"long_short": _daily_stats(ls), "equal_weight_long": _daily_stats(ew),
            "turnover_per_rebalance": float(np.mean(replaced)), "cost_bps": cost_bps, "borrow_bps_per_year": borrow_bps,
            "staggered": staggered, "holding_days": horizon, "execution": execution,
            "first_row": first, "curve": {"long_short": ls.tolist(), "equal_weight_long": ew.tolist()}}


def reversal_score(close: np.ndarray, inst: np.ndarray, rows: np.ndarray, days: int = 5) -> np.ndarray:
    """The one-week reversal rule: minus the past ``days``-day return (last week's losers first)."""
    return -(close[inst, rows] / close[inst, rows - days] - 1)


def momentum_12_1_score(close: np.ndarray, inst: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """12-1 momentum: the return from 12 months (252 days) to 1 month (21 days) ago."""
    ok = rows >= 252
    out = np.full(len(rows), np.nan)
    out[ok] = close[inst[ok], rows[ok] - 21] / close[inst[ok], rows[ok] - 252] - 1
    return out
