"""A backtest from prices (not from accuracy): what following the signals would have earned.

Timing: the signal for the window ending on day t is known at t's close, so no desk can
trade on it at that close. ``execution`` says where it trades instead:

- ``next_open`` (the default where the source has opens): at day t+1's open, held h trading
  days, exiting at the open of day t+1+h. Equity is marked at every close; the overnight
  move into t+1's open is not earned.
- ``next_close`` (the default without opens): at day t+1's close, exiting at t+1+h's close.
- ``same_close``: at day t's own close -- what the label measures, which nobody can trade.
  Reports show it only as a labelled upper bound.

Prices are the target's adjusted closes (and opens on the same basis), so dividends and
splits are in.

- Non-overlapping holds (default): trade on the first test date, then on the first test
  date at or after the previous exit (every h-th test date when dates are contiguous).
- ``staggered=True``: h tranches of 1/h of the capital, tranche k starting on the k-th
  test date, so every signal is used; the portfolio is the sum of the tranches, never
  rebalanced between them.
- long/flat: up -> long, down -> flat. long/short: up -> long, down -> short.
- Costs: ``cost_bps`` per side on every change of position, proportional to the traded
  fraction of equity (flat -> long is one side, long -> short two). Holding through two
  holds with the same signal costs nothing. Every open position is closed, and charged,
  at the end. Buy-and-hold over the same days, with the same execution, pays one entry
  and one exit.
- Shorts pay a borrow fee (``borrow_bps`` a year, accrued for every close a short is held
  over; default 25 bps, general collateral for liquid large caps) and earn no rebate.
- Idle capital earns the risk-free rate for every day that ends flat.
- Risk-free rate: the 3-month Treasury yield of the data (annual, decimal) divided by
  252, carried forward to trading days without limit (the curve may end a few days
  before the prices). Without it rf = 0, and the result says so.
- Sharpe: mean / std (ddof=1) of daily returns in excess of rf, times sqrt(252).
  Annualised return: equity ** (252 / days) - 1. Max drawdown: the worst fall of the
  daily equity curve from its running peak (a negative fraction). Win rate: the share
  of non-flat holds whose price move, in the held direction, was positive (before costs).
  Turnover: the summed absolute position changes, in units of equity (2.0 = the capital
  traded twice), also per year.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pandas as pd

from stocktrend.data.config import DataConfig
from stocktrend.data.features import adjusted_ohlc
from stocktrend.data.sources import read_source

log = logging.getLogger(__name__)
DAYS_PER_YEAR = 252
MODES = ("long_flat", "long_short")
EXECUTIONS = ("next_open", "next_close", "same_close")
UPPER_BOUND = "same_close"  # trades at the signal's own close: shown only as a labelled upper bound
DEFAULT_BORROW_BPS = 25.0  # a year, on the short notional
TIMING = {
    "next_open": "signal at day t's close, entered at day t+1's open, held h trading days (exit at t+1+h's open)",
    "next_close": "signal at day t's close, entered at day t+1's close, held h trading days",
    "same_close": "UPPER BOUND, not tradable: entered at the signal's own close (day t), held h trading days",
}


@dataclasses.dataclass
class Market:
    close: pd.Series  # adjusted close on the target's trading days
    rf_daily: pd.Series | None  # daily risk-free return on the same days, None if unknown
    rf_note: str
    rf_span: tuple[pd.Timestamp, pd.Timestamp] | None = None  # first and last quote of the rate
    open: pd.Series | None = None  # adjusted open on the same days, None when the source has none


@dataclasses.dataclass
class Hold:
    entry: pd.Timestamp
    exit: pd.Timestamp
    position: int  # +1 long, 0 flat, -1 short
    price_return: float  # price at exit / price at entry - 1 (opens or closes, as executed)


@dataclasses.dataclass
class Result:
    equity: pd.Series  # daily, starting at 1.0 on the first test date's close
    stats: dict
    holds: list[Hold]


# -- inputs ------------------------------------------------------------------
def rf_daily_from_yield(annual: pd.Series, index: pd.DatetimeIndex) -> pd.Series:
    """Daily rf on ``index`` from an annual decimal yield series, carried forward (0 before
    the first quote)."""
    annual = annual.dropna()
    union = annual.index.union(index)
    aligned = annual.reindex(union).ffill().reindex(index)
    return (aligned.fillna(0.0) / DAYS_PER_YEAR).rename("rf_daily")


def _rf_coverage(days: pd.DatetimeIndex, span: tuple[pd.Timestamp, pd.Timestamp] | None) -> str:
    """How many backtest days lie outside the quoted period of the rate (said in the report)."""
    if span is None:
        return ""
    after, before = int((days > span[1]).sum()), int((days < span[0]).sum())
    notes = []
    if after:
        notes.append(f"{after} backtest days after the last quote ({span[1].date()}) reuse it")
    if before:
        notes.append(f"{before} backtest days before the first quote use rf = 0")
    return "; " + "; ".join(notes) if notes else ""


def load_market(cfg: DataConfig, rf_source: str = "ust", rf_column: str = "3month") -> Market:
    """The target's adjusted closes and the daily risk-free rate, from the dataset's sources."""
    target = read_source(cfg.sources[cfg.target], cfg.source_path(cfg.target), cfg.target)
    ohlc = adjusted_ohlc(target)
    close = ohlc["close"].rename("close")
    opens = ohlc["open"].rename("open") if "open" in ohlc and ohlc["open"].notna().all() else None
    names = [rf_source] if rf_source in cfg.sources else []
    names += [n for n, s in cfg.sources.items() if s.kind == "rates" and n != rf_source]
    for name in names:
        spec = cfg.sources[name]
        if spec.include and rf_column not in spec.include:
            continue
        rates = read_source(spec, cfg.source_path(name), name)
        if rf_column in rates:
            quotes = rates[rf_column].dropna()
            rf = rf_daily_from_yield(quotes, close.index)
            note = (f"daily rf = {rf_column} Treasury yield / 252 (source '{name}'), carried forward to "
                    "trading days")
            return Market(close, rf, note, (quotes.index.min(), quotes.index.max()), opens)
    return Market(close, None,
                  f"no '{rf_column}' rate in the data: rf = 0, Sharpe ratios are not net of a risk-free rate",
                  None, opens)


def positions_from_p_up(p_up: np.ndarray, mode: str) -> np.ndarray:
    up = np.asarray(p_up, dtype=float) > 0.5  # the same threshold as the metrics
    if mode == "long_flat":
        return up.astype(int)
    if mode == "long_short":
        return np.where(up, 1, -1)
    raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")


# -- simulation ----------------------------------------------------------------
@dataclasses.dataclass
class _Path:
    """The prices trades happen at, in time order: every close (close executions) or every
    open and close interleaved (``next_open``). Point 0 is the first signal's close."""
    price: np.ndarray
    day: pd.DatetimeIndex  # the trading day of each point
    at_close: np.ndarray  # True where the point is a close: equity is reported there
    step: int  # points per trading day
    offset: int  # the entry point of a signal on day 0, in points


