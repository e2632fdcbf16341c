"""Read one daily CSV into a date-indexed frame of canonical, numeric columns.

Every check names the file, the column and the 1-based line of the file (header = line 1),
so a user with a broken export knows exactly what to fix.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrend.data.config import DataConfig, SourceConfig
from stocktrend.data.errors import DataError

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _line(pos: int) -> int:
    """File line of the row at 0-based data position ``pos`` (the header is line 1)."""
    return pos + 2


MAX_VALUE = 1e12  # a price, rate or volume no market produces beyond


def _parse_dates(raw: pd.Series, spec: SourceConfig, path: str) -> pd.DatetimeIndex:
    col = spec.columns["date"]
    try:
        parsed = pd.to_datetime(raw, format=spec.date_format, errors="coerce")
    except (ValueError, TypeError, OverflowError) as err:  # mixed UTC offsets, say: not one calendar
        raise DataError(f"{path}: column '{col}': cannot read the dates as one calendar ({err}); give every "
                        "date the same UTC offset, or none") from None
    bad = parsed.isna().to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        raise DataError(f"{path}: column '{col}', line {_line(pos)}: cannot read date {raw.iloc[pos]!r}")
    # Timestamps like '1990-01-02 00:00:00+00:00' describe a day; keep the day.
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    dates = pd.DatetimeIndex(parsed).normalize()
    dup = dates.duplicated()
    if dup.any():
        pos = int(np.argmax(dup))
        raise DataError(f"{path}: column '{col}', line {_line(pos)}: duplicate date {dates[pos].date()}")
    back = np.flatnonzero(np.diff(dates.asi8) < 0)
    if back.size:
        pos = int(back[0]) + 1
        raise DataError(
            f"{path}: column '{col}', line {_line(pos)}: dates are not sorted "
            f"({dates[pos].date()} comes after {dates[pos - 1].date()})"
        )
    return dates


def _numeric(frame: pd.DataFrame, path: str, na_values: list[str]) -> pd.DataFrame:
    out = {}
    for col in frame.columns:
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce")
        was_missing = raw.isna() | raw.astype(str).str.strip().isin(na_values)
        bad = (values.isna() & ~was_missing).to_numpy()
        if bad.any():
            pos = int(np.argmax(bad))
            raise DataError(f"{path}: column '{col}', line {_line(pos)}: not a number: {raw.iloc[pos]!r}")
        inf = np.isinf(values.to_numpy(dtype=float))
        if inf.any():
            pos = int(np.argmax(inf))
            raise DataError(f"{path}: column '{col}', line {_line(pos)}: infinite value")
        out[col] = values.astype(float)
    return pd.DataFrame(out, index=frame.index)


def read_source(spec: SourceConfig, path: Path, name: str = "") -> pd.DataFrame:
    """Read a source file into a frame indexed by day, columns renamed to canonical names.

    ohlcv/close sources get canonical columns (close, adj_close, ...); panels and rates
    keep their series names, prefixed with the source name by the feature code.
    """
    return parse_table(spec, read_table(path, name), str(path), name)


def read_table(path: Path, name: str = "") -> pd.DataFrame:
    """A source file's rows as text, as ``parse_table`` takes them."""
    if not path.is_file():
        raise DataError(f"source '{name}': file not found: {path}")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot parse as CSV: {err}") from None


