"""A panel model's predictions for its whole universe on the latest days: the work of the
daily scoring job (``ray_jobs/score_universe.py``), whose snapshot the Serve deployment
answers by ticker.

The universe is read the way the streamed dataset build reads it (``data.universe`` lists
it in chunks; each chunk is read, validated and filtered by one task, on Ray or in this
process), and each task keeps only its instruments' last ``bars_needed + days - 1`` rows up
to the scoring day (the rows a bars request to the service would carry) and the days they
traded (the calendar). A second pass of tasks computes each instrument's candidate features
as the dataset build does (``panel.instrument_candidates``) and returns the model's columns
and the cross-section's inputs on the window days only; the driver computes the
cross-section over each day's members (the config's membership table), then applies the
artifact's selection and scaler. So no process holds more than a chunk's history, or more
than the window days of the universe. An instrument that cannot be scored on the last day
(stopped trading, not a member, no bar that day, too little history) is listed with the reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stocktrend.cluster.tasks import ANYWHERE, ordered_map
from stocktrend.data.config import CHUNK, DataConfig
from stocktrend.data.errors import DataError
from stocktrend.data.features import adjusted_ohlc, context_features
from stocktrend.data.membership import membership_on
from stocktrend.data.panel import XS_BASE, cross_sectional, instrument_candidates, members_only, union_of_days
from stocktrend.data.panel_stream import chunk_members
from stocktrend.data.sources import read_source
from stocktrend.data.universe import Chunk, list_universe
from stocktrend.inference.predictor import InputError, Predictor

log = logging.getLogger(__name__)
BATCH = 512  # windows per back-end call


def score_universe(p: Predictor, data_root: str | Path, *, as_of: str | None = None, days: int = 1,
                   use_ray: bool = False, chunk: int = CHUNK, progress: bool = False,
                   universe: DataConfig | None = None) -> tuple[dict[str, Any], dict[str, list]]:
    """(snapshot metadata, prediction columns) of every instrument the model's dataset config
    lists under ``data_root``, on the last ``days`` trading days up to ``as_of`` (default:
    the last day every context source covers). ``universe``: another panel config to score
    instead (its files, listing and membership; e.g. a model trained on one index scoring a
    wider one), which must yield the model's features."""
    if p.data_cfg.panel is None:
        raise InputError("--model", f"{p.name} is a single-stock model ({p.data_cfg.ticker}): score its days with "
                                    "ray_jobs/predict.py")
    if days < 1:
        raise InputError("--days", f"must be 1 or more, got {days}")
    if universe is not None and universe.panel is None:
        raise InputError("--universe", f"{universe.name} is not a panel config (it has no panel: section)")
    cfg = dataclasses.replace(universe or p.data_cfg, start=None,
                              base_dir=universe.base_dir if universe else str(Path(data_root).resolve()))
    frames = {name: read_source(spec, cfg.source_path(name), name)
              for name, spec in cfg.sources.items() if name != cfg.panel.source}
    cap = min((f.index[-1] for f in frames.values()), default=None)
    if as_of is not None:
        cap = min(cap, pd.Timestamp(as_of)) if cap is not None else pd.Timestamp(as_of)
    rows = p.bars_needed + days - 1
    tails: dict[str, pd.DataFrame] = {}
    left_out: dict[str, str] = {}
    day_parts: list[np.ndarray] = []
    scratch = Path(tempfile.mkdtemp(prefix="stocktrend-score-"))  # a long CSV's buckets
    try:
        chunks = list_universe(cfg, scratch, chunk)
        # Rows on object storage are read on any node; rows on the driver's disk beside it.
        for res in tqdm(ordered_map(_tail_of_chunk, chunks, shared=(cfg, cap, rows), use_ray=use_ray,
                                    reraise=(DataError,), place=lambda c: ANYWHERE if c.on_object_storage else None),
                        total=len(chunks), desc="read universe", unit="chunk", disable=not progress):
            tails.update(res["tails"])
            day_parts.append(res["days"])
            left_out.update({t: f"fewer than min_days={cfg.panel.min_days} rows ({n})" for t, n in res["short"].items()})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # Only instruments trading on some day of the windows scored can move a feature in them
    # (their own, or a day's cross-section); one that stopped trading before is left out, so
    # the calendar spans the last rows, not the history (a 30-year universe's delisted names).
    listed = len(tails) + len(left_out)  # every instrument the config lists, the too short ones included
    if not tails:
        raise DataError(f"panel: no listed instrument has rows up to {cap.date() if cap is not None else 'the end'} "
                        f"under {cfg.base_dir}")
    # The dataset build's calendar: every day any listed instrument traded (not only the days
    # of the rows kept), so features that look back a number of days look back as in training.
    calendar = pd.DatetimeIndex(union_of_days(day_parts))
    first_window_day = calendar[-min(len(calendar), p.seq_len + days - 1)]
    for t in [t for t, f in tails.items() if f.index[-1] < first_window_day]:
        left_out[t] = f"no bar since {tails.pop(t).index[-1].date()}"
    last_day = calendar[-1]
    if len(tails) < 3:
        raise DataError(f"panel: {len(tails)} instruments trading in the {p.seq_len + days - 1} days up to "
                        f"{last_day.date()} under {cfg.base_dir}; a panel needs 3 or more")
    frames = {name: f[f.index <= last_day] for name, f in frames.items()}
    calendar = calendar[calendar >= min(f.index[0] for f in tails.values())]
    tickers, selected, calendar, member = _selected_features(p, cfg, calendar, frames, tails, days, use_ray, chunk)
    ends = np.arange(len(calendar) - min(days, len(calendar)), len(calendar))
    dates = [str(d.date()) for d in calendar[ends]]
    windows, keys = [], []
    for i, t in enumerate(tickers):
        x = p.windows_at((selected[i] - p.mean) / p.std, ends)
        traded = calendar[ends].isin(tails[t].index)
        is_member = member[i, ends] if member is not None else np.ones(len(ends), bool)
        ok = np.isfinite(x).all(axis=(1, 2)) & traded & is_member
        windows.extend(x[ok].astype(np.float32))
        keys.extend((t, dates[k]) for k in np.flatnonzero(ok))
        if not ok[-1]:
            left_out[t] = (f"not a member on {dates[-1]}" if not is_member[-1] else
                           f"no bar on {dates[-1]}" if not traded[-1] else
                           f"incomplete features on {dates[-1]} (fewer than {p.bars_needed} rows of history, "
                           "or a context source has a gap)")
    if not windows:
        raise DataError(f"no instrument could be scored on {dates}: {dict(list(left_out.items())[:5])}")
    x = np.stack(windows)
    probs, vols = [], []
    for s in tqdm(range(0, len(x), BATCH), desc="score", unit="batch", disable=not progress):
        out = p.backend(x[s:s + BATCH])
        probs.append(out.probs)
        vols.append(p.volatility(out.volatility))
    probs = np.concatenate(probs).astype(np.float64)
    columns_out: dict[str, list] = {"ticker": [k[0] for k in keys], "date": [k[1] for k in keys],
                                    "p_up": probs[:, 1].round(8).tolist(), "p_down": probs[:, 0].round(8).tolist()}
    if vols[0] is not None:
        columns_out["volatility"] = np.concatenate(vols).astype(np.float64).round(6).tolist()
    trained_on = set(p.preprocessing.get("tickers") or [])
    meta = {
        "model": p.name, "model_version": p.version, "as_of": dates[-1], "dates": dates,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "horizon_days": p.horizon, "label": cfg.label, "universe": listed,
        "scored": sum(1 for _, d in keys if d == dates[-1]), "windows": len(keys),
        "left_out": dict(sorted(left_out.items())),
        "new_instruments": sorted(set(tickers) - trained_on) if trained_on else [],
        "data_root": cfg.base_dir, "universe_config": universe.name if universe else None,
        "rows_per_instrument": rows,
    }
    log.info("scored %d instruments on %s with %s/%s (%d left out)", meta["scored"], meta["as_of"], p.name,
             p.version, len(left_out))
    return meta, columns_out