def _path(close: pd.Series, opens: pd.Series | None, execution: str, first: int, last: int) -> _Path:
    days = close.index[first : last + 1]
    closes = close.to_numpy()[first : last + 1]
    if execution != "next_open":
        return _Path(closes, days, np.ones(len(days), bool), 1, 0 if execution == "same_close" else 1)
    o = opens.reindex(days).to_numpy()
    price = np.empty(2 * len(days) - 1)
    price[0::2], price[1::2] = closes, o[1:]  # close 0, open 1, close 1, open 2, ...
    at_close = np.zeros(len(price), bool)
    at_close[0::2] = True
    return _Path(price, days.repeat(2)[1:], at_close, 2, 1)


def _schedule(entry_idx: np.ndarray, horizon: int, start: int, last: int) -> list[int]:
    """Positions in ``entry_idx`` (calendar indices of signals) of the non-overlapping
    holds of one tranche starting at signal ``start``; holds must exit by ``last``."""
    picks, free_from = [], -1
    for k in range(start, len(entry_idx)):
        e = entry_idx[k]
        if e >= free_from and e + horizon <= last:
            picks.append(k)
            free_from = e + horizon
    return picks


def _simulate(path: _Path, rf: np.ndarray, borrow: float, holds: list[tuple[int, int, int]], cost: float) -> tuple:
    """Equity at every point of ``path`` for holds (entry point, exit point, position).

    pos[k] is the position held from point k-1 to point k. The cost of the change made at
    point k-1 is booked in segment k, the final exit in the last one. A segment that ends at
    a close carries that day's rf (when flat) or borrow fee (when short).
    """
    price = path.price
    n = len(price)
    pos = np.zeros(n + 1)  # pos[0] = before the start, pos[n] = after the end: flat
    for e, x, p in holds:
        pos[e + 1 : x + 1] = p
    r = np.zeros(n)
    r[1:] = price[1:] / price[:-1] - 1
    changes = np.abs(np.diff(pos))  # changes[k] = |pos[k+1] - pos[k]|, made at point k
    held = pos[1:n]
    carry = path.at_close[1:] * ((held == 0) * rf[1:] - (held < 0) * np.abs(held) * borrow)
    growth = np.ones(n)
    growth[1:] = (1 - cost * changes[:-1]) * (1 + held * r[1:] + carry)
    growth[-1] *= 1 - cost * changes[-1]
    return np.cumprod(growth), changes, np.abs(held[path.at_close[1:]])


