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
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.data.config import DataConfig
from stocktrend.evaluation.bootstrap import Interval, block_bootstrap_ci, paired_block_bootstrap_ci
from stocktrend.evaluation.metrics import auroc
from stocktrend.inference.predictor import Predictor
from stocktrend.retraining.plan import RetrainError

# The training selection metric, as a metric on the block: (name, True when higher is better).
ON_BLOCK = {"val_ce": ("cross_entropy", False), "val_auroc": ("auroc", True)}
REQUIRE = ("better", "not-worse")


def raw_bars(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """Every source file's rows as written (strings): what a client would post as bars."""
    return {name: pd.read_csv(cfg.source_path(name), dtype=str, keep_default_na=False) for name in cfg.sources}


def block_probabilities(predictor: Predictor, bars: dict[str, pd.DataFrame], days: list[str]) -> np.ndarray:
    """p(up) of the windows ending on ``days``, featurised by the predictor itself (features
    are causal: computing them over the whole history equals computing them day by day)."""
    values, index = predictor.scaled_features(bars)
    ends = index.get_indexer(pd.DatetimeIndex(days))
    if (ends < 0).any():
        raise RetrainError(f"{predictor.name}/{predictor.version}: no feature row for block day "
                           f"{days[int(np.flatnonzero(ends < 0)[0])]}")
    windows = predictor.windows_at(values, ends)
    bad = ~np.isfinite(windows).all(axis=(1, 2))
    if bad.any():
        raise RetrainError(f"{predictor.name}/{predictor.version}: incomplete features for the window ending "
                           f"{days[int(np.flatnonzero(bad)[0])]}")
    return np.concatenate([predictor.predict_windows(windows[i:i + 512]).probs[:, 1]
                           for i in range(0, len(windows), 512)])


def block_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return {"cross_entropy": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
            "accuracy": float(((p > 0.5) == (y == 1)).mean()), "auroc": auroc(y, p)}


def _iv(iv: Interval) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in iv.to_dict().items()}


@dataclasses.dataclass
class Comparison:
    metric: str  # the training selection metric (val_ce, val_auroc)
    on_block: str  # its name on the block (cross_entropy, auroc)
    higher_is_better: bool
    days: list[str]
    champion: dict[str, Any]  # {metric: interval dict}
    challenger: dict[str, Any]
    improvement: dict[str, float | None]  # challenger over champion, oriented so that > 0 is better
    differences: dict[str, Any]  # challenger - champion, every metric, paired

    def decide(self, require: str, margin: float) -> tuple[bool, str]:
        imp, name = self.improvement, self.on_block
        low = imp["low"] if imp["low"] is not None else -math.inf
        text = (f"{name} of the challenger {self.challenger[name]['point']:.4f} vs the champion's "
                f"{self.champion[name]['point']:.4f} on {len(self.days)} block days ({self.days[0]} to "
                f"{self.days[-1]}); improvement {imp['point']:+.4f} [{low:+.4f}, {imp['high']:+.4f}] (95%, paired "
                "block bootstrap)")
        if require == "better":
            ok = low > 0
            return ok, text + (": better, the whole interval above 0" if ok else ": not better, the interval "
                               "reaches 0 or below")
        ok = low > -margin
        return ok, text + (f": not worse, the interval stays above -{margin:g}" if ok else
                           f": possibly worse, the interval reaches below -{margin:g}")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "on_block": self.on_block, "higher_is_better": self.higher_is_better,
                "block": {"start": self.days[0], "end": self.days[-1], "days": len(self.days)},
                "scores": {"champion": self.champion, "challenger": self.challenger}, "improvement": self.improvement,
                "challenger_minus_champion": self.differences}


def compare(y: np.ndarray, p_champion: np.ndarray, p_challenger: np.ndarray, days: list[str], metric: str,
            horizon: int, n_boot: int = 1000, seed: int = 0) -> Comparison:
    if metric not in ON_BLOCK:
        raise RetrainError(f"selection metric {metric!r} has no block counterpart; known: {sorted(ON_BLOCK)}")
    if not (len(y) == len(p_champion) == len(p_challenger) == len(days)):
        raise ValueError("labels, both probability arrays and days must have equal length")
    name, higher = ON_BLOCK[metric]
    kw = {"n_boot": n_boot, "seed": seed, "horizon": horizon}
    champ = {k: _iv(v) for k, v in block_bootstrap_ci(block_metrics, y, p_champion, **kw).items()}
    chal = {k: _iv(v) for k, v in block_bootstrap_ci(block_metrics, y, p_challenger, **kw).items()}
    diff = paired_block_bootstrap_ci(block_metrics, (y, p_challenger), (y, p_champion), **kw)
    d = diff[name]
    imp = d if higher else Interval(-d.point, -d.high, -d.low, d.n_valid, d.n_nan)
    return Comparison(metric, name, higher, list(days), champ, chal, _iv(imp), {k: _iv(v) for k, v in diff.items()})
