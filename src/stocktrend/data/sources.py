"""Read one daily CSV into a date-indexed frame of canonical, numeric columns.

Every check names the file, the column and the 1-based line of the file (header = line 1),
so a user with a broken export knows exactly what to fix.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrend.data.config import DataConfig, SourceConfig
from stocktrend.data.errors import DataError
from stocktrend.storage import RemotePath, filesystem

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    """A file's SHA-256; a folder's (a partitioned Parquet dataset): of its files' relative
    paths and their own hashes, in order."""
    h = hashlib.sha256()
    path = path if isinstance(path, RemotePath) else Path(path)
    if path.is_dir():  # the same digest for a folder on disk and its copy on object storage
        files = path.files() if isinstance(path, RemotePath) else [
            (f.relative_to(path).as_posix(), f) for f in Path(path).rglob("*") if f.is_file()]
        for rel, f in sorted(files, key=lambda item: item[0].split("/")):  # by path parts, as Path sorts
            h.update(f"{rel}\0{sha256_of(f)}\n".encode())
        return h.hexdigest()
    with _opened(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _line(row: int) -> int:
    """File line of the 0-based data row ``row`` (the header is line 1)."""
    return int(row) + 2


MAX_VALUE = 1e12  # a price, rate or volume no market produces beyond


def _parse_dates(raw: pd.Series, spec: SourceConfig, path: str, rows: np.ndarray) -> pd.DatetimeIndex:
    col = spec.columns["date"]
    typed = pd.api.types.is_datetime64_any_dtype(raw)  # a typed file's dates (Parquet): no text round trip
    try:
        parsed = raw if typed else pd.to_datetime(raw.astype(str), format=spec.date_format, errors="coerce")
    except (ValueError, TypeError, OverflowError) as err:  # mixed UTC offsets, say: not one calendar
        raise DataError(f"{path}: column '{col}': cannot read the dates as one calendar ({err}); give every "
                        "date the same UTC offset, or none") from None
    bad = parsed.isna().to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        raise DataError(f"{path}: column '{col}', line {_line(rows[pos])}: cannot read date {raw.iloc[pos]!r}")
    # Timestamps like '1990-01-02 00:00:00+00:00' describe a day; keep the day.
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    dates = pd.DatetimeIndex(parsed).normalize()
    dup = dates.duplicated()
    if dup.any():
        pos = int(np.argmax(dup))
        raise DataError(f"{path}: column '{col}', line {_line(rows[pos])}: duplicate date {dates[pos].date()}")
    back = np.flatnonzero(np.diff(dates.asi8) < 0)
    if back.size:
        pos = int(back[0]) + 1
        raise DataError(
            f"{path}: column '{col}', line {_line(rows[pos])}: dates are not sorted "
            f"({dates[pos].date()} comes after {dates[pos - 1].date()})"
        )
    return dates


def _numeric(frame: pd.DataFrame, path: str, na_values: list[str], rows: np.ndarray) -> pd.DataFrame:
    out = {}
    for col in frame.columns:
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce")
        was_missing = raw.isna() | raw.astype(str).str.strip().isin(na_values)
        bad = (values.isna() & ~was_missing).to_numpy()
        if bad.any():
            pos = int(np.argmax(bad))
            raise DataError(f"{path}: column '{col}', line {_line(rows[pos])}: not a number: {raw.iloc[pos]!r}")
        inf = np.isinf(values.to_numpy(dtype=float))
        if inf.any():
            pos = int(np.argmax(inf))
            raise DataError(f"{path}: column '{col}', line {_line(rows[pos])}: infinite value")
        out[col] = values.astype(float)
    return pd.DataFrame(out, index=frame.index)


def _opened(path: Path | RemotePath):
    """A file's bytes, on disk or on object storage."""
    return path.open() if isinstance(path, RemotePath) else open(path, "rb")


def read_source(spec: SourceConfig, path: Path, name: str = "") -> pd.DataFrame:
    """Read a source file into a frame indexed by day, columns renamed to canonical names.

    ohlcv/close sources get canonical columns (close, adj_close, ...); panels and rates
    keep their series names, prefixed with the source name by the feature code.
    """
    wanted = [*spec.columns.values(), *spec.filter] if spec.kind in ("ohlcv", "close") else None
    return parse_table(spec, read_table(path, name, wanted), str(path), name)


PARQUET = (".parquet", ".pq")


def is_parquet(path: Path) -> bool:
    """A Parquet file (by its suffix) or a Parquet dataset: a folder of files, partitioned or not."""
    return path.suffix.lower() in PARQUET or path.is_dir()


