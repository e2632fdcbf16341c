"""Build a dataset: sources -> features -> labels -> windows -> splits -> fits -> arrays.

``build_dataset`` is the one entry; ``protocol="clean"`` (the default) fits the scaler,
the feature selection and the oversampler on the training window only and splits
chronologically with a purge gap. ``protocol="seed"`` reproduces the reference's leaky
procedure on purpose, for the leakage audit; its metadata says so.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stocktrend.data import fitting, labels
from stocktrend.data.config import DataConfig
from stocktrend.data.errors import DataError
from stocktrend.data.features import adjusted_ohlc, align_to, build_features
from stocktrend.data.sources import read_all_sources
from stocktrend.data.splits import SplitPlan, assign_splits, plan_for
from stocktrend.data.store import analysis_table, atomic_write_text, build_metadata, fingerprint, write_dataset
from stocktrend.data.windows import SPLITS, cut_windows, full_windows

log = logging.getLogger(__name__)



@dataclasses.dataclass
class Prepared:
    """Features and labels on the target calendar, before any split or fit."""

    calendar: pd.DatetimeIndex
    features: pd.DataFrame  # (days, candidates), NaN during warm-up
    fwd_return: pd.Series  # close[t+h] / close[t] - 1, NaN for the last h days
    end_rows: np.ndarray  # rows t whose window t-L+1..t is complete and label known
    labelled_rows: pd.DatetimeIndex  # feature-complete labelled days (seq_len-independent)
    sources: dict[str, dict]
    vol: np.ndarray | None = None  # (days, 3) labels.VOL_COLUMNS when cfg.auxiliary == "volatility"


def prepare(cfg: DataConfig) -> Prepared:
    frames, facts = read_all_sources(cfg)
    feats = build_features(cfg, frames)
    calendar = feats.index
    price = adjusted_ohlc(frames[cfg.target])["close"].reindex(calendar)
    fwd = labels.forward_return(price, cfg.horizon)
    if cfg.label == "relative_index":  # the stock's h-day return over the index's, same days
        index = adjusted_ohlc(align_to(frames[cfg.index], calendar, cfg.ffill_limit))["close"]
        fwd = fwd - labels.forward_return(index, cfg.horizon)
    complete = feats.notna().all(axis=1).to_numpy()
    known = fwd.notna().to_numpy().copy()
    vol = None
    if cfg.auxiliary == "volatility":  # the stock's own volatility, whatever the label compares
        vol = labels.volatility_columns(price.to_numpy(), cfg.horizon)
        known &= np.isfinite(vol).all(axis=1)
    end_rows = np.flatnonzero(full_windows(complete, cfg.seq_len) & known)
    if cfg.split.end is not None:
        end_rows = end_rows[calendar[end_rows] <= pd.Timestamp(cfg.split.end)]
    return Prepared(calendar, feats, fwd, end_rows, calendar[complete & known], facts, vol)


def _labels_for(fwd: np.ndarray, fit_rows: np.ndarray, n_classes: int) -> tuple[np.ndarray, list[float]]:
    """Class of every row; multi-class bin edges come from ``fit_rows`` only."""
    if n_classes == 2:
        return (fwd > 0).astype(np.int64), []
    edges = labels.quantile_edges(fwd[fit_rows], n_classes)
    return np.searchsorted(edges, fwd, side="right").astype(np.int64), edges.tolist()


def _rows_of(end_rows: np.ndarray, seq_len: int, n_rows: int) -> np.ndarray:
    """Boolean mask of the rows covered by windows ending at ``end_rows``."""
    mask = np.zeros(n_rows, dtype=bool)
    for e in end_rows:
        mask[e - seq_len + 1 : e + 1] = True
    return mask


def _check_sizes(cfg: DataConfig, parts: dict[str, np.ndarray], y: np.ndarray, p: Prepared) -> None:
    target_file = cfg.source_path(cfg.target)
    for name, rows in parts.items():
        if len(rows) == 0 or (name == "train" and len(np.unique(y[rows])) < cfg.n_classes):
            raise DataError(
                f"{target_file}: too few rows for seq_len={cfg.seq_len}, horizon={cfg.horizon} and "
                f"purge gap {cfg.purge_rows}: the {name} split has {len(rows)} windows "
                f"({len(p.end_rows)} complete windows over {len(p.calendar)} days)"
            )


def _split_clean(cfg: DataConfig, p: Prepared, plan: SplitPlan) -> dict:
    parts = assign_splits(p.calendar, p.end_rows, plan, cfg.purge_rows)
    fwd = p.fwd_return.to_numpy()
    y, edges = _labels_for(np.nan_to_num(fwd), parts["train"], cfg.n_classes)
    _check_sizes(cfg, parts, y, p)
    fit_mask = _rows_of(parts["train"], cfg.seq_len, len(p.calendar))
    return {"parts": parts, "y": y, "edges": edges, "fit_mask": fit_mask, "select_rows": parts["train"]}


def _split_seed(cfg: DataConfig, p: Prepared) -> dict:
    """The reference's leaky procedure: fit on everything, oversample, shuffle, then split."""
    rows = p.end_rows
    fwd = np.nan_to_num(p.fwd_return.to_numpy())
    y, edges = _labels_for(fwd, rows, cfg.n_classes)
    fit_mask = _rows_of(rows, cfg.seq_len, len(p.calendar))  # all rows of all windows
    if cfg.balance:
        rows = rows[fitting.oversample(np.arange(len(rows)), y[rows], cfg.seed)]
    rows = rows[np.random.default_rng(cfg.seed).permutation(len(rows))]
    n_train, n_val = int(len(rows) * cfg.split.train), int(len(rows) * cfg.split.val)
    parts = {"train": rows[:n_train], "val": rows[n_train : n_train + n_val], "test": rows[n_train + n_val :]}
    _check_sizes(cfg, parts, y, p)
    return {"parts": parts, "y": y, "edges": edges, "fit_mask": fit_mask, "select_rows": p.end_rows}


