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
