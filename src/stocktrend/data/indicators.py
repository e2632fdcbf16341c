"""Causal technical indicators on pandas Series: every value at day t uses rows <= t only.

Only trailing ``rolling``/``ewm``/``shift(+k)`` are used here; no centred windows, no
``bfill``, no statistic over the whole series. Outputs are scale-free (returns, ratios,
z-scores) because raw back-adjusted price levels encode later corporate actions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def log_return(close: pd.Series, n: int) -> pd.Series:
    return np.log(close / close.shift(n))


def realised_vol(close: pd.Series, n: int) -> pd.Series:
    return np.log(close / close.shift(1)).rolling(n).std() * np.sqrt(252)


def parkinson_vol(high: pd.Series, low: pd.Series, n: int) -> pd.Series:
    hl = np.log(high / low) ** 2
    return np.sqrt(hl.rolling(n).mean() / (4 * np.log(2)) * 252)


def garman_klass_vol(o: pd.Series, h: pd.Series, lo: pd.Series, c: pd.Series, n: int) -> pd.Series:
    term = 0.5 * np.log(h / lo) ** 2 - (2 * np.log(2) - 1) * np.log(c / o) ** 2
    return np.sqrt(term.clip(lower=0).rolling(n).mean() * 252)


def rsi(close: pd.Series, n: int) -> pd.Series:
    """Wilder's RSI scaled to [-1, 1] (0 = neutral)."""
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / n, adjust=False, min_periods=n).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / n, adjust=False, min_periods=n).mean()
    total = gain + loss
    return (gain - loss) / total.where(total > 0)


def macd(close: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[pd.Series, ...]:
    """MACD line, signal and histogram, divided by the close to be scale-free."""
    line = close.ewm(span=fast, adjust=False, min_periods=fast).mean() - close.ewm(
        span=slow, adjust=False, min_periods=slow
    ).mean()
    sig = line.ewm(span=signal, adjust=False, min_periods=signal).mean()
    return line / close, sig / close, (line - sig) / close


def true_range(h: pd.Series, lo: pd.Series, c: pd.Series) -> pd.Series:
    prev = c.shift(1)
    return pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1, skipna=False)


def atr_ratio(h: pd.Series, lo: pd.Series, c: pd.Series, n: int) -> pd.Series:
    return true_range(h, lo, c).ewm(alpha=1 / n, adjust=False, min_periods=n).mean() / c


def bollinger(close: pd.Series, n: int = 20, k: float = 2.0) -> tuple[pd.Series, pd.Series]:
    """Position within the bands (0 = lower, 1 = upper) and band width over the mean."""
    mean, std = close.rolling(n).mean(), close.rolling(n).std()
    width = 2 * k * std
    return (close - (mean - k * std)) / width.where(width > 0), width / mean


def ma_gap(close: pd.Series, n: int) -> pd.Series:
    return close / close.rolling(n).mean() - 1


def ema_gap(close: pd.Series, n: int) -> pd.Series:
    return close / close.ewm(span=n, adjust=False, min_periods=n).mean() - 1


def zscore(x: pd.Series, n: int) -> pd.Series:
    std = x.rolling(n).std()
    return (x - x.rolling(n).mean()) / std.where(std > 0)


def stochastic(h: pd.Series, lo: pd.Series, c: pd.Series, n: int = 14, d: int = 3) -> tuple[pd.Series, pd.Series]:
    hh, ll = h.rolling(n).max(), lo.rolling(n).min()
    span = hh - ll
    k = (c - ll) / span.where(span > 0)
    return k, k.rolling(d).mean()


def cci(h: pd.Series, lo: pd.Series, c: pd.Series, n: int = 20) -> pd.Series:
    tp = (h + lo + c) / 3
    mean = tp.rolling(n).mean()
    mad = (tp - mean).abs().rolling(n).mean()
    return (tp - mean) / (0.015 * mad.where(mad > 0)) / 100


def obv(close: pd.Series, volume: pd.Series) -> pd.Series:
    direction = np.sign(close.diff()).fillna(0)
    return (direction * volume).cumsum()


def rolling_beta(y: pd.Series, x: pd.Series, n: int) -> pd.Series:
    cov = y.rolling(n).cov(x)
    var = x.rolling(n).var()
    return cov / var.where(var > 0)


def drawdown(close: pd.Series, n: int) -> pd.Series:
    return close / close.rolling(n).max() - 1
