"""Build a panel dataset: split by date across all instruments, fit on the training window of
all of them, and store it compactly.

Splits: one plan of boundary dates on the shared calendar; every instrument's window ends
are assigned and purged with it, so no date falls in two splits for any instrument (and the
day sets [window start, label end] of different splits are disjoint across instruments
too). The scaler is fitted on every day covered by a training window of any instrument, the
feature selection on the training window ends, oversampling on the training windows.

Storage (``layout: panel``): windows overlap, so they are not materialised. ``features.npy``
holds one (day x feature) matrix per instrument, scaled and selected (float32, NaN where the
instrument has no complete row); ``{split}_index.npy`` the (instrument, end row) of each
window; ``{split}_y.npy`` / ``{split}_dates.npy`` as for a single stock; ``calendar.npy`` the
days; ``close.npy`` the adjusted closes (the reversal and momentum baselines) and
``forward_returns.npy`` the realised h-day return of every (instrument, day), which only
evaluation reads. Windows are cut when a batch is drawn (``data.windows``), by the same
function that cuts them everywhere else.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stocktrend.config_io import config_to_dict
from stocktrend.data import fitting
from stocktrend.data.config import DataConfig
from stocktrend.data.errors import DataError
from stocktrend.data.labels import volatility_columns, volatility_record
from stocktrend.data.panel import build_panel, forward_returns, members_only, panel_labels
from stocktrend.data.splits import SplitPlan, assign_splits, plan_for
from stocktrend.data.store import EWM_BURN_IN, FEATURE_LOOKBACK, code_fingerprint, fingerprint, write_dataset
from stocktrend.data.windows import SPLITS, cut_windows, full_windows

log = logging.getLogger(__name__)
LABEL_RULES = {
    "direction": "1 iff close[t+h] > close[t] (adjusted), per instrument",
    "relative_median": "1 iff the instrument's h-day return beats the median h-day return of the panel's instruments "
                       "that day (at least 3 known)",
    "relative_index": "1 iff the instrument's h-day return beats the index's h-day return",
}


def labels_and_ends(cfg: DataConfig, p) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """(realised h-day returns, labels, window ends) on (tickers, days), and the labelled
    days: an end has a complete window and a known label; the labelled days (complete
    features and a known label for some instrument, whatever the window length) are what
    split fractions and walk-forward folds cut, so datasets differing only in seq_len are
    validated and tested on the same dates."""
    return labels_and_ends_of(cfg, p.calendar, p.close, p.index_close, np.isfinite(p.features).all(axis=-1), p.member)


def labels_and_ends_of(cfg: DataConfig, calendar: pd.DatetimeIndex, close: np.ndarray, index_close: np.ndarray | None,
                       complete: np.ndarray, member: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """``labels_and_ends`` from the closes and the (tickers, days) mask of complete features;
    ``member``: the membership table's days, the only days with a label (and the only returns
    a day's median compares with)."""
    fwd = forward_returns(close, cfg.horizon)
    index_fwd = forward_returns(index_close, cfg.horizon) if index_close is not None else None
    y = panel_labels(cfg, members_only(fwd, member), index_fwd)
    known = np.isfinite(y)
    if cfg.auxiliary == "volatility":
        known &= np.isfinite(volatility_columns(close, cfg.horizon)).all(axis=-1)
    return fwd, y, full_windows(complete, cfg.seq_len) & known, calendar[(complete & known).any(axis=0)]


def volatility_of(cfg: DataConfig, p) -> np.ndarray:
    """(tickers, days, 3) ``labels.VOL_COLUMNS`` of every instrument, from its own closes."""
    return volatility_columns(p.close, cfg.horizon)


def split_index(cfg: DataConfig, calendar: pd.DatetimeIndex, ends: np.ndarray, y: np.ndarray, plan: SplitPlan
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """{split: (instrument, end row) pairs, by date then instrument} and their labels."""
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for t in range(len(ends)):
        for s, rows in assign_splits(calendar, np.flatnonzero(ends[t]), plan, cfg.purge_rows).items():
            parts[s].append(np.stack([np.full(len(rows), t, np.int32), rows.astype(np.int32)], axis=1))
    index = {}
    for s in SPLITS:
        pairs = np.concatenate(parts[s]) if parts[s] else np.empty((0, 2), np.int32)
        index[s] = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))].astype(np.int32)  # by date, then instrument
        if len(index[s]) == 0 or (s == "train" and len(np.unique(y[index[s][:, 0], index[s][:, 1]])) < 2):
            raise DataError(f"panel {cfg.name}: the {s} split has {len(index[s])} windows (seq_len={cfg.seq_len}, "
                            f"horizon={cfg.horizon}, purge {cfg.purge_rows})")
    return index, {s: y[i[:, 0], i[:, 1]].astype(np.int8) for s, i in index.items()}  # 0/1: a byte a window


