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
from stocktrend.data.features import adjusted_ohlc, align_to, context_features, finish, own_features
from stocktrend.data.membership import membership_on, spells_of
from stocktrend.data.sources import parse_table, read_all_sources, read_source, read_table, sha256_of

log = logging.getLogger(__name__)
OWN = "own"
# Cross-sectional features: these own features, ranked (0..1) and z-scored across the
# instruments present that day.
CROSS_SECTIONAL = ("ret_1", "ret_5", "ret_20", "vol_cc_20", "mom_12_1")
XS_BASE = [f"{OWN}_{b}" for b in CROSS_SECTIONAL]


@dataclasses.dataclass
class Panel:
    calendar: pd.DatetimeIndex
    tickers: list[str]
    features: np.ndarray  # (tickers, days, candidates), NaN where absent or warming up
    names: list[str]
    close: np.ndarray  # (tickers, days) adjusted closes on the calendar, NaN where absent
    index_close: np.ndarray | None  # (days,) the index's close on the calendar (cfg.index)
    sources: dict[str, dict]
    left_out: dict[str, int] = dataclasses.field(default_factory=dict)  # {ticker: rows} too short to keep
    member: np.ndarray | None = None  # (tickers, days) the membership table's days; None: no table


def member_files(cfg: DataConfig) -> dict[str, Path]:
    """{ticker: file} of a files/folder panel (a source panel's file is a source)."""
    spec = cfg.panel
    if spec.files:
        base = Path(cfg.base_dir)
        return {t: (Path(p) if Path(p).is_absolute() else (base / p).resolve())
                for t, p in ((t, spec.files[key]) for t, key in by_ticker(spec.files, "panel.files").items())}
    if spec.folder:
        folder = Path(spec.folder) if Path(spec.folder).is_absolute() else (Path(cfg.base_dir) / spec.folder).resolve()
        if not folder.is_dir():
            raise DataError(f"panel.folder: not a folder: {folder}")
        files = {p.stem: p for p in sorted(folder.glob(spec.pattern)) if p.is_file()}
        found = {t: files[stem] for t, stem in by_ticker(files, f"panel.folder {folder}").items()}
        if not found:
            raise DataError(f"panel.folder: no {spec.pattern} files in {folder}")
        return found
    return {}


