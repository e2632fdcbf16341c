"""The evaluation report of a model artifact on the TEST split of the dataset it was trained on.

What is honest about it, and why:
- the dataset is the one the model was trained on: a given folder must carry the
  fingerprint recorded in ``training.json``, and without one the dataset is rebuilt from
  the artifact's own data config; anything else is refused;
- only the test split is scored here, and its results feed no choice: the epoch was
  chosen on validation (``training.json``), the 0.5 threshold is fixed, baselines have
  fixed hyperparameters. Nothing in this module writes back into the artifact's manifest;
- every metric has a 95% block-bootstrap interval (test windows overlap in time), and a
  baseline is "beaten" only when the paired interval of model minus baseline is above 0;
- the backtest trades on prices, with costs and a risk-free rate.

``evaluate_predictions`` is the pure core (arrays in, dict out) so that seeds and
walk-forward folds can be scored one by one and pooled (``pool_runs``, or by
concatenating their predictions); ``evaluate_artifact`` adds the I/O.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.config_io import ConfigError, config_from_dict
from stocktrend.data.cache import build_cached
from stocktrend.data.config import DataConfig
from stocktrend.data.sources import sha256_of
from stocktrend.data.store import fingerprint, read_metadata
from stocktrend.data.windows import split_arrays
from stocktrend.evaluation import backtest as bt
from stocktrend.evaluation import baselines as bl
from stocktrend.evaluation import plots
from stocktrend.evaluation.bootstrap import window_block_length
from stocktrend.evaluation.core import ALPHA, resampled_ci, write_report
from stocktrend.evaluation.headline import single_headline
from stocktrend.evaluation.metrics import HEADLINE, SCALARS, THRESHOLD, all_metrics, scalar_metrics
from stocktrend.evaluation.report_text import _interpretation, render_markdown, summary_lines  # noqa: F401
from stocktrend.evaluation.selection import selection_policy, selection_section
from stocktrend.evaluation.volatility import volatility_section

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[3]  # the repository (src/stocktrend/evaluation/report.py)
SCHEMA = 1
PREDICT_BATCH = 512
TEST_POLICY = ("Scored on the test split only. The checkpoint was chosen on validation; the 0.5 threshold and the "
               "baselines' settings are fixed in code. No selection, promotion or threshold is based on these "
               "test results.")


class EvaluationError(ValueError):
    """The artifact cannot be evaluated honestly as asked (wrong dataset, unsupported model)."""


# -- the dataset the model was trained on ----------------------------------------
def artifact_data_config(preprocessing: dict, data_root: Path) -> DataConfig:
    """The artifact's dataset config, with relative source paths resolved under ``data_root``."""
    try:
        return config_from_dict(DataConfig, {**preprocessing["data_config"], "base_dir": str(data_root)},
                                "preprocessing.json data_config")
    except ConfigError as err:
        raise EvaluationError(str(err)) from None


def resolve_dataset(training: dict, cfg: DataConfig, dataset_dir: str | Path | None = None,
                    cache_root: str | Path | None = None) -> Path:
    """``dataset_dir`` if its fingerprint is the training one, else the rebuilt dataset."""
    want = training.get("dataset", {}).get("fingerprint")
    if not want:
        raise EvaluationError("training.json records no dataset fingerprint: cannot tell which data the model saw")
    if dataset_dir is not None:
        dataset_dir = Path(dataset_dir).resolve()
        got = read_metadata(dataset_dir).get("fingerprint")
        if got != want:
            raise EvaluationError(
                f"{dataset_dir} is not the dataset this model was trained on: its fingerprint {str(got)[:12]} "
                f"differs from training.json's {want[:12]}. Evaluating on other data would mix up test and "
                "training days; omit --dataset to rebuild the right one."
            )
        return dataset_dir
    try:
        got = fingerprint(cfg)
    except OSError as err:
        raise EvaluationError(f"cannot rebuild the training dataset: {err}") from None
    if got != want:
        raise EvaluationError(
            f"the dataset this model was trained on cannot be rebuilt: its config now gives fingerprint {got[:12]}, "
            f"training.json records {want[:12]} (a source file under {cfg.base_dir} or the feature code changed). "
            "Pass --dataset with the original dataset folder, or retrain."
        )
    return build_cached(cfg, cache_root or ROOT / "datasets" / "cache")