def parquet_dataset(path: Path):
    """A Parquet file or folder as one table (a folder's ``key=value`` subfolders are columns)."""
    import pyarrow.dataset as ds  # Ray Data's dependency: always installed

    try:
        if isinstance(path, RemotePath):
            fs, where = filesystem(str(path))
            return ds.dataset(where, filesystem=fs, format="parquet", partitioning="hive")
        return ds.dataset(path, format="parquet", partitioning="hive")
    except Exception as err:  # pyarrow raises its own types for a file that is not Parquet
        raise DataError(f"{path}: cannot read as Parquet: {err}") from None


def read_table(path: Path, name: str = "", columns: list[str] | None = None,
               rows_with: tuple[str, list] | None = None) -> pd.DataFrame:
    """A source file's rows as ``parse_table`` takes them: a CSV as text, Parquet (a file by its
    suffix, or a folder) with its own types; only ``columns`` when the file has them all.
    ``rows_with`` (column, values): Parquet rows whose column holds one of the values, read by
    partition and by row groups' statistics where the data is laid out by it."""
    pick = _picked(path, name, columns)
    if is_parquet(path):
        import pyarrow.dataset as ds

        data = parquet_dataset(path)
        try:
            where = ds.field(rows_with[0]).isin(rows_with[1]) if rows_with else None
            return data.to_table(columns=pick, filter=where).to_pandas()
        except Exception as err:
            raise DataError(f"{path}: cannot read as Parquet: {err}") from None
    if rows_with:
        raise ValueError("rows_with reads Parquet only")
    return _read_csv(path, pick)


def read_csv_blocks(path: Path, name: str, columns: list[str], rows: int) -> Iterator[pd.DataFrame]:
    """A CSV source's rows ``rows`` at a time, read exactly as ``read_table`` reads them (the
    frames' index continues across blocks: each row's position in the file)."""
    try:
        yield from _read_csv(path, _picked(path, name, columns), chunksize=rows)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot parse as CSV: {err}") from None


def _picked(path: Path, name: str, columns: list[str] | None) -> list[str] | None:
    if not (path.is_file() or path.is_dir()):
        raise DataError(f"source '{name}': file not found: {path}")
    names = table_columns(path)
    # Only the columns asked for, when it has them all; else all, so an error lists what it has.
    return [c for c in names if c in set(columns)] if columns and set(columns) <= set(names) else None


def _read_csv(path: Path, pick: list[str] | None, chunksize: int | None = None):
    try:  # a file on object storage is read from its stream (closed when the reader is collected)
        return pd.read_csv(path.open() if isinstance(path, RemotePath) else path, dtype=str, keep_default_na=False,
                           skipinitialspace=True, chunksize=chunksize,
                           usecols=None if pick is None else (lambda c: str(c).strip() in pick))
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot parse as CSV: {err}") from None


def _strip(col: pd.Series) -> pd.Series:
    if pd.api.types.infer_dtype(col, skipna=True) == "string":  # all text: the vectorised strip
        return col.str.strip()
    return col.map(lambda v: v.strip() if isinstance(v, str) else v)  # mixed (a JSON row's numbers and text)


def parse_table(spec: SourceConfig, frame: pd.DataFrame, where: str, name: str = "") -> pd.DataFrame:
    """Validate and convert a table laid out like the source file (same column names).

    Shared by files and by raw bars sent to the prediction service, so both get the
    same checks and the same messages; ``where`` names the file or request field.
    """
    if frame.empty:
        raise DataError(f"{where}: no data rows")
    frame = frame.set_axis([str(c).strip() for c in frame.columns], axis=1)
    # Text columns (all of a CSV's; a Parquet file's strings) are stripped and their missing-value
    # markers made NaN, column by column; typed columns (a Parquet file's numbers, dates) are
    # already what they say: walking them cell by cell cost more than the rest of the read.
    text = {c: _strip(frame[c]).replace(spec.na_values, np.nan) for c in frame.columns
            if pd.api.types.is_object_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c])}
    frame = frame.assign(**text) if text else frame

    for col, value in spec.filter.items():
        if col not in frame.columns:
            raise DataError(f"{where}: filter column '{col}' not found; columns are {list(frame.columns)}")
        frame = frame[frame[col] == value]
        if frame.empty:
            raise DataError(f"{where}: no rows with {col} == {value!r}")

    # The file's own row of each kept row (a filter, or one ticker's rows of a long file, keeps some),
    # so that an error names the line of the file, not of the subset.
    rows = np.asarray(frame.index) if pd.api.types.is_integer_dtype(frame.index) else np.arange(len(frame))
    frame = frame.reset_index(drop=True)
    missing = [f"{key} -> '{col}'" for key, col in spec.columns.items() if col not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)} (source '{name}'); "
            f"the data has {list(frame.columns)}; fix the data or the config's columns mapping"
        )
    path = where
    dates = _parse_dates(frame[spec.columns["date"]], spec, path, rows)

    if spec.kind in ("ohlcv", "close"):
        picked = frame[[c for k, c in spec.columns.items() if k != "date"]]
        numeric = _numeric(picked, path, spec.na_values, rows)
        numeric.columns = [k for k in spec.columns if k != "date"]
    else:
        skip = {spec.columns["date"], *spec.filter}
        names = spec.include or [c for c in frame.columns if c not in skip]
        absent = [c for c in names if c not in frame.columns]
        if absent:
            raise DataError(f"{where}: include lists column(s) {absent} not in the data; it has {list(frame.columns)}")
        numeric = _numeric(frame[names], path, spec.na_values, rows)

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
                raise DataError(f"{where}: column '{spec.columns[col]}', line {_line(rows[pos])}: price must be positive")
        if "volume" in numeric and (numeric["volume"] < 0).any():
            pos = int(np.argmax((numeric["volume"] < 0).to_numpy()))
            raise DataError(f"{where}: column '{spec.columns['volume']}', line {_line(rows[pos])}: volume cannot be negative")
    huge = (numeric.abs() > MAX_VALUE).to_numpy()
    if huge.any():  # beyond float32 features once differenced or squared
        pos, col = (int(i) for i in np.argwhere(huge)[0])
        name = spec.columns.get(numeric.columns[col], numeric.columns[col])  # the file's own column name
        raise DataError(f"{where}: column '{name}', line {_line(rows[pos])}: {numeric.iat[pos, col]:g} is "
                        f"beyond any market's values (|value| <= {MAX_VALUE:g})")
    return numeric


