"""A point-in-time universe: which instruments belonged to it on which days.

A membership table (CSV or Parquet, by its suffix) has one row per spell of membership:
``ticker, start, end``, both days included (``end`` blank: still a member), a ticker on several
rows when it left and came back, as index-constituent histories are published. With ``panel.membership`` set,
an instrument's windows end only on days it was a member, its label (and, for
``relative_median``, the median it is compared with) is taken among that day's members, and
the cross-sectional features rank and z-score the members present that day only. Its own
features still use its whole price history (what was known of it before it joined is not
look-ahead). An instrument the table never names is not in the universe. Its cross-sectional
features exist only on member days, so its first window ends seq_len member days after it joins.

Without such a table, today's constituents' histories are a survivorship-biased universe;
with one, a backtest trades only what it could have traded.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrend.data.config import DataConfig
from stocktrend.data.errors import DataError
from stocktrend.data.sources import read_table, sha256_of

COLUMNS = ("ticker", "start", "end")


def read_membership(path) -> pd.DataFrame:
    """The table's spells: ticker (stripped, upper case), start, end (NaT: open), checked row by
    row; an error names the file, the column and the line (a Parquet file: the row)."""
    raw = read_table(path, "membership", list(COLUMNS))
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: membership table without column(s) {missing}; it has {list(raw.columns)}")
    where = "row" if str(path).lower().endswith((".parquet", ".pq")) else "line"
    first = 1 if where == "row" else 2  # a CSV's header is line 1

    def bad(col: str, i: int, why: str) -> DataError:
        return DataError(f"{path}: column '{col}', {where} {i + first}: {why}")

    ticker = raw["ticker"].astype(object).map(lambda v: str(v).strip().upper() if pd.notna(v) else v)
    blank = (ticker.isna() | (ticker == "")).to_numpy()
    if blank.any():
        raise bad("ticker", int(np.argmax(blank)), "no ticker")
    dates = {}
    for col in ("start", "end"):
        text = raw[col].astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
        empty = text.isna() | (text == "")
        parsed = pd.to_datetime(text.where(~empty), errors="coerce")
        unparsed = (parsed.isna() & ~empty).to_numpy()
        if unparsed.any():
            i = int(np.argmax(unparsed))
            raise bad(col, i, f"not a date: {raw[col].iloc[i]!r}")
        if col == "start" and empty.any():
            raise bad(col, int(np.argmax(empty.to_numpy())), "no start date")
        dates[col] = parsed
    backwards = (dates["end"] < dates["start"]).to_numpy()
    if backwards.any():
        i = int(np.argmax(backwards))
        raise bad("end", i, f"{dates['end'].iloc[i].date()} is before start {dates['start'].iloc[i].date()}")
    return pd.DataFrame({"ticker": ticker.to_numpy(), "start": dates["start"].to_numpy(),
                         "end": dates["end"].to_numpy()})


def member_mask(spells: pd.DataFrame, tickers: list[str], calendar: pd.DatetimeIndex) -> np.ndarray:
    """(tickers, days) True where the instrument was a member that day."""
    mask = np.zeros((len(tickers), len(calendar)), bool)
    row = {t: i for i, t in enumerate(tickers)}
    days = calendar.to_numpy()
    for t, start, end in spells.itertuples(index=False):
        if t in row:
            a = np.searchsorted(days, np.datetime64(start), side="left")
            b = len(days) if pd.isna(end) else np.searchsorted(days, np.datetime64(end), side="right")
            mask[row[t], a:b] = True
    return mask


def membership_path(cfg: DataConfig) -> Path | None:
    if cfg.panel is None or not cfg.panel.membership:
        return None
    p = Path(cfg.panel.membership)
    return p if p.is_absolute() else (Path(cfg.base_dir) / p).resolve()


def spells_of(cfg: DataConfig) -> tuple[pd.DataFrame, frozenset[str]] | None:
    """(spells, the tickers they name) of ``cfg.panel.membership``, or None without one."""
    path = membership_path(cfg)
    if path is None:
        return None
    if not path.is_file():
        raise DataError(f"panel.membership: file not found: {path}")
    return _read_cached(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, mtime_ns: int) -> tuple[pd.DataFrame, frozenset[str]]:
    spells = read_membership(Path(path))
    return spells, frozenset(spells["ticker"])


def membership_on(cfg: DataConfig, tickers: list[str], calendar: pd.DatetimeIndex) -> tuple[np.ndarray | None, dict]:
    """(the member mask, or None without a table; the sources facts the metadata lists it under)."""
    found = spells_of(cfg)
    if found is None:
        return None, {}
    path = membership_path(cfg)
    mask = member_mask(found[0], tickers, calendar)
    return mask, {"membership": {"file": str(path), "sha256": sha256_of(path), "spells": len(found[0]),
                                 "member_days": int(mask.sum())}}
