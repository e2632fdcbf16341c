"""Convert one source's CSV text: map columns, ISO dates in order, cells copied verbatim."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tools.extract_data.dates import parse_date
from tools.extract_data.specs import ExtractError, SourceSpec

# Source cells that mean "no value"; they are written as empty cells.
MISSING_TOKENS = frozenset({"", ".", "NaN", "nan", "NAN", "NA", "N/A", "null", "NULL", "None"})

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass
class Converted:
    header: list[str]
    rows: list[list[str]]
    start: str
    end: str
    missing_cells: int
    groups: dict[str, dict[str, Any]]


def convert(spec: SourceSpec, text: str, label: str) -> Converted:
    """Map columns, convert dates to ISO and validate order; cells are copied verbatim.

    ``label`` names the source in errors. Lines are 1-based with the header on line 1.
    """
    reader = csv.reader(io.StringIO(text))
    try:
        src_header = next(reader)
    except StopIteration:
        raise ExtractError(f"{label}: empty file") from None
    src_header = [h.strip() for h in src_header]
    index = {h: i for i, h in enumerate(src_header)}
    if len(index) != len(src_header):
        raise ExtractError(f"{label}: line 1: duplicate column names in header {src_header}")
    if spec.date_col not in index:
        raise ExtractError(f"{label}: line 1: no date column {spec.date_col!r} in header {src_header}")
    if spec.columns is None:
        skip = {spec.date_col} | ({spec.group[1]} if spec.group else set())
        columns = [(h, h) for h in src_header if h not in skip]
    else:
        columns = list(spec.columns)
    need = [src for _, src in columns] + ([spec.group[1]] if spec.group else [])
    absent = [c for c in need if c not in index]
    if absent:
        raise ExtractError(f"{label}: line 1: missing column(s) {absent} in header {src_header}")

    header = ([spec.group[0]] if spec.group else []) + [spec.out_date] + [out for out, _ in columns]
    i_date = index[spec.date_col]
    i_group = index[spec.group[1]] if spec.group else None
    i_vals = [index[src] for _, src in columns]
    rows: list[list[str]] = []
    missing = 0
    groups: dict[str, dict[str, Any]] = {}
    current: str | None = None
    prev: dt.date | None = None
    lo: dt.date | None = None
    hi: dt.date | None = None
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue  # blank line
        if len(row) != len(src_header):
            raise ExtractError(f"{label}: line {line}: {len(row)} cells, header has {len(src_header)}")
        try:
            day = parse_date(row[i_date], spec.date_format)
        except ValueError as exc:
            raise ExtractError(f"{label}: line {line}: column {spec.date_col!r}: {exc}") from None
        key = ""
        if i_group is not None:
            key = row[i_group].strip()
            if not key:
                raise ExtractError(f"{label}: line {line}: empty {spec.group[1]!r}")
            if key != current:
                if key in groups:
                    raise ExtractError(
                        f"{label}: line {line}: {spec.group[1]} {key!r} reappears; each one's rows must be contiguous"
                    )
                current, prev = key, None
                groups[key] = {"start": day.isoformat(), "end": day.isoformat(), "rows": 0}
        where = f" for {key!r}" if i_group is not None else ""
        if prev is not None:
            if day == prev:
                raise ExtractError(f"{label}: line {line}: duplicate date {day.isoformat()}{where}")
            if day < prev:
                raise ExtractError(
                    f"{label}: line {line}: dates not ascending{where} "
                    f"({day.isoformat()} comes after {prev.isoformat()})"
                )
        prev = day
        lo = day if lo is None or day < lo else lo
        hi = day if hi is None or day > hi else hi
        out: list[str] = [key] if i_group is not None else []
        out.append(day.isoformat())
        for (_, src), i in zip(columns, i_vals, strict=True):
            cell = row[i]
            if cell.strip() in MISSING_TOKENS:
                out.append("")
                missing += 1
            elif _NUMBER.fullmatch(cell.strip()):
                out.append(cell.strip())
            else:
                raise ExtractError(f"{label}: line {line}: column {src!r}: not a number: {cell!r}")
        if i_group is not None:
            g = groups[key]
            g["end"], g["rows"] = day.isoformat(), g["rows"] + 1
        rows.append(out)
    if not rows:
        raise ExtractError(f"{label}: no data rows")
    return Converted(header, rows, lo.isoformat(), hi.isoformat(), missing, groups)  # type: ignore[union-attr]


def render_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")
