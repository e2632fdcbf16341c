"""Panels: many instruments on one calendar, with per-instrument, cross-sectional and market
features, and labels that compare an instrument with the others or with the index.

Every instrument's own features come from the same causal code as a single stock's
(``features.own_features``; close-only families where only closes exist), under one shared
prefix (``own_``) so all instruments fill the same columns. Cross-sectional features rank and
z-score a few of those across the instruments present on each day (a same-day comparison:
no look-ahead). The market context (index, rates, oil, the panel's breadth) is the single
stock's context, computed once per day. The panel's own source is not context: its per-member series would be missing for every
instrument on the days one member is absent (the cross-sectional features cover it, over
the members present). The calendar is the union of the instruments'
trading days; an instrument that starts later or stops early simply has no complete
window before its warm-up or after its last day, so it joins and leaves without look-ahead.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrend.data.config import DataConfig, SourceConfig
from stocktrend.data.errors import DataError
from stocktrend.data.features import adjusted_ohlc, context_features, finish, own_features
from stocktrend.data.sources import parse_table, read_all_sources, read_source, read_table, sha256_of

log = logging.getLogger(__name__)
OWN = "own"
# Cross-sectional features: these own features, ranked (0..1) and z-scored across the
# instruments present that day.
CROSS_SECTIONAL = ("ret_1", "ret_5", "ret_20", "vol_cc_20", "mom_12_1")


@dataclasses.dataclass
class Panel:
    calendar: pd.DatetimeIndex
    tickers: list[str]
    features: np.ndarray  # (tickers, days, candidates), NaN where absent or warming up
    names: list[str]
    close: np.ndarray  # (tickers, days) adjusted closes on the calendar, NaN where absent
    index_close: np.ndarray | None  # (days,) the index's close on the calendar (cfg.index)
    sources: dict[str, dict]


def member_files(cfg: DataConfig) -> dict[str, Path]:
    """{ticker: file} of a files/folder panel (a source panel's file is a source)."""
    spec = cfg.panel
    if spec.files:
        base = Path(cfg.base_dir)
        return {t: (Path(p) if Path(p).is_absolute() else (base / p).resolve()) for t, p in spec.files.items()}
    if spec.folder:
        folder = Path(spec.folder) if Path(spec.folder).is_absolute() else (Path(cfg.base_dir) / spec.folder).resolve()
        if not folder.is_dir():
            raise DataError(f"panel.folder: not a folder: {folder}")
        found = {p.stem.upper(): p for p in sorted(folder.glob(spec.pattern)) if p.is_file()}
        if not found:
            raise DataError(f"panel.folder: no {spec.pattern} files in {folder}")
        return found
    return {}


def read_members(cfg: DataConfig, frames: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """{ticker: frame of canonical columns (close, and open/high/low/adj_close/volume where
    given)}, and the files read; kept only when listed and with at least ``min_days`` rows
    over the whole file (a universe choice made knowing each history's length: like the
    choice of today's large caps, a hindsight the report states)."""
    spec, facts = cfg.panel, {}
    members: dict[str, pd.DataFrame] = {}
    if spec.source and not spec.ticker_column:  # a close panel: one column per ticker
        for col in frames[spec.source].columns:
            members[str(col).upper()] = frames[spec.source][[col]].rename(columns={col: "close"})
    elif spec.source:  # a long file, read once: one ticker per value of the ticker column
        path = cfg.source_path(spec.source)
        source = cfg.sources[spec.source]
        raw = read_table(path, spec.source, [*source.columns.values(), spec.ticker_column])
        if spec.ticker_column not in raw.columns:
            raise DataError(f"{path}: no ticker column '{spec.ticker_column}'; columns are {list(raw.columns)}")
        tickers = raw[spec.ticker_column].astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
        blank = (tickers.isna() | (tickers == "")).to_numpy()
        if blank.any():  # a row no instrument owns: grouping would drop it or invent a ticker
            raise DataError(f"{path}: column '{spec.ticker_column}', line {int(np.argmax(blank)) + 2}: no ticker")
        one = dataclasses.replace(source, filter={})  # each group is one ticker's rows
        for ticker, rows in raw.groupby(tickers.astype(str), sort=True):
            members[ticker.upper()] = parse_table(one, rows, f"{path} ({spec.ticker_column} {ticker})",
                                                  f"{spec.source}[{ticker}]")  # rows keep their file positions
    else:
        for ticker, path in member_files(cfg).items():
            source = SourceConfig(path=str(path), kind="ohlcv", columns=dict(spec.columns))
            members[ticker] = read_source(source, path, ticker)
            facts[ticker] = {"file": str(path), "sha256": sha256_of(path), "rows": len(members[ticker]),
                             "start": str(members[ticker].index[0].date()),
                             "end": str(members[ticker].index[-1].date())}
    keep = {t.upper() for t in spec.include}
    drop = {t.upper() for t in spec.exclude}
    out = {}
    for ticker, frame in members.items():
        frame = frame.dropna(subset=["adj_close" if "adj_close" in frame else "close"])
        if (keep and ticker not in keep) or ticker in drop:
            continue
        if len(frame) < spec.min_days:
            log.warning("panel: %s left out, %d rows (fewer than min_days=%d)", ticker, len(frame), spec.min_days)
            continue
        out[ticker] = frame
    if len(out) < 3:
        raise DataError(f"panel: {len(out)} instruments with at least {spec.min_days} rows; a panel needs 3 or more")
    return out, facts


def _cross_sectional(feats: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Rank (0..1) and z-score across instruments present each day, per chosen feature
    (days with fewer than three present have neither)."""
    out, out_names = [], []
    for base in CROSS_SECTIONAL:
        k = names.index(f"{OWN}_{base}")
        x = feats[:, :, k]  # (tickers, days)
        present = np.isfinite(x)
        n = present.sum(axis=0)
        ranks = pd.DataFrame(x).rank(axis=0, pct=True).to_numpy()
        with warnings.catch_warnings():  # days with no instrument present: NaN, dropped below
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        z = (x - mean) / np.where(std > 0, std, np.nan)
        enough = n >= 3  # a rank among fewer than three says little
        out += [np.where(enough, ranks, np.nan), np.where(enough, z, np.nan)]
        out_names += [f"xs_rank_{base}", f"xs_z_{base}"]
    return np.stack(out, axis=-1), out_names


def build_panel(cfg: DataConfig, frames: dict[str, pd.DataFrame] | None = None,
                members: dict[str, pd.DataFrame] | None = None) -> Panel:
    """``frames``: the sources already read (the look-ahead tests alter them in memory);
    ``members``: the instruments' frames already read (bars posted to the service)."""
    frames, facts = (frames, {}) if frames is not None else read_all_sources(cfg)
    members, member_facts = (members, {}) if members is not None else read_members(cfg, frames)
    adjusted = {t: adjusted_ohlc(f) for t, f in members.items()}
    calendar = pd.DatetimeIndex(sorted(set().union(*(f.index for f in adjusted.values()))))
    if cfg.start is not None:
        calendar = calendar[calendar >= pd.Timestamp(cfg.start)]
    context = context_features(cfg, frames, calendar, skip={cfg.panel.source} - {None})  # once per day
    tickers = sorted(adjusted)
    per_ticker, close = [], []
    for t in tickers:
        f = adjusted[t].reindex(calendar)  # absent days are NaN: never filled
        own = own_features(f, OWN)
        own[f"{OWN}_mom_12_1"] = np.log(f["close"].shift(21) / f["close"].shift(252))  # 12-1 momentum
        frame = finish({**own, **context}, calendar, f"instrument {t}")
        per_ticker.append(frame)
        close.append(f["close"].to_numpy())
    names = list(per_ticker[0].columns)
    cube = np.stack([frame.to_numpy() for frame in per_ticker])  # (tickers, days, features)
    absent = ~np.isfinite(np.stack(close))
    cube[absent] = np.nan  # context alone does not make a day of an instrument that did not trade
    xs, xs_names = _cross_sectional(cube, names)
    cube = np.concatenate([cube, xs], axis=-1)
    log.info("panel %s: %d instruments, %d days, %d candidate features", cfg.name, len(tickers), len(calendar),
             cube.shape[-1])
    index_close = None
    if cfg.index is not None:
        from stocktrend.data.features import align_to

        index_close = adjusted_ohlc(align_to(frames[cfg.index], calendar, cfg.ffill_limit))["close"].to_numpy()
    return Panel(calendar, tickers, cube, names + xs_names, np.stack(close), index_close, {**facts, **member_facts})


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """close[t + h] / close[t] - 1 on the calendar (NaN where either day is absent)."""
    out = np.full_like(close, np.nan)
    out[..., :-horizon] = close[..., horizon:] / close[..., :-horizon] - 1
    return out


def panel_labels(cfg: DataConfig, fwd: np.ndarray, index_fwd: np.ndarray | None) -> np.ndarray:
    """(tickers, days) float labels (NaN where unknown) of ``cfg.label``."""
    known = np.isfinite(fwd)
    if cfg.label == "direction":
        y = fwd > 0
    elif cfg.label == "relative_median":
        with warnings.catch_warnings():  # a day with no known return has no median: NaN, no label
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(np.where(known, fwd, np.nan), axis=0)
        y = fwd > median
        known &= (known.sum(axis=0) >= 3)[None, :]
    else:
        y = fwd > index_fwd[None, :]
        known &= np.isfinite(index_fwd)[None, :]
    return np.where(known, y.astype(float), np.nan)