def table_columns(path: Path) -> list[str]:
    """The column names of a CSV (its header, stripped) or Parquet file (its schema)."""
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if is_parquet(path):
        return list(parquet_dataset(path).schema.names)
    with _opened(path) as f:
        return [str(c).strip() for c in pd.read_csv(f, nrows=0, skipinitialspace=True).columns]


def _date_span(path: Path, name: str, spec: SourceConfig) -> tuple[int, pd.Timestamp | None, pd.Timestamp | None]:
    """(rows, first date, last date) of a long table, its date column read a block at a time
    (dates that do not parse are left to the per-ticker checks, which name their line)."""
    column = spec.columns["date"]
    if is_parquet(path):
        blocks = (b.to_pandas().iloc[:, 0] for b in parquet_dataset(path).to_batches(columns=[column],
                                                                                     batch_size=1_000_000))
    else:
        blocks = (b.iloc[:, 0] for b in read_csv_blocks(path, name, [column], 1_000_000))
    rows, start, end = 0, None, None
    for raw in blocks:
        rows += len(raw)
        dates = (raw if pd.api.types.is_datetime64_any_dtype(raw)
                 else pd.to_datetime(raw.astype(str), format=spec.date_format, errors="coerce")).dropna()
        if len(dates):
            start = dates.min() if start is None else min(start, dates.min())
            end = dates.max() if end is None else max(end, dates.max())
    return rows, start, end


def read_all_sources(cfg: DataConfig, panel_facts_only: bool = False) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Read every source of ``cfg``; also return {name: {file, sha256, rows, start, end}}.
    A panel's long file (many instruments, a ticker column) is not one series: the panel
    reader reads it one ticker at a time, and only its facts are gathered here; with
    ``panel_facts_only``, a close panel's too (the streamed build reads its columns by chunk)."""
    frames, facts = {}, {}
    panel = cfg.panel.source if cfg.panel is not None else None
    facts_only = panel if panel and (cfg.panel.ticker_column or panel_facts_only) else None
    for name, spec in cfg.sources.items():
        path = cfg.source_path(name)
        if name == facts_only:
            columns = table_columns(path)
            if spec.columns["date"] not in columns:
                raise DataError(f"{path}: missing column(s) date -> '{spec.columns['date']}' (source '{name}'); the "
                                f"data has {columns}; fix the data or the config's columns mapping")
            rows, start, end = _date_span(path, name, spec)
            facts[name] = {"file": str(path), "sha256": sha256_of(path), "columns": columns, "rows": rows,
                           "start": str(start.date()) if start is not None else "",
                           "end": str(end.date()) if end is not None else ""}
            continue
        frame = read_source(spec, path, name)
        frames[name] = frame
        facts[name] = {
            "file": str(path),
            "sha256": sha256_of(path),
            # The file's columns: what the prediction service accepts in a bars request's rows.
            "columns": table_columns(path),
            "rows": len(frame),
            "start": str(frame.index[0].date()),
            "end": str(frame.index[-1].date()),
        }
        log.info("source %s: %d rows %s..%s", name, len(frame), facts[name]["start"], facts[name]["end"])
    return frames, facts
