"""Candidate features on the target's trading days, from every source of a dataset.

Each feature at day t is computed from rows at or before t (``indicators`` holds the
causal building blocks; a property test checks that altering later rows changes
nothing at t). Context series are aligned to the target calendar by carrying their last
value forward, never backward, for at most ``ffill_limit`` rows. Warm-up rows whose
features are incomplete stay NaN here and are excluded by the window builder; nothing is
zero-filled.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from stocktrend.data import indicators as ind
from stocktrend.data.config import DataConfig
from stocktrend.data.errors import DataError

log = logging.getLogger(__name__)


def adjusted_ohlc(frame: pd.DataFrame) -> pd.DataFrame:
    """Prices on one basis: when the source gives an adjusted close (Yahoo's ``Adj Close``)
    the raw open/high/low/close are scaled by the same factor, so intraday ratios and
    returns agree and labels use split- and dividend-adjusted closes."""
    out = frame.copy()
    if "adj_close" in out:
        factor = out["adj_close"] / out["close"]
        for col in ("open", "high", "low"):
            if col in out:
                out[col] = out[col] * factor
        out["close"] = out["adj_close"]
        out = out.drop(columns="adj_close")
    return out


def label_price(frame: pd.DataFrame) -> pd.Series:
    return frame["adj_close"] if "adj_close" in frame else frame["close"]


def _close_features(c: pd.Series, p: str) -> dict[str, pd.Series]:
    f = {f"{p}_ret_{n}": ind.log_return(c, n) for n in (1, 2, 3, 5, 10, 20, 60, 120, 250)}
    f |= {f"{p}_vol_cc_{n}": ind.realised_vol(c, n) for n in (5, 10, 20, 60)}
    f[f"{p}_vol_ratio_5_60"] = f[f"{p}_vol_cc_5"] / f[f"{p}_vol_cc_60"].where(f[f"{p}_vol_cc_60"] > 0)
    f |= {f"{p}_rsi_{n}": ind.rsi(c, n) for n in (7, 14, 28)}
    f[f"{p}_macd"], f[f"{p}_macd_signal"], f[f"{p}_macd_hist"] = ind.macd(c)
    f[f"{p}_bb_pos_20"], f[f"{p}_bb_width_20"] = ind.bollinger(c, 20)
    f |= {f"{p}_ma_gap_{n}": ind.ma_gap(c, n) for n in (5, 10, 20, 50, 100, 200)}
    f |= {f"{p}_ema_gap_{n}": ind.ema_gap(c, n) for n in (12, 26)}
    f[f"{p}_ma_cross_50_200"] = c.rolling(50).mean() / c.rolling(200).mean() - 1
    f[f"{p}_zscore_20"] = ind.zscore(c, 20)
    f |= {f"{p}_drawdown_{n}": ind.drawdown(c, n) for n in (60, 250)}
    f[f"{p}_dist_low_250"] = c / c.rolling(250).min() - 1
    r1 = c.pct_change()
    f[f"{p}_skew_60"] = r1.rolling(60).skew()
    f[f"{p}_kurt_60"] = r1.rolling(60).kurt()
    f[f"{p}_up_ratio_20"] = (r1 > 0).astype(float).where(r1.notna()).rolling(20).mean()
    return f


def _range_features(fr: pd.DataFrame, p: str) -> dict[str, pd.Series]:
    o, h, lo, c = fr["open"], fr["high"], fr["low"], fr["close"]
    f = {f"{p}_vol_park_{n}": ind.parkinson_vol(h, lo, n) for n in (5, 20)}
    f |= {f"{p}_vol_gk_{n}": ind.garman_klass_vol(o, h, lo, c, n) for n in (5, 20)}
    f |= {f"{p}_atr_{n}": ind.atr_ratio(h, lo, c, n) for n in (5, 14)}
    span = h - lo
    f[f"{p}_range_hl"] = span / c
    f[f"{p}_close_loc"] = ((c - lo) / span.where(span > 0)).fillna(0.5).where(c.notna())
    f[f"{p}_gap_open"] = o / c.shift(1) - 1
    f[f"{p}_body"] = c / o - 1
    f[f"{p}_stoch_k_14"], f[f"{p}_stoch_d_3"] = ind.stochastic(h, lo, c)
    f[f"{p}_cci_20"] = ind.cci(h, lo, c)
    f |= {f"{p}_dist_high_{n}": c / h.rolling(n).max() - 1 for n in (20, 250)}
    return f


def _volume_features(fr: pd.DataFrame, p: str) -> dict[str, pd.Series]:
    v = np.log1p(fr["volume"].clip(lower=0))
    f = {f"{p}_volume_z_{n}": ind.zscore(v, n) for n in (20, 60)}
    f[f"{p}_volume_ratio_5_20"] = v.rolling(5).mean() - v.rolling(20).mean()
    obv = ind.obv(fr["close"], fr["volume"])
    f[f"{p}_obv_z_60"] = ind.zscore(obv, 60)
    vol20 = fr["volume"].rolling(20).mean()
    f[f"{p}_obv_slope_20"] = (obv - obv.shift(20)) / (20 * vol20.where(vol20 > 0))
    return f


def _relation_features(target_c: pd.Series, c: pd.Series, tp: str, p: str) -> dict[str, pd.Series]:
    rt, rc = target_c.pct_change(), c.pct_change()
    f = {f"{tp}_beta_60_{p}": ind.rolling_beta(rt, rc, 60)}
    f |= {f"{tp}_corr_{n}_{p}": rt.rolling(n).corr(rc) for n in (20, 60)}
    f |= {f"{tp}_rel_ret_{n}_{p}": ind.log_return(target_c, n) - ind.log_return(c, n) for n in (5, 20)}
    return f


def _context_close_features(c: pd.Series, p: str) -> dict[str, pd.Series]:
    f = {f"{p}_ret_{n}": ind.log_return(c, n) for n in (1, 5, 20, 60)}
    f[f"{p}_vol_cc_20"] = ind.realised_vol(c, 20)
    f |= {f"{p}_ma_gap_{n}": ind.ma_gap(c, n) for n in (50, 200)}
    f[f"{p}_rsi_14"] = ind.rsi(c, 14)
    return f


def _panel_features(panel: pd.DataFrame, p: str) -> dict[str, pd.Series]:
    f = {}
    rets = {n: np.log(panel / panel.shift(n)) for n in (1, 5, 20)}
    for col in panel.columns:
        for n, r in rets.items():
            f[f"{p}_{col}_ret_{n}"] = r[col]
    for n, r in rets.items():
        # Cross-sectional: NaN when any member is missing that day, never a partial mean.
        f[f"{p}_breadth_{n}"] = (r > 0).mean(axis=1).where(r.notna().all(axis=1))
        f[f"{p}_mean_ret_{n}"] = r.mean(axis=1, skipna=False)
    f[f"{p}_dispersion_5"] = rets[5].std(axis=1, skipna=False)
    return f


def _rates_features(rates: pd.DataFrame, p: str) -> dict[str, pd.Series]:
    f = {f"{p}_{col}": rates[col] for col in rates.columns}
    cols = list(rates.columns)
    short, long_ = cols[0], cols[-1]
    f[f"{p}_slope_{long_}_{short}"] = rates[long_] - rates[short]
    if len(cols) >= 3:
        mid = cols[len(cols) // 2]
        f[f"{p}_slope_{long_}_{mid}"] = rates[long_] - rates[mid]
        f[f"{p}_curvature"] = 2 * rates[mid] - rates[short] - rates[long_]
    for col in (short, long_):
        for n in (5, 20):
            f[f"{p}_{col}_chg_{n}"] = rates[col] - rates[col].shift(n)
    return f


def _calendar_features(index: pd.DatetimeIndex) -> dict[str, pd.Series]:
    dow, month = index.dayofweek.to_numpy(), index.month.to_numpy()
    days_left = (index + pd.offsets.MonthEnd(0) - index).days.to_numpy()
    mk = lambda a: pd.Series(a.astype(float), index=index)  # noqa: E731
    return {
        "cal_dow_sin": mk(np.sin(2 * np.pi * dow / 5)),
        "cal_dow_cos": mk(np.cos(2 * np.pi * dow / 5)),
        "cal_month_sin": mk(np.sin(2 * np.pi * (month - 1) / 12)),
        "cal_month_cos": mk(np.cos(2 * np.pi * (month - 1) / 12)),
        "cal_month_end": mk(days_left < 3),
    }


def align_to(frame: pd.DataFrame, index: pd.DatetimeIndex, limit: int) -> pd.DataFrame:
    """Context values on the target's days: the last value at or before each day, carried
    at most ``limit`` rows forward; a value is never moved to an earlier day."""
    frame = frame.dropna(how="all")
    union = frame.index.union(index)
    return frame.reindex(union).ffill(limit=limit).reindex(index)


def own_features(frame: pd.DataFrame, prefix: str) -> dict[str, pd.Series]:
    """One instrument's own families: close-based always, range and volume where it has
    open/high/low and volume (close-only features where only closes exist)."""
    feats = _close_features(frame["close"], prefix)
    if {"open", "high", "low"} <= set(frame.columns):
        feats |= _range_features(frame, prefix)
    if "volume" in frame.columns:
        feats |= _volume_features(frame, prefix)
    return feats


def context_features(cfg: DataConfig, frames: dict[str, pd.DataFrame], index: pd.DatetimeIndex,
                     skip: set[str], relate: tuple[pd.Series, str] | None = None) -> dict[str, pd.Series]:
    """Market context on ``index`` from every source not in ``skip``; with ``relate``
    (an instrument's close and prefix), its beta, correlation and relative returns against
    each ohlcv/close source too."""
    feats: dict[str, pd.Series] = {}
    for name, spec in cfg.sources.items():
        if name in skip:
            continue
        frame = align_to(frames[name], index, cfg.ffill_limit)
        if spec.kind in ("ohlcv", "close"):
            ctx = adjusted_ohlc(frame)
            feats |= _context_close_features(ctx["close"], name)
            if relate is not None:
                feats |= _relation_features(relate[0], ctx["close"], relate[1], name)
            if {"open", "high", "low"} <= set(ctx.columns):
                feats[f"{name}_vol_park_20"] = ind.parkinson_vol(ctx["high"], ctx["low"], 20)
        elif spec.kind == "close_panel":
            # The target's own series in a panel would duplicate the target features.
            panel = frame.drop(columns=[c for c in frame.columns if c.upper() == (cfg.ticker or "").upper()])
            feats |= _panel_features(panel, name)
        elif spec.kind == "rates":
            feats |= _rates_features(frame, name)
    feats |= _calendar_features(index)
    return feats


def finish(feats: dict[str, pd.Series], index: pd.DatetimeIndex, who: str = "target") -> pd.DataFrame:
    """The feature table; a feature with no value on any of ``who``'s days is an error."""
    out = pd.DataFrame(feats, index=index).astype(np.float64)
    out = out.replace([np.inf, -np.inf], np.nan)
    empty = [c for c in out.columns if out[c].isna().all()]
    if empty:
        raise DataError(
            f"feature(s) {empty[:5]} are NaN on every {who} day: a context source does not overlap the "
            f"{who}'s dates {index[0].date()}..{index[-1].date()} (check its dates and ffill_limit)"
        )
    return out


def build_features(cfg: DataConfig, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All candidate features, one row per target trading day (NaN during warm-up)."""
    target = adjusted_ohlc(frames[cfg.target])
    if cfg.start is not None:
        target = target[target.index >= pd.Timestamp(cfg.start)]
    index = target.index
    feats = own_features(target, cfg.target)
    feats |= context_features(cfg, frames, index, skip={cfg.target}, relate=(target["close"], cfg.target))
    out = finish(feats, index)
    log.info("built %d candidate features over %d target days", out.shape[1], out.shape[0])
    return out
