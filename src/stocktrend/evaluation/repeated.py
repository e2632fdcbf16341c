"""Evaluation across several training runs: seeds of one model, or walk-forward folds.

A single run of a noisy model says little; these report every run's test metrics, their
mean and spread, and for walk-forward also the pooled out-of-sample metrics and backtest
over all folds' test blocks (each fold built, scaled, selected and balanced on its own
training window by the dataset builder).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stocktrend.config_io import with_overrides
from stocktrend.data.build import build_dataset, prepare
from stocktrend.data.config import DataConfig
from stocktrend.data.splits import SplitPlan, walk_forward_plans
from stocktrend.data.store import fingerprint, read_metadata
from stocktrend.data.windows import split_arrays
from stocktrend.evaluation import backtest as bt
from stocktrend.evaluation import baselines as bl
from stocktrend.evaluation.report import evaluate_predictions, pool_runs

log = logging.getLogger(__name__)


def evaluate_seeds(runs: list[dict], dataset: Path, market: bt.Market, n_boot: int, cost_bps: float) -> dict:
    meta, test = read_metadata(dataset), split_arrays(dataset, "test", mmap=False)
    y = test["y"].argmax(axis=1)
    reports = []
    for run in runs:
        sections, _ = evaluate_predictions(y, run["probs"][:, 1], test["dates"], meta["horizon"], None, market,
                                           n_boot=n_boot, cost_bps=cost_bps, seq_len=meta["seq_len"])
        reports.append({"seed": run["train"]["seed"], "best_val_ce": run["metrics"].get("val_ce"), **sections})
    return {"kind": "seeds", "runs": reports, "pooled_spread": pool_runs(reports)}


def fold_plans(cfg: DataConfig, folds: int) -> tuple[list[SplitPlan], object]:
    """(the expanding-window folds' split plans over ``cfg``'s labelled, feature-complete days,
    the panel they were read from: None for a single stock). The days do not depend on the
    sequence length or the feature count, so configurations a search draws share the folds."""
    panel = None
    if cfg.panel is not None:  # one panel for every fold: only the split and the fits differ
        from stocktrend.data.panel import build_panel
        from stocktrend.data.panel_build import labels_and_ends

        panel = build_panel(cfg)
        days = labels_and_ends(cfg, panel)[3]
    else:
        days = prepare(cfg).labelled_rows
    return walk_forward_plans(days, folds), panel


def fold_config(cfg: DataConfig, plan: SplitPlan) -> DataConfig:
    """``cfg`` with one fold's dates as its split (the purge gap kept)."""
    return with_overrides(cfg, {"split": {"val_start": plan.val_start, "test_start": plan.test_start,
                                          "end": plan.end, "purge_rows": cfg.split.purge_rows}})


def fold_datasets(cfg: DataConfig, folds: int, cache_root: Path) -> list[Path]:
    """Build (once, cached) one dataset per expanding-window fold, all fits inside the fold."""
    plans, panel = fold_plans(cfg, folds)
    out = []
    for plan in plans:
        fold_cfg = fold_config(cfg, plan)
        path = Path(cache_root) / f"walkforward-{fingerprint(fold_cfg)[:16]}"
        if not (path / "metadata.json").is_file():
            if panel is not None:
                from stocktrend.data.panel_build import build_panel_dataset

                build_panel_dataset(fold_cfg, path, plan=plan, panel=panel)
            else:
                build_dataset(fold_cfg, path, plan=plan)
        out.append(path)
    return out


def evaluate_walk_forward(runs: list[dict], datasets: list[Path], market: bt.Market, n_boot: int,
                          cost_bps: float, seed: int = 0, choices: list[dict] | None = None) -> dict:
    """Every fold's test block scored by its own model, and all of them pooled. ``choices``:
    what a nested search chose per fold (``tuning.nested``), recorded beside each fold."""
    from stocktrend.evaluation.panel_report import NESTED_POLICY, RETRAINED_POLICY

    folds, pooled = [], {"y": [], "p": [], "dates": [], "prior": [], "base": {}}
    for run, dataset in zip(runs, datasets):
        meta = read_metadata(dataset)
        train, test = split_arrays(dataset, "train", mmap=False), split_arrays(dataset, "test", mmap=False)
        y, p = test["y"].argmax(axis=1), run["probs"][:, 1]
        base = bl.all_baselines(train, test, meta["splits"]["train"]["class_counts_before_balancing"], market.close,
                                meta["horizon"], seed)
        counts = meta["splits"]["train"]["class_counts_before_balancing"]
        prior = np.full(len(y), counts[1] / sum(counts[:2]))  # this fold's training share of up labels
        sections, _ = evaluate_predictions(y, p, test["dates"], meta["horizon"], base, market, n_boot=n_boot,
                                           cost_bps=cost_bps, seq_len=meta["seq_len"], prior_up=prior)
        # "test" is the fold's scores (from evaluate_predictions); its dates are "test_split".
        folds.append({"fold": len(folds), "train": meta["splits"]["train"], "val": meta["splits"]["val"],
                      "test_split": meta["splits"]["test"], "best_val_ce": run["metrics"].get("val_ce"),
                      **({"chosen": choices[len(folds)]} if choices else {}), **sections})
        pooled["y"].append(y)
        pooled["p"].append(p)
        pooled["dates"].append(test["dates"])
        pooled["prior"].append(prior)
        for k, v in base.items():
            pooled["base"].setdefault(k, []).append(v)
    horizon, seq_len = (read_metadata(datasets[0])[k] for k in ("horizon", "seq_len"))
    order = np.argsort(np.concatenate(pooled["dates"]), kind="stable")
    pooled_sections, curves = evaluate_predictions(
        np.concatenate(pooled["y"])[order], np.concatenate(pooled["p"])[order],
        np.concatenate(pooled["dates"])[order], horizon,
        {k: np.concatenate(v)[order] for k, v in pooled["base"].items()}, market, n_boot=n_boot, cost_bps=cost_bps,
        seq_len=seq_len, prior_up=np.concatenate(pooled["prior"])[order])
    return {"kind": "nested_walk_forward" if choices else "walk_forward",
            "policy": NESTED_POLICY if choices else RETRAINED_POLICY, "folds": folds, "pooled": pooled_sections,
            "spread": pool_runs(folds)}