def _stats(equity: np.ndarray, rf: np.ndarray, holds: list[Hold], turnover: float, exposure: float,
           gross_final: float) -> dict:
    days = len(equity) - 1
    daily = equity[1:] / equity[:-1] - 1
    excess = daily - rf[1:]
    sd = float(np.std(excess, ddof=1)) if days > 1 else math.nan
    final = float(equity[-1])
    active = [h for h in holds if h.position != 0]
    wins = [h.position * h.price_return > 0 for h in active]
    return {
        "start_equity": 1.0,
        "final_equity": final,
        "total_return": final - 1,
        "total_return_before_costs": gross_final - 1,
        "annualised_return": final ** (DAYS_PER_YEAR / days) - 1 if days and final > 0 else math.nan,
        "sharpe": float(np.mean(excess)) / sd * math.sqrt(DAYS_PER_YEAR) if sd and sd > 0 else math.nan,
        "max_drawdown": float(np.min(equity / np.maximum.accumulate(equity) - 1)),
        "win_rate": float(np.mean(wins)) if wins else math.nan,
        "n_holds": len(active),
        "n_flat_holds": len(holds) - len(active),
        "turnover": turnover,
        "turnover_per_year": turnover * DAYS_PER_YEAR / days if days else math.nan,
        "exposure": exposure,
        "days": days,
    }


def _calendar(close: pd.Series, dates) -> np.ndarray:
    idx = close.index.get_indexer(pd.DatetimeIndex(dates))
    if (idx < 0).any():
        raise ValueError(f"signal date {pd.DatetimeIndex(dates)[idx < 0][0].date()} is not a trading day of the prices")
    if (np.diff(idx) <= 0).any():
        raise ValueError("signal dates must be strictly increasing")
    return idx


def _check_execution(execution: str, opens: pd.Series | None) -> None:
    if execution not in EXECUTIONS:
        raise ValueError(f"unknown execution {execution!r}; use one of {EXECUTIONS}")
    if execution == "next_open" and opens is None:
        raise ValueError("execution 'next_open' needs opening prices; the source has none (use 'next_close')")


def _delay(execution: str) -> int:
    """Trading days between the signal's close and the entry's price."""
    return 0 if execution == "same_close" else 1


def run_backtest(
    close: pd.Series,
    dates,
    positions: np.ndarray,
    horizon: int,
    cost_bps: float = 5.0,
    staggered: bool = False,
    rf_daily: pd.Series | None = None,
    *,
    opens: pd.Series | None = None,
    execution: str = "next_close",
    borrow_bps: float = DEFAULT_BORROW_BPS,
) -> Result:
    """Follow ``positions`` (+1/0/-1 per signal date), each traded as ``execution`` says;
    equity starts at 1.0 at the first signal date's close."""
    _check_execution(execution, opens)
    close = close.astype(float)
    idx = _calendar(close, dates)
    positions = np.asarray(positions, dtype=int)
    if len(positions) != len(idx):
        raise ValueError(f"{len(positions)} positions for {len(idx)} dates")
    delay = _delay(execution)
    last = len(close) - 1 - delay  # a signal's hold must be priced before the data end
    tranches = [_schedule(idx, horizon, k, last) for k in range(horizon if staggered else 1)]
    end = max((idx[t[-1]] + horizon + delay for t in tranches if t), default=None)
    if end is None:
        raise ValueError(f"no hold of {horizon} days fits before the prices end ({close.index[-1].date()})")
    start = int(idx[0])
    path = _path(close, None if opens is None else opens.astype(float), execution, start, end)
    if np.isnan(path.price).any():
        raise ValueError("the price series has gaps (NaN prices) inside the backtest period")
    rf_days = np.zeros(len(path.day)) if rf_daily is None else rf_daily.reindex(path.day).fillna(0.0).to_numpy()
    cost, borrow = cost_bps / 1e4, borrow_bps / 1e4 / DAYS_PER_YEAR

    equities, grosses, turnover, exposure, holds = [], [], 0.0, 0.0, []
    weight = 1 / len(tranches)
    for picks in tranches:
        spec = []
        for k in picks:
            e = path.step * int(idx[k] - start) + path.offset
            spec.append((e, e + path.step * horizon, int(positions[k])))
        eq, changes, expo = _simulate(path, rf_days, borrow, spec, cost)
        equities.append(eq[path.at_close])
        grosses.append(_simulate(path, rf_days, 0.0, spec, 0.0)[0][-1])
        turnover += weight * float(changes.sum())
        exposure += weight * float(expo.mean()) if len(expo) else 0.0
        holds += [Hold(path.day[e], path.day[x], p, float(path.price[x] / path.price[e] - 1)) for e, x, p in spec]
    equity = np.mean(equities, axis=0)  # each tranche started with 1/h of the capital
    days = path.day[path.at_close]
    rf_close = rf_days[path.at_close]
    stats = _stats(equity, rf_close, holds, turnover, exposure, float(np.mean(grosses)))
    return Result(pd.Series(equity, index=days, name="equity"), stats, holds)


