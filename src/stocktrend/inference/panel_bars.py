"""Raw bars of a whole panel turned into one instrument's window, by the dataset's own code.

A panel model's cross-sectional features rank and z-score each day over the instruments
present, so one instrument's prediction needs the bars of every instrument the model was
trained on (``panel_instruments`` says which, and how they are laid out in a request): a
request with fewer would compute different features than training did, and is refused
naming what is missing. The same ``build_panel`` as the dataset builder computes the
features; the artifact's scaler and feature selection follow.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stocktrend.data.config import SourceConfig
from stocktrend.data.errors import DataError
from stocktrend.data.panel import build_panel
from stocktrend.data.sources import parse_table
from stocktrend.inference.rows import frame_from_rows, rows_allowed

if TYPE_CHECKING:
    from stocktrend.inference.predictor import Predictor


def _input_error(field: str, message: str):
    from stocktrend.inference.predictor import InputError

    return InputError(field, message)


def panel_instruments(p: Predictor) -> dict[str, Any]:
    """What a bars request to this panel model carries (for ``/v1/model`` and error messages)."""
    spec, tickers = p.data_cfg.panel, list(p.preprocessing.get("tickers") or [])
    context = sorted(n for n in p.data_cfg.sources if n != spec.source)
    if spec.source and not spec.ticker_column:
        layout = (f"bars.{spec.source}: one row per day with a '{p.data_cfg.sources[spec.source].columns['date']}' "
                  f"column and one close column per instrument, named by its ticker")
    else:
        layout = "bars.<TICKER>: one list of daily OHLCV rows per instrument, columns as " + str(_member_columns(p))
    return {"instruments": tickers, "instrument_layout": layout, "context_sources": context,
            "rows_needed_per_source": p.bars_needed, "ticker_field": "ticker (which instrument to predict)"}


def _member_columns(p: Predictor) -> dict[str, str]:
    spec = p.data_cfg.panel
    if spec.source:  # a long file: its own column mapping
        return dict(p.data_cfg.sources[spec.source].columns)
    return dict(spec.columns)


def _parse(p: Predictor, spec: SourceConfig, rows: Any, field: str, name: str) -> pd.DataFrame:
    frame = rows if isinstance(rows, pd.DataFrame) else frame_from_rows(rows, field, rows_allowed(p.bars_needed),
                                                                        p.source_columns(name))
    try:
        return parse_table(spec, frame, field, name)
    except DataError as err:
        raise _input_error(field, str(err).removeprefix(f"{field}: ")) from None


def _members(p: Predictor, bars: dict[str, Any], tickers: list[str]) -> dict[str, pd.DataFrame]:
    spec = p.data_cfg.panel
    if spec.source and not spec.ticker_column:  # a close panel: one column per instrument
        field = f"bars.{spec.source}"
        if spec.source not in bars:
            raise _input_error(field, f"missing: the closes of every instrument of the model, {tickers}")
        table = _parse(p, p.data_cfg.sources[spec.source], bars[spec.source], field, spec.source)
        table.columns = [str(c).upper() for c in table.columns]
        missing = [t for t in tickers if t not in table.columns]
        if missing:
            raise _input_error(field, f"missing instrument column(s) {missing}; a request carries the bars of every "
                                      f"instrument the model was trained on ({len(tickers)}: {tickers}), because its "
                                      "cross-sectional features compare them day by day")
        extra = sorted(set(table.columns) - set(tickers))
        if extra:
            raise _input_error(field, f"column(s) {extra} are not instruments of this model ({tickers}); they would "
                                      "change its cross-sectional features")
        return {t: table[[t]].rename(columns={t: "close"}).dropna() for t in tickers}
    member_spec = SourceConfig(path="<request>", kind="ohlcv", columns=_member_columns(p))
    members = {}
    for t in tickers:
        if t not in bars:
            raise _input_error(f"bars.{t}", f"missing instrument; a request carries the bars of every instrument "
                                            f"of the model ({tickers})")
        members[t] = _parse(p, member_spec, bars[t], f"bars.{t}", t).dropna(subset=["close"])
    return members


def panel_windows(p: Predictor, bars: dict[str, Any], ticker: str | None, last: int = 1
                  ) -> tuple[np.ndarray, list[str]]:
    """The scaled windows of ``ticker`` ending on the last ``last`` days of the bars."""
    tickers = [t.upper() for t in p.preprocessing.get("tickers") or []]
    if not ticker:
        raise _input_error("ticker", f"this panel model predicts one instrument per request: give one of {tickers}")
    ticker = str(ticker).upper()
    if ticker not in tickers:
        raise _input_error("ticker", f"{ticker!r} is not an instrument of this model; it has {tickers}")
    cfg = p.data_cfg
    frames = {}
    for name, spec in cfg.sources.items():
        if name == cfg.panel.source:
            continue
        if name not in bars:
            raise _input_error(f"bars.{name}", f"missing source; the model needs {sorted(bars.keys() | {name})}")
        frames[name] = _parse(p, spec, bars[name], f"bars.{name}", name)
    members = _members(p, bars, tickers)
    last_day = max(f.index[-1] for f in members.values() if len(f))
    for t, frame in members.items():  # a short history of any member would change the cross-section
        if len(frame) and frame.index[-1] == last_day and len(frame) < p.bars_needed:
            raise _input_error(f"bars ({t})", f"too little history: {len(frame)} bars up to {last_day.date()}, the "
                                              f"model needs {p.bars_needed} of every instrument trading that day")
    if ticker not in members or not len(members[ticker]) or members[ticker].index[-1] != last_day:
        raise _input_error(f"bars ({ticker})", f"{ticker} has no bar on the last day of the request "
                                               f"({last_day.date()})")
    try:
        panel = build_panel(dataclasses.replace(cfg, start=None), frames, members)
    except DataError as err:
        raise _input_error("bars", str(err)) from None
    try:
        columns = [panel.names.index(f) for f in p.features]
    except ValueError as err:
        raise _input_error("bars", f"the panel's features lack one the model uses ({err})") from None
    values = (panel.features[panel.tickers.index(ticker)][:, columns] - p.mean) / p.std
    n = len(values)
    ends = np.arange(n - last, n)
    windows = p.windows_at(values, ends)
    incomplete = ~np.isfinite(windows).all(axis=(1, 2))
    if incomplete.any():
        day = panel.calendar[ends[np.flatnonzero(incomplete)[0]]].date()
        raise _input_error("bars", f"features incomplete for {ticker}'s window ending {day}: {ticker} has no bar "
                                   "that day, or a context source has gaps")
    return windows, [str(d.date()) for d in panel.calendar[ends]]
