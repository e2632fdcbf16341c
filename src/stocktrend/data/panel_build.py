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

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stocktrend.config_io import config_to_dict
from stocktrend.data import fitting
from stocktrend.data.config import DataConfig
from stocktrend.data.errors import DataError
from stocktrend.data.labels import volatility_columns, volatility_record
from stocktrend.data.panel import build_panel, forward_returns, panel_labels
from stocktrend.data.splits import SplitPlan, assign_splits, plan_for
from stocktrend.data.store import EWM_BURN_IN, FEATURE_LOOKBACK, code_fingerprint, fingerprint, swap_dir
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
    fwd = forward_returns(p.close, cfg.horizon)
    index_fwd = forward_returns(p.index_close, cfg.horizon) if p.index_close is not None else None
    y = panel_labels(cfg, fwd, index_fwd)
    complete, known = np.isfinite(p.features).all(axis=-1), np.isfinite(y)
    if cfg.auxiliary == "volatility":
        known &= np.isfinite(volatility_of(cfg, p)).all(axis=-1)
    return fwd, y, full_windows(complete, cfg.seq_len) & known, p.calendar[(complete & known).any(axis=0)]


def volatility_of(cfg: DataConfig, p) -> np.ndarray:
    """(tickers, days, 3) ``labels.VOL_COLUMNS`` of every instrument, from its own closes."""
    return volatility_columns(p.close, cfg.horizon)


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
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for t in range(len(p.tickers)):
        for s, rows in assign_splits(p.calendar, np.flatnonzero(ends[t]), plan, cfg.purge_rows).items():
            parts[s].append(np.stack([np.full(len(rows), t), rows], axis=1))
    index = {}
    for s in SPLITS:
        pairs = np.concatenate(parts[s]) if parts[s] else np.empty((0, 2), np.int64)
        index[s] = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))].astype(np.int32)  # by date, then instrument
        if len(index[s]) == 0 or (s == "train" and len(np.unique(y[index[s][:, 0], index[s][:, 1]])) < 2):
            raise DataError(f"panel {cfg.name}: the {s} split has {len(index[s])} windows (seq_len={cfg.seq_len}, "
                            f"horizon={cfg.horizon}, purge {cfg.purge_rows})")
    labels = {s: y[i[:, 0], i[:, 1]].astype(np.int64) for s, i in index.items()}
    steps.update()

    steps.set_postfix_str("fitting scaler and selecting features on the training window")
    fit_mask = np.zeros(ends.shape, bool)
    offsets = np.arange(-cfg.seq_len + 1, 1)
    tr = index["train"]
    fit_mask[np.repeat(tr[:, 0], cfg.seq_len), (tr[:, 1][:, None] + offsets).ravel()] = True
    scaler = fitting.fit_scaler(p.features[fit_mask])
    scaled = ((p.features - scaler.mean_) / scaler.scale_)
    last_train = scaled[tr[:, 0], tr[:, 1]]
    scores = fitting.separation_scores(last_train, labels["train"], cfg.selection, cfg.seed)
    k = len(p.names) if cfg.n_features == "all" else cfg.n_features
    if k > len(p.names):
        raise DataError(f"n_features={k} but only {len(p.names)} candidate features exist")
    chosen = fitting.top_k(scores, k)
    matrix = scaled[:, :, chosen].astype(np.float32)
    counts_before = {s: np.bincount(labels[s], minlength=2).tolist() for s in SPLITS}
    if cfg.balance:
        keep = fitting.oversample(np.arange(len(tr)), labels["train"], cfg.seed)
        index["train"], labels["train"] = tr[keep], labels["train"][keep]
    steps.update()

    steps.set_postfix_str("writing")
    arrays = {"features": matrix, "calendar": p.calendar.to_numpy().astype("datetime64[D]"),
              "forward_returns": fwd.astype(np.float32), "close": p.close}
    vol = volatility_of(cfg, p) if cfg.auxiliary == "volatility" else None
    for s in SPLITS:
        arrays[f"{s}_index"] = index[s]
        arrays[f"{s}_y"] = np.eye(2, dtype=np.float32)[labels[s]]
        arrays[f"{s}_dates"] = arrays["calendar"][index[s][:, 1]]
        if vol is not None:
            arrays[f"{s}_vol"] = vol[index[s][:, 0], index[s][:, 1]].astype(np.float32)
    # The first training window, cut as every consumer cuts it: the layout's self-check.
    assert cut_windows(matrix, index["train"][:1], cfg.seq_len).shape == (1, cfg.seq_len, k)
    meta = _metadata(cfg, p, plan, index, counts_before, labels, chosen, scores, scaler, fit_mask)
    if vol is not None:
        distinct = np.unique(tr, axis=0)
        meta["auxiliary"] = volatility_record(cfg.horizon, vol[distinct[:, 0], distinct[:, 1], 0])
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2))
        swap_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    steps.update()
    steps.close()
    log.info("panel dataset %s written to %s: %s windows, %.1f MB on disk (materialised windows would take %.0f MB)",
             cfg.name, out, {s: len(i) for s, i in index.items()}, meta["size"]["features_mb"],
             meta["size"]["materialised_windows_mb"])
    return meta


def _metadata(cfg, p, plan, index, counts_before, labels, chosen, scores, scaler, fit_mask) -> dict:
    cal = p.calendar
    fit_days = np.flatnonzero(fit_mask.any(axis=0))

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
        "tickers": p.tickers,
        "features": {"selected": [p.names[i] for i in chosen], "n_candidates": len(p.names),
                     "candidates": p.names, "scores": {p.names[i]: float(scores[i]) for i in range(len(p.names))},
                     "selection": cfg.selection},
        "scaler": {"fit_start": str(cal[fit_days.min()].date()), "fit_end": str(cal[fit_days.max()].date()),
                   "fit_rows": int(fit_mask.sum()), "mean": [float(scaler.mean_[i]) for i in chosen],
                   "std": [float(scaler.scale_[i]) for i in chosen]},
        "boundaries": {"val_start": str(plan.val_start), "test_start": str(plan.test_start),
                       "end": str(plan.end) if plan.end else None, "purge_rows": cfg.purge_rows},
        "splits": {s: facts(s) for s in SPLITS},
        "bars_needed": FEATURE_LOOKBACK + EWM_BURN_IN + cfg.seq_len,
        "sources": p.sources,
        "config": {k_: v for k_, v in config_to_dict(cfg).items() if k_ != "base_dir"},
        "code_fingerprint": code_fingerprint(),
        "fingerprint": fingerprint(cfg),
        "size": {"features_mb": p.features.shape[0] * p.features.shape[1] * k * 4 / 1e6,
                 "materialised_windows_mb": windows_bytes / 1e6},
    }