def resolve_plan(cfg: DataConfig, p: Prepared) -> SplitPlan:
    return plan_for(cfg.split, p.labelled_rows, str(cfg.source_path(cfg.target)))


def build_dataset(
    cfg: DataConfig,
    out_dir: str | Path,
    *,
    plan: SplitPlan | None = None,
    analysis_dir: str | Path | None = None,
    progress: bool = False,
    use_ray: bool = False,
) -> dict:
    """Build the dataset of ``cfg`` into ``out_dir`` atomically and return its metadata
    (``use_ray``: a streamed panel build's passes run as Ray tasks)."""
    if cfg.panel is not None:
        from stocktrend.data.panel_build import build_panel_dataset
        from stocktrend.data.panel_stream import build_panel_streamed, streamed

        if streamed(cfg):
            return build_panel_streamed(cfg, out_dir, plan=plan, progress=progress, use_ray=use_ray)
        return build_panel_dataset(cfg, out_dir, plan=plan, progress=progress)
    steps = tqdm(total=5, desc=f"dataset {cfg.name}", disable=not progress, unit="step")
    steps.set_postfix_str("reading sources and building features")
    p = prepare(cfg)
    steps.update()

    steps.set_postfix_str("splitting")
    plan = plan or resolve_plan(cfg, p)
    split = _split_seed(cfg, p) if cfg.protocol == "seed" else _split_clean(cfg, p, plan)
    parts, y = split["parts"], split["y"]
    steps.update()

    steps.set_postfix_str("fitting scaler and selecting features")
    names = list(p.features.columns)
    values = p.features.to_numpy()
    scaler = fitting.fit_scaler(values[split["fit_mask"]])
    scaled = (values - scaler.mean_) / scaler.scale_
    sel_rows = split["select_rows"]
    scores = fitting.separation_scores(scaled[sel_rows], y[sel_rows], cfg.selection, cfg.seed)
    k = len(names) if cfg.n_features == "all" else cfg.n_features
    if k > len(names):
        raise DataError(f"n_features={k} but only {len(names)} candidate features exist")
    chosen = fitting.top_k(scores, k)
    steps.update()

    steps.set_postfix_str("windowing and balancing")
    counts_before = {s: np.bincount(y[parts[s]], minlength=cfg.n_classes).tolist() for s in SPLITS}
    if cfg.protocol == "clean" and cfg.balance:
        train = parts["train"]
        parts = {**parts, "train": train[fitting.oversample(np.arange(len(train)), y[train], cfg.seed)]}
    matrix = scaled[:, chosen].astype(np.float32)
    arrays = {}
    for s in SPLITS:
        rows = parts[s]
        arrays[f"{s}_X"] = cut_windows(matrix, rows, cfg.seq_len)
        arrays[f"{s}_y"] = np.eye(cfg.n_classes, dtype=np.float32)[y[rows]]
        arrays[f"{s}_dates"] = p.calendar[rows].to_numpy().astype("datetime64[D]")
        if p.vol is not None:
            arrays[f"{s}_vol"] = p.vol[rows].astype(np.float32)
    steps.update()

    steps.set_postfix_str("writing")
    fit_rows = np.flatnonzero(split["fit_mask"])
    context = {
        "cfg": cfg,
        "plan": plan,
        "prepared": p,
        "parts": parts,
        "counts_before": counts_before,
        "names": names,
        "scores": scores,
        "chosen": chosen,
        "scaler": scaler,
        "fit_rows": fit_rows,
        "edges": split["edges"],
        "y": y,
        "scaled": scaled,
        "auxiliary": None if p.vol is None else labels.volatility_record(cfg.horizon, p.vol[np.unique(parts["train"]), 0]),
    }
    metadata, table = build_metadata(context), analysis_table(context).to_csv(index=False)
    write_dataset(out_dir, arrays.items(), metadata, texts={f"{cfg.ticker}_analysis.csv": table})
    if analysis_dir is not None:
        atomic_write_text(Path(analysis_dir) / f"{cfg.ticker}_analysis.csv", table)
    steps.update()
    steps.close()
    log.info("dataset %s written to %s (fingerprint %s)", cfg.name, out_dir, metadata["fingerprint"][:12])
    return metadata


__all__ = ["build_dataset", "prepare", "resolve_plan", "fingerprint", "Prepared"]
