"""Raw daily bars taken from source files, laid out as a client sends them to the service.

Used to build the request for "the latest day" (``ray_jobs/deploy.py``), by tests and
benchmarks: rows are the files' own rows (same column names, values as written), so the
service parses them exactly as the dataset builder parsed the files.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from stocktrend.inference.predictor import Predictor


def bars_until(predictor: Predictor, data_root: str | Path, day: str | dt.date | None = None,
               keep: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """The last ``keep`` rows (default: what the model needs) of every source, up to ``day``
    inclusive, from the files under ``data_root``. The default day is the latest one every
    source covers (context files end at different dates; features need all of them)."""
    keep = keep or predictor.bars_needed
    frames = {}
    for name, spec in predictor.data_cfg.sources.items():
        path = Path(spec.path) if Path(spec.path).is_absolute() else Path(data_root) / spec.path
        frames[name] = (spec, pd.read_csv(path, dtype=str, keep_default_na=False))
    if day is None:
        day = min(pd.to_datetime(raw[spec.columns["date"]]).max() for spec, raw in frames.values())
    bars = {}
    for name, (spec, raw) in frames.items():
        raw = raw[pd.to_datetime(raw[spec.columns["date"]]) <= pd.Timestamp(day)]
        bars[name] = raw.tail(keep).to_dict(orient="records")
    return bars