def read_members(cfg: DataConfig, frames: dict[str, pd.DataFrame], left_out: dict[str, int] | None = None
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """{ticker: frame of canonical columns (close, and open/high/low/adj_close/volume where
    given)}, and the files read; kept only when listed and with at least ``min_days`` rows
    over the whole file (a universe choice made knowing each history's length: like the
    choice of today's large caps, a hindsight the report states). ``left_out``: filled with
    {ticker: rows} of those left out for a short history."""
    spec, facts = cfg.panel, {}
    members: dict[str, pd.DataFrame] = {}
    if spec.source and not spec.ticker_column:  # a close panel: one column per ticker
        members = close_panel_members(frames[spec.source])
    elif spec.source:  # a long file, read once: one ticker per value of the ticker column
        path = cfg.source_path(spec.source)
        raw = read_table(path, spec.source, [*cfg.sources[spec.source].columns.values(), spec.ticker_column])
        members = long_members(cfg, raw, str(path))
    else:
        members, facts = file_members(cfg, {t: p for t, p in member_files(cfg).items() if listed(cfg, t)})
    out = {t: f for t, f in ((t, kept_member(cfg, t, f, left_out)) for t, f in members.items()) if f is not None}
    if len(out) < 3:
        raise DataError(f"panel: {len(out)} instruments with at least {spec.min_days} rows; a panel needs 3 or more")
    return out, facts


def listed(cfg: DataConfig, ticker: str) -> bool:
    """Whether the config keeps ``ticker`` (upper case): its include/exclude lists, and its
    membership table when it has one (an instrument it never names is not in the universe)."""
    keep, drop = {t.upper() for t in cfg.panel.include}, {t.upper() for t in cfg.panel.exclude}
    found = spells_of(cfg)
    return not ((keep and ticker not in keep) or ticker in drop or (found is not None and ticker not in found[1]))


def kept_member(cfg: DataConfig, ticker: str, frame: pd.DataFrame, left_out: dict[str, int] | None = None
                ) -> pd.DataFrame | None:
    """The instrument's priced rows, or None when it is not listed or too short (logged, and
    its rows counted in ``left_out``: the metadata lists it)."""
    frame = frame.dropna(subset=["adj_close" if "adj_close" in frame else "close"])
    if not listed(cfg, ticker):
        return None
    if len(frame) < cfg.panel.min_days:
        log.warning("panel: %s left out, %d rows (fewer than min_days=%d)", ticker, len(frame), cfg.panel.min_days)
        if left_out is not None:
            left_out[ticker] = len(frame)
        return None
    return frame


def close_panel_members(wide: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {t: wide[[col]].rename(columns={col: "close"}) for t, col in by_ticker(wide.columns, "close panel").items()}


def by_ticker(names, where: str) -> dict:
    """{TICKER: name}: tickers are upper case, so two names that differ only in case would be
    one instrument; that is refused, naming both, rather than one silently replacing the other."""
    out: dict = {}
    for name in names:
        t = str(name).strip().upper()
        if t in out:
            raise DataError(f"{where}: '{out[t]}' and '{name}' name the same ticker {t} (tickers ignore case)")
        out[t] = name
    return out


def file_members(cfg: DataConfig, files: dict[str, Path]) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    members, facts = {}, {}
    for ticker, path in files.items():
        source = SourceConfig(path=str(path), kind="ohlcv", columns=dict(cfg.panel.columns))
        members[ticker] = read_source(source, path, ticker)
        facts[ticker] = {"file": str(path), "sha256": sha256_of(path), "rows": len(members[ticker]),
                         "start": str(members[ticker].index[0].date()), "end": str(members[ticker].index[-1].date())}
    return members, facts


def long_members(cfg: DataConfig, raw: pd.DataFrame, path: str) -> dict[str, pd.DataFrame]:
    """One frame per ticker of a long table's rows (``raw`` as ``read_table`` gives them, its
    index the rows' positions in the file, so errors name the file's line)."""
    spec = cfg.panel
    if spec.ticker_column not in raw.columns:
        raise DataError(f"{path}: no ticker column '{spec.ticker_column}'; columns are {list(raw.columns)}")
    tickers = raw[spec.ticker_column].astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
    blank = (tickers.isna() | (tickers == "")).to_numpy()
    if blank.any():  # a row no instrument owns: grouping would drop it or invent a ticker
        raise DataError(f"{path}: column '{spec.ticker_column}', line {int(raw.index[np.argmax(blank)]) + 2}: "
                        f"no ticker")
    one = dataclasses.replace(cfg.sources[spec.source], filter={})  # each group is one ticker's rows
    # Grouped by the upper-case ticker, the name everywhere else: "aapl" and "AAPL" rows are one
    # instrument's (a date in both is then a duplicate date, named by its line), never one lost.
    return {ticker: parse_table(one, rows, f"{path} ({spec.ticker_column} {ticker})",
                                f"{spec.source}[{ticker}]")  # rows keep their file positions
            for ticker, rows in raw.groupby(tickers.astype(str).str.upper(), sort=True)}


def cross_sectional(feats: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
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
    left_out: dict[str, int] = {}
    posted = members is not None
    members, member_facts = (members, {}) if posted else read_members(cfg, frames, left_out)
    adjusted = {t: adjusted_ohlc(f) for t, f in members.items()}
    calendar = calendar_of(cfg, [f.index.to_numpy() for f in adjusted.values()])
    context = context_features(cfg, frames, calendar, skip={cfg.panel.source} - {None})  # once per day
    tickers = sorted(adjusted)
    built = [instrument_candidates(t, adjusted[t], calendar, context) for t in tickers]
    names = built[0][2]
    cube = np.stack([x for x, _, _ in built])  # (tickers, days, features)
    close = [c for _, c, _ in built]
    # Posted bars (the service) are their own cross-section; files are read with the universe's table.
    member, table_facts = membership_on(cfg, tickers, calendar) if not posted else (None, {})
    xs, xs_names = cross_sectional(members_only(cube[:, :, [names.index(b) for b in XS_BASE]], member), XS_BASE)
    cube = np.concatenate([cube, xs], axis=-1)
    log.info("panel %s: %d instruments, %d days, %d candidate features", cfg.name, len(tickers), len(calendar),
             cube.shape[-1])
    return Panel(calendar, tickers, cube, names + xs_names, np.stack(close), index_close_on(cfg, frames, calendar),
                 {**facts, **member_facts, **table_facts}, left_out, member)


def members_only(x: np.ndarray, member: np.ndarray | None) -> np.ndarray:
    """(tickers, days, ...) values, NaN where the instrument was not a member that day."""
    return x if member is None else np.where(member.reshape(member.shape + (1,) * (x.ndim - 2)), x, np.nan)


def calendar_of(cfg: DataConfig, days: list[np.ndarray]) -> pd.DatetimeIndex:
    """The union of the instruments' trading days (datetime64 arrays), from ``cfg.start`` on."""
    calendar = pd.DatetimeIndex(union_of_days(days))
    return calendar[calendar >= pd.Timestamp(cfg.start)] if cfg.start is not None else calendar


def union_of_days(days: list[np.ndarray]) -> np.ndarray:
    """The sorted distinct days of all the arrays, merged one at a time (never all at once)."""
    out = np.empty(0, "datetime64[ns]")
    for d in days:
        out = np.union1d(out, np.asarray(d, dtype="datetime64[ns]"))
    return out


def instrument_candidates(ticker: str, adjusted: pd.DataFrame, calendar: pd.DatetimeIndex,
                          context: dict[str, pd.Series]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(days x (own + context) features, closes, the features' names) of one instrument on the
    calendar: NaN on the days it did not trade, context included (context alone does not make
    a day of an instrument that did not trade)."""
    f = adjusted.reindex(calendar)  # absent days are NaN: never filled
    own = own_features(f, OWN)
    own[f"{OWN}_mom_12_1"] = np.log(f["close"].shift(21) / f["close"].shift(252))  # 12-1 momentum
    frame = finish({**own, **context}, calendar, f"instrument {ticker}")
    x, close = frame.to_numpy(copy=True), f["close"].to_numpy()
    x[~np.isfinite(close)] = np.nan
    return x, close, list(frame.columns)


def index_close_on(cfg: DataConfig, frames: dict[str, pd.DataFrame], calendar: pd.DatetimeIndex) -> np.ndarray | None:
    """(days,) the index's adjusted close on the calendar (``cfg.index``), or None."""
    if cfg.index is None:
        return None
    return adjusted_ohlc(align_to(frames[cfg.index], calendar, cfg.ffill_limit))["close"].to_numpy()


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
        median = np.empty(fwd.shape[1])
        with warnings.catch_warnings():  # a day with no known return has no median: NaN, no label
            warnings.simplefilter("ignore", RuntimeWarning)
            for a in range(0, fwd.shape[1], 512):  # by blocks of days: a median's copies stay small
                median[a:a + 512] = np.nanmedian(np.where(known[:, a:a + 512], fwd[:, a:a + 512], np.nan), axis=0)
        y = fwd > median
        known &= (known.sum(axis=0) >= 3)[None, :]
    else:
        y = fwd > index_fwd[None, :]
        known &= np.isfinite(index_fwd)[None, :]
    return np.where(known, y.astype(float), np.nan)
