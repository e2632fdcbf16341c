"""Champion and challenger on the comparison block: the same days, the same labels, paired.

Both versions are scored the way they serve: each ``Predictor`` featurises the raw source
rows with its own scaler and feature selection, so a challenger with another scaler or
other selected features is judged on its own inputs. Labels come from the label rule of
the model's dataset (``evaluation.outcomes.realised``), the function that scores live
outcomes. The selection metric decides; accuracy and AUROC are reported beside it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.data.config import DataConfig
from stocktrend.data.store import read_metadata
from stocktrend.evaluation.bootstrap import Interval
from stocktrend.evaluation.core import resampled_ci
from stocktrend.evaluation.outcomes import outcome_metrics
from stocktrend.inference.predictor import Predictor
from stocktrend.retraining.plan import RetrainError

# The training selection metric, as a metric on the block: (name, True when higher is better).
ON_BLOCK = {"val_ce": ("cross_entropy", False), "val_auroc": ("auroc", True)}


def raw_bars(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """Every source file's rows as written (strings): what a client would post as bars."""
    return {name: pd.read_csv(cfg.source_path(name), dtype=str, keep_default_na=False) for name in cfg.sources}


def block_keys(dataset_dir: Path) -> pd.DataFrame:
    """(date, ticker) of each window of a dataset's test split, which a retrain makes the block."""
    meta = read_metadata(dataset_dir)
    dates = np.load(Path(dataset_dir) / "test_dates.npy").astype("datetime64[D]").astype(str)
    if meta.get("layout") == "panel":
        index = np.load(Path(dataset_dir) / "test_index.npy")
        tickers = np.asarray([str(t).upper() for t in meta["tickers"]])[index[:, 0]]
    else:
        tickers = np.full(len(dates), str(meta["ticker"]).upper())
    return pd.DataFrame({"date": dates, "ticker": tickers})


def block_probabilities(predictor: Predictor, data_root: Path, keys: pd.DataFrame) -> np.ndarray:
    """p(up) of the windows ending on ``keys`` (date, ticker), featurised by the predictor
    itself from its source files under ``data_root`` (features are causal: computing them
    over the whole history equals computing them day by day, as serving does)."""
    cfg = dataclasses.replace(predictor.data_cfg, base_dir=str(Path(data_root).resolve()))
    if predictor.is_panel:
        from stocktrend.data.panel import build_panel

        tickers = [str(t).upper() for t in predictor.preprocessing["tickers"]]
        panel_cfg = dataclasses.replace(cfg, start=None, panel=dataclasses.replace(
            cfg.panel, include=list(predictor.preprocessing["tickers"]), exclude=[], min_days=50))
        panel = build_panel(panel_cfg)
        columns = [panel.names.index(f) for f in predictor.features]
        have = [t.upper() for t in panel.tickers]
        if set(tickers) - set(have):
            raise RetrainError(f"{predictor.name}/{predictor.version}: the sources no longer hold instrument(s) "
                               f"{sorted(set(tickers) - set(have))} it was trained on")
        order = [have.index(t) for t in tickers]
        values = (panel.features[order][:, :, columns] - predictor.mean) / predictor.std
        rows = panel.calendar.get_indexer(pd.DatetimeIndex(keys["date"]))
        ends = np.stack([np.asarray([tickers.index(t) for t in keys["ticker"]]), rows], axis=1)
        missing = rows < 0
    else:
        values, index = predictor.scaled_features(raw_bars(cfg))
        ends = index.get_indexer(pd.DatetimeIndex(keys["date"]))
        missing = ends < 0
    where = f"{predictor.name}/{predictor.version}"
    if missing.any():
        raise RetrainError(f"{where}: no feature row for block day {keys['date'].iloc[int(np.flatnonzero(missing)[0])]}")
    windows = predictor.windows_at(values, ends)
    bad = ~np.isfinite(windows).all(axis=(1, 2))
    if bad.any():
        k = keys.iloc[int(np.flatnonzero(bad)[0])]
        raise RetrainError(f"{where}: incomplete features for {k['ticker']}'s window ending {k['date']}")
    return np.concatenate([predictor.predict_windows(windows[i:i + 512]).probs[:, 1]
                           for i in range(0, len(windows), 512)])


