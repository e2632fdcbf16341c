"""The synthetic market's files: the layouts users bring (a wide close panel, a folder of
Yahoo-layout CSVs, a long CSV with a ticker column, the same long table as Parquet, and as a
Parquet dataset partitioned by ticker), the context
series, a point-in-time membership table (``membership.csv``, for ``panel.membership``), a
dataset config per layout and ``market.json`` (the spec, the calibration and the
realised strength), each written atomically. The market itself is drawn by ``stocktrend.data.synthetic``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrend.data.store import atomic_write_text
from stocktrend.data.synthetic import LAYOUTS, Market, MarketError, temporal_move_weights, temporal_weights


def _csv(frame: pd.DataFrame, path: Path, index_label: str | None = "date") -> None:
    atomic_write_text(path, frame.to_csv(index=index_label is not None, index_label=index_label, float_format="%.6g",
                                    lineterminator="\n"))


def _parquet(frame: pd.DataFrame, path: Path) -> None:
    """Written aside and renamed into place, like every generated file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _parquet_dataset(frame: pd.DataFrame, path: Path, by: str) -> None:
    """A Parquet dataset partitioned by ``by`` (``by=value`` folders), built aside and swapped in."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        frame.to_parquet(tmp, index=False, partition_cols=[by])
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ohlcv(market: Market, i: int, rng: np.random.Generator) -> pd.DataFrame:
    """Daily bars of instrument i where listed: the close as generated, an open near the
    previous close, a high and low around both, a volume that rises with the move."""
    lc = market.log_close[:, i]
    ok = np.isfinite(lc)
    close = np.exp(lc[ok])
    prev = np.concatenate([[close[0]], close[:-1]])
    open_ = prev * np.exp(0.002 * rng.standard_normal(len(close)))
    span = np.abs(0.01 * rng.standard_normal(len(close)))
    high = np.maximum(open_, close) * np.exp(span)
    low = np.minimum(open_, close) * np.exp(-span)
    move = np.abs(np.log(close / prev))
    volume = np.round(1e6 * np.exp(0.5 * rng.standard_normal(len(close))) * (1 + 20 * move))
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume},
                        index=market.dates[ok])


def membership(market: Market) -> pd.DataFrame:
    """A point-in-time membership table (``data.membership``) for the market: each instrument
    joins some days after it lists and stays until it delists (end blank while still listed), a
    tenth of them leave for a while and come back, and one in twenty is never a member."""
    rng = np.random.default_rng(market.spec.seed + 2)  # its own stream: the market's draws are unchanged
    rows, last_day = [], market.dates[-1]
    for i, t in enumerate(market.tickers):
        listed = np.flatnonzero(np.isfinite(market.log_close[:, i]))
        if len(listed) < 4 or rng.random() < 0.05:
            continue
        a = listed[0] + int(rng.integers(0, max(1, min(250, len(listed) // 4))))
        b = listed[-1]
        spells = [(a, b)]
        if rng.random() < 0.1 and b - a > 200:  # out for a while, then back
            gap = a + int(rng.integers(50, (b - a) // 2))
            spells = [(a, gap), (gap + int(rng.integers(20, 60)), b)]
        for start, end in spells:
            end_day = market.dates[min(end, len(market.dates) - 1)]
            rows.append({"ticker": t, "start": market.dates[start].strftime("%Y-%m-%d"),
                         "end": "" if end_day == last_day else end_day.strftime("%Y-%m-%d")})
    return pd.DataFrame(rows, columns=["ticker", "start", "end"])


def check_layouts(layouts: tuple[str, ...]) -> None:
    unknown = [x for x in layouts if x not in LAYOUTS]
    if unknown or not layouts:
        raise MarketError(f"layouts: unknown {unknown or 'none given'}; choose from {list(LAYOUTS)}")


def write_market(market: Market, out: str | Path, layouts: tuple[str, ...] = LAYOUTS) -> dict[str, Path]:
    """Write the market's files under ``out`` in ``layouts``, the context series, a dataset
    config per layout, and ``market.json`` (spec, calibration, realised strength). Each file
    is written to a temporary name and renamed: a stopped run leaves no half-written file."""
    check_layouts(layouts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    rng = np.random.default_rng(market.spec.seed + 1)
    closes = pd.DataFrame(np.exp(market.log_close), index=market.dates, columns=market.tickers)
    _csv(pd.DataFrame({"close": market.index_close}, index=market.dates), out / "index.csv")
    _csv(pd.DataFrame({"close": market.oil_close}, index=market.dates), out / "oil.csv")
    _csv(market.rates, out / "rates.csv")
    bars = {t: _ohlcv(market, i, rng) for i, t in enumerate(market.tickers)} if set(layouts) - {"close_panel"} else {}
    if "close_panel" in layouts:
        _csv(closes, out / "closes.csv")
        written["close_panel"] = out / "closes.csv"
    if "yahoo" in layouts:
        for t, frame in bars.items():
            yahoo = frame.rename(columns=str.capitalize)
            yahoo.insert(4, "Adj Close", yahoo["Close"])
            _csv(yahoo, out / "yahoo" / f"{t}.csv", index_label="Date")
        written["yahoo"] = out / "yahoo"
    if {"long", "parquet", "partitioned"} & set(layouts):
        long = pd.concat([f.assign(ticker=t) for t, f in bars.items()]).rename_axis("date").reset_index()
        long = long.sort_values(["date", "ticker"], kind="stable")[["date", "ticker", "open", "high", "low", "close",
                                                                      "volume"]]
        if "parquet" in layouts:  # typed: dates as dates, prices as floats
            _parquet(long.reset_index(drop=True), out / "long.parquet")
            written["parquet"] = out / "long.parquet"
        if "long" in layouts:
            _csv(long.assign(date=long["date"].dt.strftime("%Y-%m-%d")), out / "long.csv", index_label=None)
            written["long"] = out / "long.csv"
        if "partitioned" in layouts:  # a Parquet dataset: one ticker=<name> folder per instrument
            _parquet_dataset(long.reset_index(drop=True), out / "partitioned", "ticker")
            written["partitioned"] = out / "partitioned"
    _csv(membership(market), out / "membership.csv", index_label=None)
    for layout in written:
        atomic_write_text(out / f"{layout}.yaml", dataset_config(market, layout))
    meta = {"spec": dataclasses.asdict(market.spec), "tickers": len(market.tickers),
            "dates": [str(market.dates[0].date()), str(market.dates[-1].date())],
            "listed_days": {t: int(np.isfinite(market.log_close[:, i]).sum()) for i, t in enumerate(market.tickers)},
            "calibration": market.calibration, "realised": market.realised,
            "files": {k: str(v.relative_to(out)) for k, v in written.items()},
            "temporal_weights": {str(k): v for k, v in temporal_weights(market.spec.horizon).items()},
            "temporal_move_weights": {str(k): v for k, v in temporal_move_weights(market.spec.horizon).items()}}
    atomic_write_text(out / "market.json", json.dumps(meta, indent=2))
    return written


def dataset_config(market: Market, layout: str) -> str:
    """A dataset config (the shape of ``datasets/stocks20.yaml``) reading this market's files
    in ``layout``: the planted kind and strength in its name and first lines."""
    s = market.spec
    name = f"synthetic_{s.plant}_{layout}"
    single = s.target == "single"
    long_file = {"parquet": "long.parquet", "partitioned": "partitioned"}.get(layout, "long.csv")
    head = [f"# A synthetic market (stocktrend.data.synthetic): {len(market.tickers)} instruments x {s.days} days,",
            f"# plant {s.plant} at population IC {s.ic:g} (realised: {json.dumps(market.realised)}), seed {s.seed}.",
            f"name: {name}"]
    context = ["  spx:", "    path: index.csv", "    kind: close", "    columns: {date: date, close: close}",
               "  ust:", "    path: rates.csv", "    kind: rates", "    columns: {date: date}",
               "  wti:", "    path: oil.csv", "    kind: close", "    columns: {date: date, close: close}"]
    if single:
        t = market.tickers[0]
        if layout == "close_panel":
            src = ["  target:", "    path: closes.csv", "    kind: close", f"    columns: {{date: date, close: {t}}}"]
        elif layout == "yahoo":
            src = ["  target:", f"    path: yahoo/{t}.csv", "    kind: ohlcv",
                   "    columns: {date: Date, open: Open, high: High, low: Low, close: Close, adj_close: Adj Close, "
                   "volume: Volume}"]
        else:
            src = ["  target:", f"    path: {long_file}", "    kind: ohlcv",
                   "    columns: {date: date, open: open, high: high, low: low, close: close, volume: volume}",
                   f"    filter: {{ticker: {t}}}"]
        body = [f"ticker: {t}", "target: target", "label: direction", "sources:", *src, *context]
    else:
        if layout == "close_panel":
            panel = ["panel:", "  source: stocks"]
            src = ["  stocks:", "    path: closes.csv", "    kind: close_panel", "    columns: {date: date}"]
        elif layout == "yahoo":
            panel, src = ["panel:", "  folder: yahoo"], []
        else:
            panel = ["panel:", "  source: stocks", "  ticker_column: ticker"]
            src = ["  stocks:", f"    path: {long_file}", "    kind: ohlcv",
                   "    columns: {date: date, open: open, high: high, low: low, close: close, volume: volume}"]
        body = ["ticker: SYNTHETIC", *panel, "label: relative_median", "index: spx", "sources:", *src, *context]
    tail = [f"start: {market.dates[0].date()}", f"horizon: {s.horizon}", "seq_len: 30", "n_features: 50",
            "split: {train: 0.8, val: 0.1, test: 0.1, purge_rows: auto}", "balance: true", "selection: mean_diff",
            "ffill_limit: 5", f"seed: {s.seed}"]
    # The known answer (a null market's too) travels with the dataset into every report of a model.
    planted = {"kind": s.plant, "ic": s.ic, "target": s.target, "seed": s.seed,
               "realised": {k: v for k, v in market.realised.items() if k != "plant_scale"}}
    tail.append(f"planted: {json.dumps(planted)}")
    return "\n".join(head + body + tail) + "\n"
