"""Realised outcomes: the logged predictions of a served model, scored once their labels exist.

A prediction for the window ending on day t is judged h trading days later, by the label rule
of that version's own training data (``data.labels``, ``data.panel``), computed from its
source files or from bars a client posts. Only days after the version's validation split are
scored: a day it trained or was selected on is in sample for it (counted, not scored). Per
version: accuracy and AUROC with block-bootstrap intervals over the dates and, for panel
models, the mean rank IC across the instruments of each date; per pair of versions with the
same label rule that scored the same (date, instrument) — champion and challenger in shadow
mode, or both sides of a split on overlapping days — the paired difference (both resampled
on the same dates), because an A/B comparison that does not score realised outcomes on the
same days is not one. Only predictions with a known day are scored (``/v1/predict/bars``
answers; a window posted to ``/v1/predict`` carries no date).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.data.config import DataConfig
from stocktrend.data.features import adjusted_ohlc, align_to
from stocktrend.data.labels import forward_return
from stocktrend.data.sources import read_all_sources
from stocktrend.evaluation.core import clean, date_mean, resampled_ci
from stocktrend.evaluation.metrics import auroc
from stocktrend.evaluation.panel_metrics import rank_ic_by_date

log = logging.getLogger(__name__)


def realised(cfg: DataConfig, frames: dict[str, pd.DataFrame] | None = None,
             tickers: list[str] | None = None) -> pd.DataFrame:
    """Long table (date, ticker, fwd, label) of every day whose label is known, by the
    training data's own rule; ``frames``: the sources already read (else the files);
    ``tickers``: a panel model's instruments (a relative label compares exactly those, not
    whatever the files hold today)."""
    frames = frames if frames is not None else read_all_sources(cfg)[0]
    if cfg.panel is not None:
        from stocktrend.data.panel import build_panel, forward_returns, panel_labels

        if tickers:
            cfg = dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, include=list(tickers), exclude=[],
                                                                     min_days=50))
        p = build_panel(dataclasses.replace(cfg, start=None), frames)
        fwd = forward_returns(p.close, cfg.horizon)
        index_fwd = forward_returns(p.index_close, cfg.horizon) if p.index_close is not None else None
        y = panel_labels(cfg, fwd, index_fwd)
        t, d = np.nonzero(np.isfinite(y))
        return pd.DataFrame({"date": p.calendar[d].strftime("%Y-%m-%d"), "ticker": np.asarray(p.tickers)[t],
                             "fwd": fwd[t, d], "label": y[t, d].astype(int)})
    price = adjusted_ohlc(frames[cfg.target])["close"]
    fwd = forward_return(price, cfg.horizon)
    if cfg.label == "relative_index":
        index = adjusted_ohlc(align_to(frames[cfg.index], price.index, cfg.ffill_limit))["close"]
        fwd = fwd - forward_return(index, cfg.horizon)
    fwd = fwd.dropna()
    return pd.DataFrame({"date": fwd.index.strftime("%Y-%m-%d"), "ticker": str(cfg.ticker).upper(),
                         "fwd": fwd.to_numpy(), "label": (fwd.to_numpy() > 0).astype(int)})


def predictions_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (version, date, instrument) with a known day: the latest p_up logged for
    it (a version given the same bars answers the same; a repeat must not weigh twice)."""
    rows = [{"version": r["version"], "role": r.get("role"), "date": r["as_of"], "ticker": str(r["ticker"]).upper(),
             "p_up": float(r["p_up"][-1]), "t": r["t"]}
            for r in records if r.get("as_of") and r.get("ticker") and r.get("p_up")]
    if not rows:
        return pd.DataFrame(columns=["version", "role", "date", "ticker", "p_up", "t"])
    frame = pd.DataFrame(rows).sort_values("t")
    return frame.drop_duplicates(["version", "date", "ticker"], keep="last").reset_index(drop=True)


def outcome_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Accuracy, AUROC and cross-entropy of p(up) against 0/1 labels (also the retrain's block metrics)."""
    if not len(y):
        return {"accuracy": math.nan, "auroc": math.nan, "cross_entropy": math.nan}
    q = np.clip(p, 1e-7, 1 - 1e-7)  # cross-entropy: the training selection metric, judged live too
    return {"accuracy": float(((p > 0.5) == (y == 1)).mean()), "auroc": auroc(y, p),
            "cross_entropy": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))}


@dataclasses.dataclass
class VersionFacts:
    """What judging one version needs: its label rule and horizon, the labels by that rule,
    and the last day it trained or was selected on (later days are out of sample)."""

    rule: tuple
    horizon: int
    truth: pd.DataFrame
    last_seen: str