def parse_table(spec: SourceConfig, frame: pd.DataFrame, where: str, name: str = "") -> pd.DataFrame:
    """Validate and convert a table laid out like the source file (same column names).

    Shared by files and by raw bars sent to the prediction service, so both get the
    same checks and the same messages; ``where`` names the file or request field.
    """
    if frame.empty:
        raise DataError(f"{where}: no data rows")
    frame = frame.astype(object).where(frame.notna(), "")
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.map(lambda v: v.strip() if isinstance(v, str) else v)
    frame = frame.replace(spec.na_values, np.nan)

    for col, value in spec.filter.items():
        if col not in frame.columns:
            raise DataError(f"{where}: filter column '{col}' not found; columns are {list(frame.columns)}")
        frame = frame[frame[col] == value].reset_index(drop=True)
        if frame.empty:
            raise DataError(f"{where}: no rows with {col} == {value!r}")

    missing = [f"{key} -> '{col}'" for key, col in spec.columns.items() if col not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)} (source '{name}'); "
            f"the data has {list(frame.columns)}; fix the data or the config's columns mapping"
        )
    path = where
    dates = _parse_dates(frame[spec.columns["date"]].astype(str), spec, path)

    if spec.kind in ("ohlcv", "close"):
        picked = frame[[c for k, c in spec.columns.items() if k != "date"]]
        numeric = _numeric(picked, path, spec.na_values)
        numeric.columns = [k for k in spec.columns if k != "date"]
    else:
        skip = {spec.columns["date"], *spec.filter}
        names = spec.include or [c for c in frame.columns if c not in skip]
        absent = [c for c in names if c not in frame.columns]
        if absent:
            raise DataError(f"{where}: include lists column(s) {absent} not in the data; it has {list(frame.columns)}")
        numeric = _numeric(frame[names], path, spec.na_values)

    numeric.index = dates
    numeric.index.name = "date"
    for col in numeric.columns:
        if numeric[col].isna().all():
            raise DataError(f"{where}: column '{col}' has no numeric values")
    if spec.kind in ("ohlcv", "close"):
        prices = [c for c in ("open", "high", "low", "close", "adj_close") if c in numeric]
        for col in prices:
            nonpos = (numeric[col] <= 0).to_numpy()
            if nonpos.any():
                pos = int(np.argmax(nonpos))
                raise DataError(f"{where}: column '{spec.columns[col]}', line {_line(pos)}: price must be positive")
        if "volume" in numeric and (numeric["volume"] < 0).any():
            pos = int(np.argmax((numeric["volume"] < 0).to_numpy()))
            raise DataError(f"{where}: column '{spec.columns['volume']}', line {_line(pos)}: volume cannot be negative")
    huge = (numeric.abs() > MAX_VALUE).to_numpy()
    if huge.any():  # beyond float32 features once differenced or squared
        pos, col = (int(i) for i in np.argwhere(huge)[0])
        name = spec.columns.get(numeric.columns[col], numeric.columns[col])  # the file's own column name
        raise DataError(f"{where}: column '{name}', line {_line(pos)}: {numeric.iat[pos, col]:g} is "
                        f"beyond any market's values (|value| <= {MAX_VALUE:g})")
    return numeric


def read_all_sources(cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Read every source of ``cfg``; also return {name: {file, sha256, rows, start, end}}.
    A panel's long file (many instruments, a ticker column) is not one series: the panel
    reader reads it one ticker at a time, and only its facts are gathered here."""
    frames, facts = {}, {}
    long_panel = cfg.panel.source if cfg.panel is not None and cfg.panel.ticker_column else None
    for name, spec in cfg.sources.items():
        path = cfg.source_path(name)
        if name == long_panel:
            columns = [str(c).strip() for c in pd.read_csv(path, nrows=0, skipinitialspace=True).columns]
            if spec.columns["date"] not in columns:
                raise DataError(f"{path}: missing column(s) date -> '{spec.columns['date']}' (source '{name}'); the "
                                f"data has {columns}; fix the data or the config's columns mapping")
            raw = pd.read_csv(path, usecols=[spec.columns["date"]], dtype=str).iloc[:, 0]
            dates = pd.to_datetime(raw, format=spec.date_format, errors="coerce").dropna()  # checked per ticker later
            facts[name] = {"file": str(path), "sha256": sha256_of(path), "columns": columns, "rows": len(raw),
                           "start": str(dates.min().date()) if len(dates) else "",
                           "end": str(dates.max().date()) if len(dates) else ""}
            continue
        frame = read_source(spec, path, name)
        frames[name] = frame
        facts[name] = {
            "file": str(path),
            "sha256": sha256_of(path),
            # The file's columns: what the prediction service accepts in a bars request's rows.
            "columns": [str(c).strip() for c in pd.read_csv(path, nrows=0, skipinitialspace=True).columns],
            "rows": len(frame),
            "start": str(frame.index[0].date()),
            "end": str(frame.index[-1].date()),
        }
        log.info("source %s: %d rows %s..%s", name, len(frame), facts[name]["start"], facts[name]["end"])
    return frames, facts
