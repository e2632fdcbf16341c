"""Daily rows sent as JSON (a bars request) checked before a frame is built from them.

A frame built from client rows costs rows x distinct keys cells: rows whose keys differ
would each add columns (2,000 rows with one new key each: four million cells from 23 KB).
So a source's rows must form a table, as its file did: every row an object with the first
row's keys, scalar values, at most as many rows as the model reads plus slack, and, when the
artifact recorded the source file's columns at training, no key the file did not have.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

MAX_COLUMNS = 1024  # keys per row of a source whose columns were not recorded (a wide close panel)
SCALARS = (str, int, float, type(None))  # not bool (an int to Python), not lists or objects


def _error(field: str, message: str):
    from stocktrend.inference.predictor import InputError

    return InputError(field, message)


def rows_allowed(needed: int) -> int:
    """Rows a request may send for a source: what the model reads, plus as much again (a
    client sending "the last few years" is fine; the service reads the tail)."""
    return 2 * needed + 250


def frame_from_rows(rows: Any, field: str, max_rows: int, known: list[str] | None = None) -> pd.DataFrame:
    if not isinstance(rows, list) or not rows:
        raise _error(field, "must be a non-empty list of objects (one per day)")
    if len(rows) > max_rows:
        raise _error(field, f"{len(rows)} rows; at most {max_rows} are accepted (the model reads the last "
                            f"{(max_rows - 250) // 2})")
    first = rows[0]
    if not isinstance(first, dict):
        raise _error(f"{field}[0]", "must be an object (one day's columns)")
    keys = list(first)
    if known is not None:
        unknown = [k for k in keys if k not in set(known)]
        if unknown:
            raise _error(f"{field}[0].{unknown[0]}", f"unknown column; this source's columns are {known}")
    elif len(keys) > MAX_COLUMNS:
        raise _error(f"{field}[0]", f"{len(keys)} columns; at most {MAX_COLUMNS} are accepted")
    expected = first.keys()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _error(f"{field}[{i}]", "must be an object (one day's columns)")
        if row.keys() != expected:
            extra = sorted(set(row) - set(expected))
            missing = sorted(set(expected) - set(row))
            what = f"has column '{extra[0]}' that row 0 does not" if extra else f"lacks column '{missing[0]}' of row 0"
            raise _error(f"{field}[{i}]", f"{what}: every row needs the same columns")
        for key, value in row.items():
            if not isinstance(value, SCALARS) or isinstance(value, bool):
                raise _error(f"{field}[{i}].{key}", f"must be a number, a string or null, got {type(value).__name__}")
    return pd.DataFrame.from_records(rows, columns=keys)