def score_versions(preds: pd.DataFrame, facts: dict[str, VersionFacts], weeks: float | None, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """The report: per version, and per pair of versions (same label rule) on their common
    (date, instrument). A prediction for a day at or before the end of the version's own
    validation split is in sample for it: counted, never scored."""
    parts, pending, in_sample, unknown_versions = [], 0, {}, sorted(set(preds["version"]) - set(facts))
    for version, g in preds.groupby("version", sort=True):
        if version not in facts:
            continue
        f = facts[version]
        inside = g["date"] <= f.last_seen
        in_sample[version] = int(inside.sum())
        j = g[~inside].merge(f.truth, on=["date", "ticker"], how="inner")
        pending += int((~inside).sum()) - len(j)
        parts.append(j)
    joined = pd.concat(parts) if parts else preds.iloc[:0].assign(fwd=[], label=[])
    if weeks is not None and len(joined):
        last = pd.Timestamp(joined["date"].max())
        joined = joined[pd.to_datetime(joined["date"]) > last - pd.Timedelta(weeks=weeks)]
    window = {"first": joined["date"].min() if len(joined) else None,
              "last": joined["date"].max() if len(joined) else None, "weeks": weeks}
    versions: dict[str, Any] = {}
    for version, g in joined.groupby("version", sort=True):
        g = g.sort_values(["date", "ticker"])
        horizon = facts[version].horizon
        y, p, dates = g["label"].to_numpy().astype(int), g["p_up"].to_numpy(), g["date"].to_numpy()
        figures = {"n": len(g), "dates": int(g["date"].nunique()), "roles": sorted(set(g["role"].dropna())),
                   "in_sample_not_scored": in_sample.get(version, 0), "out_of_sample_after": facts[version].last_seen,
                   "share_up_realised": float(y.mean())}
        if len(g) >= 2:
            cis = resampled_ci(outcome_metrics, (y, p), n_boot, seed, dates=dates, horizon=horizon)
            figures.update({k: clean(v.to_dict()) for k, v in cis.items()})
        else:
            figures.update({k: {"point": v} for k, v in outcome_metrics(y, p).items()})
        if g["ticker"].nunique() > 1:
            ic = rank_ic_by_date(dates, p, g["fwd"].to_numpy())
            figures["rank_ic"] = clean(date_mean(ic, horizon))
        versions[version] = figures
    pairs = []
    names = sorted(versions)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if facts[a].rule != facts[b].rule:  # different questions: no paired difference
                continue
            both = joined[joined["version"] == a].merge(joined[joined["version"] == b], on=["date", "ticker"],
                                                        suffixes=("_a", "_b")).sort_values(["date", "ticker"])
            if len(both) < 2:
                continue
            y = both["label_a"].to_numpy().astype(int)

            def difference(y, pa, pb):  # both scored on the same resampled dates
                ma, mb = outcome_metrics(y, pa), outcome_metrics(y, pb)
                return {k: ma[k] - mb[k] for k in ma}

            diff = resampled_ci(difference, (y, both["p_up_a"].to_numpy(), both["p_up_b"].to_numpy()), n_boot, seed,
                                dates=both["date"].to_numpy(), horizon=facts[a].horizon)
            pairs.append({"a": a, "b": b, "n": len(both),
                          "agreement": float(((both["p_up_a"] > 0.5) == (both["p_up_b"] > 0.5)).mean()),
                          **{f"{k}_a_minus_b": clean(v.to_dict()) for k, v in diff.items()}})
    return {"window": window, "scored": int(len(joined)), "not_yet_known": int(pending),
            "in_sample_not_scored": int(sum(in_sample.values())), "versions_not_on_disk": unknown_versions,
            "versions": versions, "paired": pairs}


def score_model(model_dir: str | Path, weeks: float | None = None, frames: dict[str, pd.DataFrame] | None = None,
                data_root: str | Path | None = None, n_boot: int = 1000, seed: int = 0,
                log_dir: str | Path | None = None) -> dict[str, Any]:
    """Score the prediction log of ``models/<name>`` (or of ``<log_dir>/<name>``, the
    deployment's ``prediction_log_dir``) against each version's own label rule, computed
    from its source files (under ``data_root``, default the project's ``datasets/``) or
    ``frames``."""
    from stocktrend.inference.predictor import Predictor
    from stocktrend.serving.config import ROOT
    from stocktrend.serving.predlog import read_log

    model_dir = Path(model_dir)
    records = read_log(Path(log_dir) / model_dir.name if log_dir else model_dir)
    preds = predictions_table(records)
    base = str(Path(data_root or ROOT / "datasets").resolve())
    facts, truths = {}, {}
    for version in sorted(set(preds["version"])):
        if not (model_dir / version / "manifest.json").is_file():
            continue
        p = Predictor.from_artifact(model_dir / version)
        cfg = dataclasses.replace(p.data_cfg, base_dir=base)
        tickers = tuple(p.preprocessing.get("tickers") or ())
        rule = (p.preprocessing.get("label_rule"), cfg.label, p.horizon, tickers)
        if rule not in truths:  # versions asking the same question share one label table
            truths[rule] = realised(cfg, frames, list(tickers) or None)
        facts[version] = VersionFacts(rule, p.horizon, truths[rule], p.training["dataset"]["splits"]["val"]["end"])
    report = score_versions(preds, facts, weeks, n_boot, seed)
    report.update({"model": model_dir.name, "logged_records": len(records),
                   "undated_records": sum(1 for r in records if not r.get("as_of")),
                   "label_rules": sorted({f.rule[0] for f in facts.values()})})
    log.info("scored %d predictions of %s (%d not yet known, %d in sample)", report["scored"], model_dir.name,
             report["not_yet_known"], report["in_sample_not_scored"])
    return report
