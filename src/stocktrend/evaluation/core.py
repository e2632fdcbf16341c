"""The evaluation core: from (scores, outcomes, dates) to intervals, to markdown and JSON.

Every report -- a single stock's, a panel's, the family comparison, the volatility head's,
the realised outcomes of a served model, a retrain's figures after its selection -- goes
through these few functions, so an interval is computed one way and printed one way:

- ``resampled_ci``: percentile intervals of any metrics, resampling whole dates (or rows) in
  circular blocks, every metric of one call on the same resamples (so differences computed
  inside ``metric_fn`` are paired);
- ``date_mean``: the mean of a per-date series (a rank IC) with the calibrated interval of
  ``bootstrap.mean_interval``; ``ic_table``: that for several scorers, each beside a reference;
- ``ci_text``, ``md_table``: the one way an interval and a table are written;
- ``write_report``: report.json, report.md and predictions.csv, each written atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.data.store import atomic_write_text
from stocktrend.evaluation.bootstrap import (
    Interval,
    block_indices,
    data_block_length,
    default_block_length,
    interval,
    mean_interval,
)

ALPHA = 0.05


def resampled_ci(metric_fn: Callable[..., Mapping[str, float]], arrays: tuple[np.ndarray, ...], n_boot: int,
                 seed: int, *, dates: np.ndarray | None = None, block: int | None = None, horizon: int | None = None,
                 alpha: float = ALPHA) -> dict[str, Interval]:
    """(1-alpha) percentile interval of each metric of ``metric_fn(*arrays)`` (a dict of floats).

    Resamples whole dates (all rows of a date together: a date's instruments share its market)
    or, without ``dates``, single rows in their order, in circular blocks of ``block`` units
    (default ``default_block_length(units, horizon)``). Resamples on which a metric is NaN
    (an AUROC of one class) are dropped and counted in the interval."""
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays must have equal length, got {[len(a) for a in arrays]}")
    groups = None
    units = n
    if dates is not None:
        _, inverse = np.unique(np.asarray(dates), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(inverse.max(initial=-1) + 2))
        groups = [order[bounds[d]:bounds[d + 1]] for d in range(len(bounds) - 1)]
        units = len(groups)
    if units < 1:
        raise ValueError("cannot bootstrap an empty sample")
    idx = block_indices(units, n_boot, min(block or default_block_length(units, horizon), units), seed)
    points = metric_fn(*arrays)
    reps = {k: np.empty(n_boot) for k in points}
    for b, sample in enumerate(idx):
        rows = sample if groups is None else np.concatenate([groups[d] for d in sample])
        for k, v in metric_fn(*(a[rows] for a in arrays)).items():
            reps[k][b] = v
    return {k: interval(points[k], reps[k], alpha) for k in points}


def date_mean(values: np.ndarray | pd.Series, horizon: int) -> dict[str, Any]:
    """The mean of a per-date series with its calibrated 95% interval (``bootstrap.mean_interval``),
    the block from the series itself, at least 2h (neighbouring dates' h-day labels share days)."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if len(x) < 4:
        return Interval(float(np.mean(x)) if len(x) else math.nan, math.nan, math.nan, 0, len(x)).to_dict()
    return mean_interval(x, data_block_length(x, floor=default_block_length(len(x), horizon))).to_dict()


def paired_mean(a: pd.Series, b: pd.Series, horizon: int) -> dict[str, Any]:
    """``date_mean`` of a - b over the dates both series have."""
    both = a.index.intersection(b.index)
    return date_mean(a[both] - b[both], horizon)


def ic_table(ics: dict[str, pd.Series], horizon: int, reference: str = "model") -> dict[str, dict[str, Any]]:
    """Per scorer: its mean rank IC with interval, its dates and share of positive dates, and
    (but for the reference) the reference minus it, paired on common dates."""
    out = {}
    for name, ic in ics.items():
        out[name] = {"mean": date_mean(ic, horizon), "dates": int(len(ic)),
                     "share_positive": float((ic > 0).mean()) if len(ic) else None}
        if name != reference:
            out[name][f"{reference}_minus_this"] = paired_mean(ics[reference], ic, horizon)
    return out


# -- text ---------------------------------------------------------------------------
def fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def ci_text(d: Mapping[str, Any], spec: str = ".3f") -> str:
    """``point [low, high]`` of an interval dict."""
    return f"{fmt(d['point'], spec)} [{fmt(d['low'], spec)}, {fmt(d['high'], spec)}]"


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def clean(obj: Any) -> Any:
    """JSON has no NaN: undefined numbers become null; numpy scalars become Python's."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(out: Path, report: dict[str, Any], markdown: str, predictions: pd.DataFrame | None = None) -> dict:
    """report.json (NaN as null), report.md and predictions.csv in ``out``, each renamed into
    place whole; records the files in ``report["files"]`` and returns the cleaned report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "report.json", "markdown": out / "report.md"}
    if predictions is not None:
        files["predictions"] = out / "predictions.csv"
        atomic_write_text(files["predictions"], predictions.to_csv(index=False, float_format="%.10g"))
    report["files"] = {k: str(v) for k, v in files.items()}
    report = clean(report)
    atomic_write_text(files["json"], json.dumps(report, indent=2))
    atomic_write_text(files["markdown"], markdown)
    return report