def train_rows_by_instrument(train: np.ndarray, labels: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(end rows, labels)] of each instrument's training windows, in date order."""
    order = np.argsort(train[:, 0], kind="stable")
    bounds = np.searchsorted(train[order, 0], np.arange(n + 1))
    return [(train[order[a:b], 1], labels[order[a:b]]) for a, b in zip(bounds[:-1], bounds[1:])]


def choose_features(cfg: DataConfig, names: list[str], stats: list[fitting.TrainStats], mi_rows: np.ndarray | None,
                    mi_labels: np.ndarray | None) -> tuple[fitting.Scaler, np.ndarray, np.ndarray, tuple[int, int]]:
    """(scaler, separation scores, chosen columns, covered row span), fitted on the training
    windows only: the scaler on every day they cover, the scores on their last days
    (``mi_rows``: raw last-day rows of ``fitting.mi_sample``'s windows, for mutual_info)."""
    scaler, sums, counts, span = fitting.combine(stats)
    if cfg.selection == "mean_diff":
        scores = fitting.mean_diff_scores(scaler, sums, counts)
    else:
        scores = fitting.separation_scores(scaler.transform(mi_rows), mi_labels, cfg.selection, cfg.seed)
    k = len(names) if cfg.n_features == "all" else cfg.n_features
    if k > len(names):
        raise DataError(f"n_features={k} but only {len(names)} candidate features exist")
    return scaler, scores, fitting.top_k(scores, k), span


def scaled_matrix(x: np.ndarray, scaler: fitting.Scaler, chosen: np.ndarray) -> np.ndarray:
    """The stored features: the chosen candidates, z-scored, as float32."""
    return ((x[..., chosen] - scaler.mean_[chosen]) / scaler.scale_[chosen]).astype(np.float32)


def build_panel_dataset(cfg: DataConfig, out_dir: str | Path, *, plan: SplitPlan | None = None,
                        progress: bool = False, panel=None) -> dict:
    """``panel``: an already built ``Panel`` of ``cfg`` (walk-forward folds share one)."""
    steps = tqdm(total=4, desc=f"panel {cfg.name}", disable=not progress, unit="step")
    steps.set_postfix_str("reading sources and building features")
    p = panel if panel is not None else build_panel(cfg)
    steps.update()

    steps.set_postfix_str("labels and splits")
    fwd, y, ends, labelled = labels_and_ends(cfg, p)
    plan = plan or plan_for(cfg.split, labelled, f"panel {cfg.name}")
    index, labels = split_index(cfg, p.calendar, ends, y, plan)
    steps.update()

    steps.set_postfix_str("fitting scaler and selecting features on the training window")
    tr = index["train"]
    stats = [fitting.train_stats(p.features[t], e, lab, cfg.seq_len)
             for t, (e, lab) in enumerate(train_rows_by_instrument(tr, labels["train"], len(p.tickers)))]
    mi = fitting.mi_sample(len(tr), cfg.seed) if cfg.selection == "mutual_info" else None
    mi_rows = p.features[tr[mi, 0], tr[mi, 1]] if mi is not None else None
    scaler, scores, chosen, span = choose_features(cfg, p.names, stats, mi_rows,
                                                   labels["train"][mi] if mi is not None else None)
    matrix = scaled_matrix(p.features, scaler, chosen)
    counts_before = {s: np.bincount(labels[s], minlength=2).tolist() for s in SPLITS}
    if cfg.balance:
        keep = fitting.oversample(np.arange(len(tr)), labels["train"], cfg.seed)
        index["train"], labels["train"] = tr[keep], labels["train"][keep]
    steps.update()

    steps.set_postfix_str("writing")
    vol = volatility_of(cfg, p) if cfg.auxiliary == "volatility" else None
    arrays = {"features": matrix, "forward_returns": fwd.astype(np.float32), "close": p.close}
    # The first training window, cut as every consumer cuts it: the layout's self-check.
    assert cut_windows(matrix, index["train"][:1], cfg.seq_len).shape == (1, cfg.seq_len, len(chosen))
    meta = panel_metadata(cfg, Universe(p.calendar, p.tickers, p.names, p.sources, p.left_out), plan, index, counts_before,
                          labels, chosen, scores, scaler, span)
    if vol is not None:
        meta["auxiliary"] = auxiliary_record(cfg, vol, tr)
    write_panel(out_dir, itertools.chain(arrays.items(), split_arrays(p.calendar, index, labels, vol)), meta)
    steps.update()
    steps.close()
    return meta