def artifact_dataset(training: dict, preprocessing: dict, dataset_dir: str | Path | None = None) -> Path:
    """The built dataset an artifact was trained on (``dataset_dir`` checked, or rebuilt/cached)."""
    return resolve_dataset(training, artifact_data_config(preprocessing, ROOT / "datasets"), dataset_dir)


def check_price_sources(training: dict, cfg: DataConfig, names: list[str]) -> None:
    """The backtest reads raw files: they must be the very files the dataset was built from."""
    recorded = training.get("dataset", {}).get("sources", {})
    for name in names:
        if name in recorded and name in cfg.sources:
            path = cfg.source_path(name)
            if not path.is_file() or sha256_of(path) != recorded[name]["sha256"]:
                raise EvaluationError(f"{path} is not the '{name}' file the model's dataset was built from "
                                      "(missing or its sha256 differs); the backtest would use other prices")


# -- scoring -----------------------------------------------------------------------
def evaluate_predictions(
    y_true: np.ndarray,
    p_up: np.ndarray,
    dates: np.ndarray,
    horizon: int,
    baselines: dict[str, np.ndarray] | None = None,
    market: bt.Market | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    cost_bps: float = 5.0,
    staggered: bool = False,
    block: int | None = None,
    alpha: float = ALPHA,
    seq_len: int | None = None,
    prior_up: float | np.ndarray | None = None,
) -> tuple[dict, dict[str, pd.Series]]:
    """Metrics with intervals, paired baseline comparisons and the backtest, from arrays.

    Returns (JSON-able sections, equity curves). One resample index matrix serves the
    model and every baseline, so all intervals, and the paired differences, are on the
    same resampled days. With ``prior_up`` (the training window's share of up labels, one
    value or one per window) and the logistic baseline, the pre-declared headline
    (``evaluation.headline``): the only "beats" verdict; every other comparison is an
    interval.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    p_up = np.asarray(p_up, dtype=float)
    n = len(y_true)
    block = block or window_block_length(y_true, p_up, horizon, seq_len)
    baselines = {k: np.asarray(v, float) for k, v in (baselines or {}).items()}

    def figures(y, p, *opponents):  # the model's, each baseline's and their differences, on one resample
        model = scalar_metrics(y, p)
        out = {f"model.{k}": v for k, v in model.items()}
        for name, q in zip(baselines, opponents):
            other = scalar_metrics(y, q)
            out |= {f"{name}.{k}": other[k] for k in HEADLINE} | {f"{name}-.{k}": model[k] - other[k] for k in HEADLINE}
        return out

    ci = {k: v.to_dict() for k, v in resampled_ci(figures, (y_true, p_up, *baselines.values()), n_boot, seed,
                                                   block=block, alpha=alpha).items()}
    test = all_metrics(y_true, p_up)
    out: dict[str, Any] = {
        "bootstrap": {
            "method": "circular block bootstrap, percentile intervals",
            "n_boot": n_boot, "block": block, "alpha": alpha, "seed": seed,
            "block_rule": ("Politis-White automatic length of (y - mean y)(p - mean p), at least "
                           f"max(ceil(n ** (1/3)), 2 * horizon{', seq_len + horizon' if seq_len else ''})"),
        },
        "test": {
            "threshold": THRESHOLD,
            "n": n,
            "confusion_matrix": test["confusion_matrix"],
            "share_up_true": test["share_up_true"],
            "share_up_predicted": test["share_up_predicted"],
            "metrics": {k: ci[f"model.{k}"] for k in SCALARS},
        },
        # Secondary: intervals of model - baseline, no verdict (the headline holds the only one).
        "baselines": {name: {"description": bl.DESCRIPTIONS.get(name, name),
                             "metrics": {k: ci[f"{name}.{k}"] for k in HEADLINE},
                             "confusion_matrix": all_metrics(y_true, pb)["confusion_matrix"],
                             "difference": {k: ci[f"{name}-.{k}"] for k in HEADLINE}} for name, pb in baselines.items()},
    }
    if prior_up is not None and baselines and "logistic_regression" in baselines:
        opponents = {"prior": np.broadcast_to(np.asarray(prior_up, float), (n,)),
                     "logistic_regression": np.asarray(baselines["logistic_regression"], float)}
        out["headline"] = single_headline(y_true, p_up, opponents, n_boot, seed, block)
    curves: dict[str, pd.Series] = {}
    if market is not None:
        out["backtest"], curves = bt.backtest_report(market.close, dates, p_up, horizon, cost_bps, staggered,
                                                     market.rf_daily, market.rf_note, market.rf_span,
                                                     opens=market.open)
    return out, curves


def pool_runs(reports: list[dict]) -> dict:
    """Mean, spread (std, ddof=1), min and max of every test metric and backtest figure
    over several runs (seeds or folds) evaluated separately."""
    def collect(getter) -> dict:
        values: dict[str, list[float]] = {}
        for r in reports:
            for k, v in getter(r).items():
                if isinstance(v, int | float) and v is not None:
                    values.setdefault(k, []).append(float(v))
        return {k: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else math.nan,
                    "min": float(np.nanmin(v)), "max": float(np.nanmax(v)), "n": len(v)} for k, v in values.items()}

    out = {"n_runs": len(reports),
           "test": collect(lambda r: {k: m["point"] for k, m in r["test"]["metrics"].items()})}
    for strat in ("long_flat", "long_short", "buy_and_hold"):
        if all("backtest" in r for r in reports):
            out[f"backtest_{strat}"] = collect(lambda r, s=strat: r["backtest"][s])
    return out


# -- the artifact ----------------------------------------------------------------
def _validation_section(training: dict) -> dict:
    metrics, note = training.get("val_metrics") or {}, "training.json val_metrics (the selected epoch)"
    if not metrics:
        history, best = training.get("history", []), training.get("best_epoch")
        entry = next((h for h in history if h.get("epoch") == best), None)
        note = f"training.json history, epoch {best} (val_metrics was empty)"
        if entry is None and history:
            entry = history[-1]
            note = (f"training.json val_metrics is empty and best_epoch={best} is not in the history; "
                    f"showing the last recorded epoch ({entry.get('epoch')})")
        metrics = {k: v for k, v in (entry or {}).items() if k.startswith("val_")}
    return {"source": note, "selection_metric": training.get("selection_metric"),
            "best_epoch": training.get("best_epoch"), "metrics": metrics}


def _predict(predictor, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(probabilities, attention, log-volatility forecast or None) of every window."""
    probs, attn, log_vol = [], [], []
    for start in range(0, len(x), PREDICT_BATCH):
        out = predictor.backend(predictor.check_windows(x[start : start + PREDICT_BATCH]))
        probs.append(out.probs)
        attn.append(out.attention)
        log_vol.append(predictor.log_volatility(out.volatility))
    return np.concatenate(probs), np.concatenate(attn), None if log_vol[0] is None else np.concatenate(log_vol)


