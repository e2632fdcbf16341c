"""The universe of a streamed panel build, in chunks: which instruments are listed and where
each chunk's rows are (a close panel's columns, files, a long Parquet table by ticker, or a
long CSV bucketed by ticker in one streamed pass), so each task reads only its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from stocktrend.data.config import DataConfig
from stocktrend.data.errors import DataError
from stocktrend.data.panel import by_ticker, listed, member_files
from stocktrend.data.sources import is_parquet, parquet_dataset, read_csv_blocks, table_columns
from stocktrend.storage import RemotePath

CSV_ROWS = 500_000  # rows per block of a long CSV's passes


@dataclasses.dataclass
class Chunk:
    """Some instruments (upper-case, sorted) and where their rows are: a close panel's columns
    (``columns``, read from ``table``), files (``files``), or a long table (``table``) with the
    raw ticker values to read from it (``values``; None: the whole table is theirs, a bucket of a
    long CSV)."""

    number: int
    tickers: list[str]
    columns: list[str] | None = None
    files: dict[str, Path] | None = None
    table: Path | RemotePath | None = None
    values: list[str] | None = None

    @property
    def on_object_storage(self) -> bool:
        """Whether its rows are on object storage, which any node reads (else on the driver's disk)."""
        return isinstance(self.table, RemotePath)



def list_universe(cfg: DataConfig, scratch: Path, size: int) -> list[Chunk]:
    """The listed instruments in chunks of ``size``, in ticker order."""
    spec = cfg.panel

    def chunked(tickers: list[str]) -> list[list[str]]:
        tickers = sorted(t for t in tickers if listed(cfg, t))
        return [tickers[i:i + size] for i in range(0, len(tickers), size)]

    if spec.source and not spec.ticker_column:  # each task reads its own columns of the close panel
        path, source = cfg.source_path(spec.source), cfg.sources[spec.source]
        column = by_ticker(source.include or [c for c in table_columns(path) if c != source.columns["date"]], str(path))
        return [Chunk(i, ts, columns=[column[t] for t in ts], table=path) for i, ts in enumerate(chunked(list(column)))]
    if not spec.source:
        files = member_files(cfg)
        return [Chunk(i, ts, files={t: files[t] for t in ts}) for i, ts in enumerate(chunked(list(files)))]
    path = cfg.source_path(spec.source)
    if spec.ticker_column not in table_columns(path):
        raise DataError(f"{path}: no ticker column '{spec.ticker_column}'; columns are {table_columns(path)}")
    if is_parquet(path):
        spellings = parquet_tickers(path, spec.ticker_column)
        return [Chunk(i, ts, table=path, values=[v for t in ts for v in spellings[t]])
                for i, ts in enumerate(chunked(list(spellings)))]
    return _bucket_csv(cfg, path, chunked, scratch)


def parquet_tickers(path: Path, column: str) -> dict[str, list[str]]:
    """{ticker: the raw values that spell it} of a long Parquet table, reading one column."""
    import pyarrow.compute as pc

    spellings: dict[str, list[str]] = {}
    row = 0
    for batch in parquet_dataset(path).to_batches(columns=[column], batch_size=1_000_000):
        values = batch.column(0)
        blank = pc.or_kleene(pc.is_null(values), pc.equal(pc.utf8_trim_whitespace(values.cast("string")), ""))
        if pc.any(blank).as_py():
            raise DataError(f"{path}: column '{column}', row {row + pc.index(blank, True).as_py() + 1}: no ticker")
        for raw in pc.unique(values).to_pylist():
            if raw not in spellings.get(str(raw).strip().upper(), []):
                spellings.setdefault(str(raw).strip().upper(), []).append(raw)
        row += batch.num_rows
    return spellings


def csv_tickers(path: Path, name: str, column: str) -> set[str]:
    """The tickers (stripped, upper case) of a long CSV, reading its ticker column a block at a time."""
    names: set[str] = set()
    for block in read_csv_blocks(path, name, [column], CSV_ROWS):
        stripped = block[column].str.strip()
        blank = (stripped == "").to_numpy()
        if blank.any():
            raise DataError(f"{path}: column '{column}', line {int(block.index[np.argmax(blank)]) + 2}: no ticker")
        names |= set(stripped.str.upper().unique())
    return names


def _bucket_csv(cfg: DataConfig, path: Path, chunked, scratch: Path) -> list[Chunk]:
    """A long CSV's rows split by chunk of tickers into Parquet parts, in two streamed passes
    (the ticker column, then every row), each row keeping its position in the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec, source = cfg.panel, cfg.sources[cfg.panel.source]
    column = spec.ticker_column
    groups = chunked(list(csv_tickers(path, spec.source, column)))
    bucket_of = {t: i for i, ts in enumerate(groups) for t in ts}
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for block in read_csv_blocks(path, spec.source, [*source.columns.values(), column], CSV_ROWS):
            bucket = block[column].str.strip().str.upper().map(bucket_of)
            block = block.assign(__row=block.index.to_numpy())
            for i, rows in block[bucket.notna().to_numpy()].groupby(bucket.dropna().astype(int).to_numpy()):
                table = pa.Table.from_pandas(rows, preserve_index=False)
                if i not in writers:
                    schema = pa.schema([pa.field(c, pa.int64() if c == "__row" else pa.string())
                                        for c in table.column_names])
                    writers[i] = pq.ParquetWriter(scratch / f"bucket-{i}.parquet", schema)
                writers[i].write_table(table.cast(writers[i].schema))
    finally:
        for w in writers.values():
            w.close()
    return [Chunk(i, ts, table=scratch / f"bucket-{i}.parquet") for i, ts in enumerate(groups)]