def split_arrays(calendar: pd.DatetimeIndex, index: dict, labels: dict, vol: np.ndarray | None
                 ) -> Iterator[tuple[str, np.ndarray]]:
    """Every stored array but the features and the per-day returns and closes (``vol``: the
    volatility columns on (tickers, days), or None), one at a time, so a writer need not hold
    them all (a universe's training split has millions of windows)."""
    days = calendar.to_numpy().astype("datetime64[D]")
    yield "calendar", days
    for s in SPLITS:
        yield f"{s}_index", index[s]
        yield f"{s}_y", np.eye(2, dtype=np.float32)[labels[s]]
        yield f"{s}_dates", days[index[s][:, 1]]
        if vol is not None:
            yield f"{s}_vol", vol[index[s][:, 0], index[s][:, 1]].astype(np.float32)


def auxiliary_record(cfg: DataConfig, vol: np.ndarray, train_before_balance: np.ndarray) -> dict:
    """The volatility target's standardisation, from the distinct training windows only."""
    distinct = np.unique(train_before_balance, axis=0)
    return volatility_record(cfg.horizon, vol[distinct[:, 0], distinct[:, 1], 0])


def write_panel(out_dir: str | Path, arrays: Iterable[tuple[str, np.ndarray]], meta: dict,
                fill: Callable[[Path], None] | None = None) -> None:
    """The panel dataset through the one writer (``store.write_dataset``), and a line saying
    what it holds."""
    write_dataset(out_dir, arrays, meta, fill=fill)
    log.info("panel dataset %s written to %s: %s windows, %.1f MB on disk (materialised windows would take %.0f MB)",
             meta["name"], out_dir, {s: v["n"] for s, v in meta["splits"].items()}, meta["size"]["features_mb"],
             meta["size"]["materialised_windows_mb"])


@dataclasses.dataclass
class Universe:
    """What the metadata says of the instruments, whichever build made them."""

    calendar: pd.DatetimeIndex
    tickers: list[str]
    names: list[str]
    sources: dict[str, dict]
    left_out: dict[str, int]


def panel_metadata(cfg, u: Universe, plan, index, counts_before, labels, chosen, scores, scaler, span) -> dict:
    cal = u.calendar

    def facts(s: str) -> dict:
        rows = index[s][:, 1]
        return {"n": int(len(rows)), "start": str(cal[rows.min()].date()), "end": str(cal[rows.max()].date()),
                "window_start": str(cal[max(0, rows.min() - cfg.seq_len + 1)].date()),
                "label_end": str(cal[min(len(cal) - 1, rows.max() + cfg.horizon)].date()),
                "n_unique_windows": int(len(np.unique(index[s], axis=0))),
                "instruments": int(len(np.unique(index[s][:, 0]))),
                "class_counts_before_balancing": counts_before[s],
                "class_counts": np.bincount(labels[s], minlength=2).tolist()}

    k = len(chosen)
    windows_bytes = sum(len(i) for i in index.values()) * cfg.seq_len * k * 4
    return {
        "name": cfg.name, "ticker": cfg.ticker, "layout": "panel", "protocol": "clean", "leaky": False,
        "protocol_note": "Chronological split by date across all instruments with a purge gap; scaler, selection "
                         "and oversampling fitted on the training window of all instruments.",
        "seq_len": cfg.seq_len, "horizon": cfg.horizon, "n_classes": 2, "label": cfg.label,
        "label_rule": LABEL_RULES[cfg.label], "class_edges": [],
        "tickers": u.tickers,
        # Instruments the files hold but whose history is shorter than min_days: not a failure, listed.
        "left_out": {"min_days": cfg.panel.min_days, "rows": dict(sorted(u.left_out.items()))},
        "features": {"selected": [u.names[i] for i in chosen], "n_candidates": len(u.names),
                     "candidates": u.names, "scores": {u.names[i]: float(scores[i]) for i in range(len(u.names))},
                     "selection": cfg.selection},
        "scaler": {"fit_start": str(cal[span[0]].date()), "fit_end": str(cal[span[1]].date()),
                   "fit_rows": int(scaler.n_rows), "mean": [float(scaler.mean_[i]) for i in chosen],
                   "std": [float(scaler.scale_[i]) for i in chosen]},
        "boundaries": {"val_start": str(plan.val_start), "test_start": str(plan.test_start),
                       "end": str(plan.end) if plan.end else None, "purge_rows": cfg.purge_rows},
        "splits": {s: facts(s) for s in SPLITS},
        "bars_needed": FEATURE_LOOKBACK + EWM_BURN_IN + cfg.seq_len,
        "sources": dict(sorted(u.sources.items())),
        "config": {k_: v for k_, v in config_to_dict(cfg).items() if k_ != "base_dir"},
        "code_fingerprint": code_fingerprint(),
        "fingerprint": fingerprint(cfg),
        "size": {"features_mb": len(u.tickers) * len(cal) * k * 4 / 1e6,
                 "materialised_windows_mb": windows_bytes / 1e6},
    }