def _selected_features(p: Predictor, cfg: DataConfig, calendar: pd.DatetimeIndex, frames: dict[str, pd.DataFrame],
                       tails: dict[str, pd.DataFrame], days: int, use_ray: bool, chunk: int
                       ) -> tuple[list[str], np.ndarray, pd.DatetimeIndex, np.ndarray | None]:
    """(tickers, (tickers, window days, the model's features) unscaled, the window days, the
    member mask on them or None): what the dataset build (``panel.build_panel``) computes
    over these rows on ``calendar``, then the model's selection of it, on the
    ``seq_len + days - 1`` days the windows cover. The
    candidates are computed by chunks' tasks over every row (the long moving averages need
    them), which return the model's columns and the cross-section's inputs on the window days
    only; the cross-section is computed here over each day's members, as the dataset build does
    (a day's cross-section depends on that day alone)."""
    tickers = sorted(tails)
    keep = p.seq_len + days - 1
    if len(calendar) < keep:  # (a window cut before the first day would wrap round to the last ones)
        raise DataError(f"the universe has {len(calendar)} trading days up to {calendar[-1].date()}; windows of "
                        f"{p.seq_len} days ending on each of {days} day(s) need {keep}")
    context = context_features(cfg, frames, calendar, skip={cfg.panel.source} - {None})
    chunks = [{t: tails[t] for t in tickers[i:i + chunk]} for i in range(0, len(tickers), chunk)]
    selected = np.full((len(tickers), keep, len(p.features)), np.nan)
    base = np.empty((len(tickers), keep, len(XS_BASE)))
    own_names, row = [], 0
    for part in ordered_map(_candidates_of_chunk, chunks, shared=(calendar, context, p.features, keep),
                            use_ray=use_ray, reraise=(DataError,), place=lambda _: ANYWHERE):  # rows by value
        own_names, m = part["names"], len(part["own"])
        for j, f in enumerate(own_names):
            selected[row:row + m, :, p.features.index(f)] = part["own"][:, :, j]
        base[row:row + m] = part["base"]
        row += m
    member, _ = membership_on(cfg, tickers, calendar)
    member = member[:, -keep:] if member is not None else None
    xs, xs_names = cross_sectional(members_only(base, member), XS_BASE)
    missing = [f for f in p.features if f not in own_names and f not in xs_names]
    if missing:
        raise DataError(f"the universe's features lack {missing}, which the model uses")
    for j, f in enumerate(p.features):
        if f not in own_names:
            selected[:, :, j] = xs[:, :, xs_names.index(f)]
    return tickers, selected, calendar[-keep:], member