def buy_and_hold(close: pd.Series, start, end, cost_bps: float = 5.0, rf_daily: pd.Series | None = None, *,
                 opens: pd.Series | None = None, execution: str = "next_close") -> Result:
    """Long from the signal at ``start`` until the backtest's last day ``end``, traded as
    ``execution`` says: one entry and one exit cost."""
    idx = _calendar(close, [start, end])
    days = int(idx[1] - idx[0]) - _delay(execution)
    return run_backtest(close, [start], [1], days, cost_bps, False, rf_daily, opens=opens, execution=execution)


def default_execution(opens: pd.Series | None) -> str:
    return "next_open" if opens is not None else "next_close"


def backtest_report(
    close: pd.Series,
    dates,
    p_up: np.ndarray,
    horizon: int,
    cost_bps: float = 5.0,
    staggered: bool = False,
    rf_daily: pd.Series | None = None,
    rf_note: str = "",
    rf_span: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    *,
    opens: pd.Series | None = None,
    execution: str | None = None,
    borrow_bps: float = DEFAULT_BORROW_BPS,
) -> tuple[dict, dict[str, pd.Series]]:
    """Both strategies and buy-and-hold over the same days, traded at ``execution`` (the
    next open where there are opens, else the next close), plus the same-close upper bound:
    (JSON-able dict, equity curves)."""
    execution = execution or default_execution(opens)

    def strategies(how: str) -> dict[str, Result]:
        return {m: run_backtest(close, dates, positions_from_p_up(p_up, m), horizon, cost_bps, staggered, rf_daily,
                                opens=opens, execution=how, borrow_bps=borrow_bps) for m in MODES}

    results = strategies(execution)
    days = results["long_flat"].equity.index
    results["buy_and_hold"] = buy_and_hold(close, dates[0], days[-1], cost_bps, rf_daily, opens=opens,
                                           execution=execution)
    bound = strategies(UPPER_BOUND) if execution != UPPER_BOUND else {}
    report = {
        "settings": {
            "horizon": horizon,
            "cost_bps_per_side": cost_bps,
            "borrow_bps_per_year": borrow_bps,
            "holds": f"{horizon} staggered tranches of 1/{horizon} capital" if staggered
            else f"non-overlapping {horizon}-day holds",
            "staggered": staggered,
            "start": str(days[0].date()),
            "end": str(days[-1].date()),
            "risk_free": (rf_note or ("rf = 0" if rf_daily is None else "given")) + _rf_coverage(days, rf_span),
            "execution": execution,
            "timing": TIMING[execution],
        },
        **{name: r.stats for name, r in results.items()},
    }
    if bound:
        report["upper_bound_same_close"] = {
            "note": "not tradable: entered at the signal's own close, the price the label starts from",
            **{m: {k: r.stats[k] for k in ("total_return", "sharpe")} for m, r in bound.items()}}
    log.info("backtest %s..%s (%s): long/flat %.1f%%, buy-and-hold %.1f%%", days[0].date(), days[-1].date(),
             execution, 100 * results["long_flat"].stats["total_return"],
             100 * results["buy_and_hold"].stats["total_return"])
    return report, {name: r.equity for name, r in results.items()}


__all__ = ["Market", "Hold", "Result", "DAYS_PER_YEAR", "MODES", "EXECUTIONS", "UPPER_BOUND", "DEFAULT_BORROW_BPS",
           "rf_daily_from_yield", "load_market", "positions_from_p_up", "run_backtest", "buy_and_hold",
           "default_execution", "backtest_report"]
