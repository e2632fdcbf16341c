"""Labels for the window ending on day t, from the target's adjusted close."""

from __future__ import annotations

import numpy as np
import pandas as pd


def forward_return(price: pd.Series, horizon: int) -> pd.Series:
    """Return from close[t] to close[t + horizon] (NaN where t + horizon is beyond the data)."""
    return price.shift(-horizon) / price - 1


def binary_labels(price: pd.Series, horizon: int) -> pd.Series:
    """1 (up) if close[t + h] > close[t], else 0 (down); NaN where the future is unknown."""
    future = price.shift(-horizon)
    return (future > price).astype(float).where(future.notna())


def quantile_edges(train_returns: np.ndarray, n_classes: int) -> np.ndarray:
    """Inner bin edges of the v1 multi-class mode, from training-period returns only."""
    qs = np.linspace(0, 1, n_classes + 1)[1:-1]
    return np.quantile(train_returns, qs)


def quantile_labels(returns: pd.Series, edges: np.ndarray) -> pd.Series:
    labels = np.searchsorted(edges, returns.to_numpy(), side="right").astype(float)
    return pd.Series(labels, index=returns.index).where(returns.notna())


# -- the auxiliary volatility target (DataConfig.auxiliary = "volatility") -------------------
# Realised volatility as the root mean square of daily log returns (no mean removed: over a
# week the mean is noise), on a log scale, where it is close to Gaussian and persistent.
VOL_FLOOR = 1e-4  # daily; a flat stretch (all returns 0) gets log(1e-4), not -inf
TRAILING_LONG = 20  # the baseline's second, monthly look-back (beside the horizon's)
VOL_COLUMNS = ("future_log_vol", "trailing_log_vol_h", f"trailing_log_vol_{TRAILING_LONG}")


def daily_log_returns(close: np.ndarray) -> np.ndarray:
    """log(close[t] / close[t-1]) along the last axis (days); NaN on day 0 and next to a gap."""
    close = np.asarray(close, np.float64)
    out = np.full(close.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[..., 1:] = np.log(close[..., 1:] / close[..., :-1])
    return out


def trailing_log_vol(close: np.ndarray, window: int, min_count: int | None = None) -> np.ndarray:
    """log RMS of the daily log returns of days t-window+1..t (only days <= t: no look-ahead);
    NaN where fewer than ``min_count`` (default: all ``window``) of them are known."""
    r = daily_log_returns(close)
    known = np.isfinite(r)
    pad = [(0, 0)] * (r.ndim - 1) + [(1, 0)]
    s = np.cumsum(np.pad(np.where(known, r * r, 0.0), pad), axis=-1)
    n = np.cumsum(np.pad(known.astype(np.int64), pad), axis=-1)
    total, count = np.full(r.shape, np.nan), np.zeros(r.shape, np.int64)
    total[..., window - 1:] = s[..., window:] - s[..., :-window]
    count[..., window - 1:] = n[..., window:] - n[..., :-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(total / count)
    return np.where(count >= (min_count or window), np.log(np.maximum(rms, VOL_FLOOR)), np.nan)


def future_log_vol(close: np.ndarray, horizon: int) -> np.ndarray:
    """The target of the window ending on day t: log RMS of the daily log returns of days
    t+1..t+h, i.e. from close[t] to close[t+h] (the span of the direction label, so the same
    purge gap covers it); NaN where any of those returns is unknown."""
    past = trailing_log_vol(close, horizon)
    out = np.full(past.shape, np.nan)
    out[..., :-horizon] = past[..., horizon:]
    return out


def volatility_columns(close: np.ndarray, horizon: int) -> np.ndarray:
    """(..., days, 3): the target and the trailing-volatility baseline's two inputs
    (``VOL_COLUMNS``), raw log values; the builder standardises the target on training rows."""
    return np.stack([future_log_vol(close, horizon),
                     trailing_log_vol(close, horizon, min_count=max(2, horizon // 2 + 1)),
                     trailing_log_vol(close, TRAILING_LONG, min_count=TRAILING_LONG // 2 + 1)], axis=-1)


def volatility_record(horizon: int, train_targets: np.ndarray) -> dict:
    """The dataset metadata's ``auxiliary`` entry: what ``{split}_vol.npy`` holds and the
    target's standardisation, fitted on the distinct training windows only."""
    t = np.asarray(train_targets, np.float64)
    return {"kind": "volatility", "file": "{split}_vol.npy", "columns": list(VOL_COLUMNS),
            "rule": f"log of the root mean square of the daily log returns from adjusted close[t] to close[t+{horizon}]"
                    f" (floor {VOL_FLOOR} a day); trailing columns: the same over days t-h+1..t and "
                    f"t-{TRAILING_LONG - 1}..t",
            "mean": float(t.mean()), "std": float(t.std()), "fit": "distinct training windows", "n_fit": int(len(t))}