def _candidates_of_chunk(calendar: pd.DatetimeIndex, context: dict, features: list[str], keep: int,
                         tails: dict[str, pd.DataFrame]) -> dict:
    """(a task) Each instrument's candidate features on the calendar (``panel.instrument_candidates``,
    as the dataset build), cut to the model's own columns and the cross-section's inputs on the
    last ``keep`` days."""
    own, base, names = [], [], None
    for t, tail in tails.items():
        x, _, names = instrument_candidates(t, adjusted_ohlc(tail), calendar, context)
        x = x[-keep:]
        own.append(x[:, [names.index(f) for f in features if f in names]])
        base.append(x[:, [names.index(b) for b in XS_BASE]])
    return {"names": [f for f in features if f in names], "own": np.stack(own), "base": np.stack(base)}


def _tail_of_chunk(cfg: DataConfig, cap: pd.Timestamp | None, rows: int, c: Chunk) -> dict:
    """(a task) A chunk's instruments, each cut to its last ``rows`` rows up to ``cap``, and
    every day they traded up to ``cap`` (the calendar's part from this chunk)."""
    kept, _, short = chunk_members(cfg, c)
    tails, days = {}, []
    for t, f in kept.items():
        f = f[f.index <= cap] if cap is not None else f
        if len(f):
            tails[t] = f.iloc[-rows:]
            days.append(f.index.to_numpy())
    return {"tails": tails, "short": short, "days": union_of_days(days)}