def evaluate_artifact(
    artifact_path: str | Path,
    dataset_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    cost_bps: float = 5.0,
    staggered: bool = False,
    *,
    data_root: str | Path | None = None,
    cache_root: str | Path | None = None,
) -> dict:
    """Evaluate an artifact on its test split; write report.json, report.md, predictions.csv
    and PNGs into ``out_dir`` (default ``<version_dir>/evaluation/``); return the report."""
    from stocktrend.inference.artifact import load_parts
    from stocktrend.inference.predictor import Predictor

    version_dir, manifest, parts = load_parts(artifact_path)
    training, pre = parts["training"], parts["preprocessing"]
    if int(pre.get("n_classes", 2)) != 2:
        raise EvaluationError(f"{version_dir}: only binary (up/down) models can be evaluated, "
                              f"this one has {pre['n_classes']} classes")
    cfg = artifact_data_config(pre, Path(data_root or ROOT / "datasets"))
    dataset = resolve_dataset(training, cfg, dataset_dir, cache_root)
    meta = read_metadata(dataset)
    if meta["features"]["selected"] != pre["features"]:
        raise EvaluationError(f"{dataset}: its features differ from the artifact's preprocessing.json")
    horizon = int(meta["horizon"])
    selection = selection_section(training, version_dir, cfg, Path(data_root or ROOT / "datasets"),
                                  pre.get("tickers"), n_boot, seed)
    header = {"schema": SCHEMA, "policy": TEST_POLICY if selection is None else
              selection_policy(selection["chosen_on"]["start"], selection["chosen_on"]["end"]),
              **({"selection": selection} if selection else {}),
              "model": {"name": manifest["name"], "version": manifest["version"], "path": str(version_dir),
                        "created": training.get("created"), "git_commit": training.get("git_commit")},
              "validation": _validation_section(training)}
    if meta["config"].get("planted"):  # a synthetic market's known answer, printed beside what was recovered
        header["planted"] = meta["config"]["planted"]
    out = Path(out_dir) if out_dir else version_dir / "evaluation"
    test = split_arrays(dataset, "test", mmap=meta.get("layout") == "panel")
    probs, attention, log_vol = _predict(Predictor(version_dir, manifest, parts), test["X"])
    p_up = probs[:, 1]
    if log_vol is not None:
        header["volatility"] = volatility_section(dataset, log_vol, n_boot, seed, out / "volatility.png")
    if meta.get("layout") == "panel":
        from stocktrend.evaluation.panel_report import evaluate_panel

        header["dataset"] = {"dir": str(dataset), "fingerprint": meta["fingerprint"], "test": meta["splits"]["test"],
                             "tickers": meta["tickers"], "horizon": horizon, "seq_len": meta["seq_len"]}
        return evaluate_panel(dataset, p_up, out, n_boot, seed, cost_bps, staggered, header)

    train = split_arrays(dataset, "train", mmap=False)
    y_true = test["y"].argmax(axis=1)

    check_price_sources(training, cfg, [cfg.target, "ust"])
    market = bt.load_market(cfg)
    counts_before = meta["splits"]["train"]["class_counts_before_balancing"]
    baselines = bl.all_baselines(train, test, counts_before, market.close, horizon, seed)
    sections, curves = evaluate_predictions(y_true, p_up, test["dates"], horizon, baselines, market,
                                            n_boot, seed, cost_bps, staggered, seq_len=int(meta["seq_len"]),
                                            prior_up=counts_before[1] / sum(counts_before[:2]))
    test_facts = meta["splits"]["test"]
    report = {
        **header,
        "dataset": {"dir": str(dataset), "fingerprint": meta["fingerprint"], "fingerprint_matches_training": True,
                    "protocol": meta.get("protocol"), "leaky": bool(meta.get("leaky")), "horizon": horizon,
                    "seq_len": meta["seq_len"], "label_rule": meta.get("label_rule"),
                    "test": {k: test_facts[k] for k in ("start", "end", "n") if k in test_facts},
                    "train_class_counts_before_balancing": counts_before},
        **sections,
    }
    chosen_today = [n for n, src in cfg.sources.items() if src.kind == "close_panel" and n != cfg.target]
    if chosen_today:
        report["hindsight"] = (f"Hindsight: the context features come from {', '.join(chosen_today)}, instruments "
                               "chosen today knowing they survived and grew, and a target picked today has survived "
                               "by construction: long-only figures above are flattered by that choice.")
    report["interpretation"] = _interpretation(report)
    names = {"learning_curves": "learning_curves.png", "confusion_matrix": "confusion_matrix.png",
             "roc": "roc.png", "calibration": "calibration.png", "equity": "equity.png",
             "attention": "attention_by_class.png"}
    plots.learning_curves(training.get("history", []), out / names["learning_curves"])
    plots.confusion(np.array(report["test"]["confusion_matrix"]), out / names["confusion_matrix"])
    plots.roc(y_true, {"model": p_up, **baselines}, out / names["roc"])
    plots.calibration(y_true, p_up, out / names["calibration"])
    plots.equity_curves(curves, out / names["equity"])
    plots.attention_by_class(attention, p_up, out / names["attention"])
    if log_vol is not None:
        names["volatility"] = "volatility.png"
    report["plots"] = names
    predictions = pd.DataFrame({"date": [str(d) for d in test["dates"]], "y_true": y_true, "p_up_model": p_up,
                                **{f"p_up_{k}": v for k, v in baselines.items()}})
    report = write_report(out, report, render_markdown(report), predictions)
    log.info("evaluation report written to %s", out)
    return report


__all__ = ["EvaluationError", "TEST_POLICY", "artifact_data_config", "resolve_dataset", "check_price_sources",
           "evaluate_predictions", "evaluate_artifact", "pool_runs", "render_markdown", "summary_lines"]