block_metrics = outcome_metrics  # the same figures live outcomes are judged by


def _iv(iv: Interval) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in iv.to_dict().items()}


@dataclasses.dataclass
class Comparison:
    metric: str  # the training selection metric (val_ce, val_auroc)
    on_block: str  # its name on the block (cross_entropy, auroc)
    higher_is_better: bool
    first: str
    last: str
    dates: int
    windows: int
    champion: dict[str, Any]  # {metric: interval dict}
    challenger: dict[str, Any]
    improvement: dict[str, float | None]  # challenger over champion, oriented so that > 0 is better
    differences: dict[str, Any]  # challenger - champion, every metric, paired

    def decide(self, require: str, margin: float, min_gain: float = 0.0) -> tuple[bool, str]:
        """better: the improvement's interval lies above ``min_gain`` (a gain too small to
        matter is no reason to swap models); not-worse: above ``-margin``."""
        imp, name = self.improvement, self.on_block
        low = imp["low"] if imp["low"] is not None else -math.inf
        high = imp["high"] if imp["high"] is not None else math.inf
        where = f"{self.windows} windows on {self.dates} dates" if self.windows > self.dates else f"{self.dates} days"
        text = (f"{name} of the challenger {self.challenger[name]['point']:.4f} vs the champion's "
                f"{self.champion[name]['point']:.4f} on the comparison block ({where}, {self.first} to {self.last}); "
                f"improvement {imp['point']:+.4f} [{low:+.4f}, {high:+.4f}] (95%, paired date-block bootstrap)")
        if require == "better":
            ok = low > min_gain
            return ok, text + (f": better, the whole interval above {min_gain:g}" if ok else
                               f": not better, the interval reaches {min_gain:g} or below")
        ok = low > -margin
        return ok, text + (f": not worse, the interval stays above -{margin:g}" if ok else
                           f": possibly worse, the interval reaches below -{margin:g}")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "on_block": self.on_block, "higher_is_better": self.higher_is_better,
                "block": {"start": self.first, "end": self.last, "days": self.dates, "windows": self.windows},
                "scores": {"champion": self.champion, "challenger": self.challenger},
                "improvement": self.improvement, "challenger_minus_champion": self.differences}


def compare(y: np.ndarray, p_champion: np.ndarray, p_challenger: np.ndarray, dates: np.ndarray, metric: str,
            horizon: int, n_boot: int = 1000, seed: int = 0) -> Comparison:
    """Both versions and their difference from the same resamples of whole dates (blocks of
    consecutive dates: neighbouring windows share label days; a panel's instruments share a date)."""
    if metric not in ON_BLOCK:
        raise RetrainError(f"selection metric {metric!r} has no block counterpart; known: {sorted(ON_BLOCK)}")
    dates = np.asarray(dates).astype(str)
    if not (len(y) == len(p_champion) == len(p_challenger) == len(dates)):
        raise ValueError("labels, both probability arrays and dates must have equal length")
    name, higher = ON_BLOCK[metric]

    def both(y, a, b):
        ma, mb = block_metrics(y, a), block_metrics(y, b)
        return {**{f"champion.{k}": v for k, v in ma.items()}, **{f"challenger.{k}": v for k, v in mb.items()},
                **{f"difference.{k}": mb[k] - ma[k] for k in ma}}

    cis = resampled_ci(both, (y, p_champion, p_challenger), n_boot, seed, dates=dates, horizon=horizon)
    part = {side: {k.split(".", 1)[1]: _iv(v) for k, v in cis.items() if k.startswith(side + ".")}
            for side in ("champion", "challenger", "difference")}
    d = cis[f"difference.{name}"]
    imp = d if higher else Interval(-d.point, -d.high, -d.low, d.n_valid, d.n_nan)
    days = np.unique(dates)  # sorted: ISO dates sort as text
    return Comparison(metric, name, higher, str(days[0]), str(days[-1]), int(len(days)), int(len(dates)),
                      part["champion"], part["challenger"], _iv(imp), part["difference"])
