"""Nested, purged walk-forward: one search per fold, each choosing on dates before its test block.

``tune.py --walk-forward K``. The labelled days after the first half are cut into K consecutive
test blocks (``data.splits.walk_forward_plans``, the folds ``evaluate.py --walk-forward`` uses).
Fold i's search trains on the expanding window before its test block and validates on the 10%
of days just before it, a purge gap between each (``data.splits.assign_splits``). Everything the
search chooses (the configuration, and the epoch: the best validation score over every trial
and epoch) is chosen on that validation window, so fold i's test block is out of sample for the
choice as well as for the fit. The folds' test predictions are pooled into one report, with
every fold's choice and the dates that made it.

A search reads only its fold's training and validation windows: its datasets carry the test
block (each fold's dataset is built, scaled and selected on its own training window), but no
trial scores it; the driver predicts it once, after the choice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from stocktrend import storage as storage_lib
from stocktrend.data.store import atomic_write_text, read_metadata
from stocktrend.evaluation.core import clean
from stocktrend.evaluation.repeated import fold_config, fold_plans
from stocktrend.training.repeat import predict_split
from stocktrend.tuning.run import SearchOptions, best_trial, run_search
from stocktrend.tuning.space import SearchSpace
from stocktrend.tuning.trial import trial_dataset

log = logging.getLogger(__name__)


def fold_search(space: SearchSpace, opts: SearchOptions, storage: str, name: str, cache: Path,
                fold: int, plan) -> tuple[dict[str, Any], Path, dict[str, Any], tuple[SearchSpace, Any]]:
    """One fold's search: (its run for the report: test probabilities of the chosen checkpoint,
    the chosen trial's dataset, the record of the choice, (the fold's space, its Tune results))."""
    fold_space = dataclasses.replace(space, data=fold_config(space.data, plan))
    experiment = f"{name}-fold{fold}"
    t0 = time.perf_counter()
    results = run_search(fold_space, opts, storage, experiment, cache)
    if results.num_errors == len(results):
        raise RuntimeError(f"fold {fold}: all {len(results)} trials failed; see {storage_lib.join(storage, experiment)}")
    best = best_trial(results, opts.metric)
    dataset = trial_dataset(fold_space, best["config"], cache)
    experiment_dir = storage_lib.join(storage, experiment)
    checkpoint = storage_lib.fetch_dir(storage_lib.location_of(experiment_dir, best["checkpoint_path"]), "checkpoints")
    probs = predict_split(str(checkpoint / "checkpoint.ckpt"), dataset, "test")["probs"]  # once, after the choice
    splits = read_metadata(dataset)["splits"]
    chosen = {"search": str(experiment_dir), "trials": len(results), "failed": results.num_errors,
              "trial_id": best["trial_id"], "config": best["config"], "epoch": best["epoch"],
              "metric": opts.metric, "score": best["score"],
              "chosen_on": {"train_end": splits["train"]["end"], "val_start": splits["val"]["start"],
                            "val_end": splits["val"]["end"], "test_start": splits["test"]["start"]},
              "minutes": round((time.perf_counter() - t0) / 60, 2)}
    log.info("fold %d: trial %s epoch %d chosen (%s %.4f on %s..%s); test block from %s", fold, best["trial_id"],
             best["epoch"], opts.metric, best["score"], splits["val"]["start"], splits["val"]["end"],
             splits["test"]["start"])
    return {"probs": probs, "metrics": {opts.metric: best["score"]}}, dataset, chosen, (fold_space, results)


def nested_walk_forward(space: SearchSpace, opts: SearchOptions, storage: str, name: str, cache: Path,
                        folds: int, n_boot: int = 1000, cost_bps: float = 5.0) -> dict[str, Any]:
    """K nested searches and their pooled out-of-sample report, written to
    ``<storage>/<name>-nested/`` (nested.json; for a panel also report.md, report.json, the
    predictions and the books' plot). Returns {"report", "folds": choices, "location", "last": the last
    fold's (space, Tune results, experiment): the most recent choice, for export}."""
    plans, _ = fold_plans(space.data, folds)
    runs, datasets, choices, results = [], [], [], None
    t0 = time.perf_counter()
    for i, plan in enumerate(plans):
        run, dataset, chosen, results = fold_search(space, opts, storage, name, cache, i, plan)
        runs.append(run)
        datasets.append(dataset)
        choices.append(chosen)
    location = storage_lib.join(storage, f"{name}-nested")
    settings = {"space": str(space.path), "folds": folds, "search": opts.search, "scheduler": opts.scheduler,
                "num_samples": opts.num_samples or space.num_samples, "max_epochs": space.max_epochs,
                "metric": opts.metric, "minutes": round((time.perf_counter() - t0) / 60, 2)}
    with storage_lib.staged(location) as out:
        if space.data.panel is not None:
            from stocktrend.evaluation.panel_report import walk_forward_report

            report = walk_forward_report(runs, datasets, out, n_boot, cost_bps, choices=choices)
            report = {key: v for key, v in report.items() if key not in ("curves", "files")}
        else:
            from stocktrend.evaluation import backtest as bt
            from stocktrend.evaluation.repeated import evaluate_walk_forward

            report = evaluate_walk_forward(runs, datasets, bt.load_market(space.data), n_boot, cost_bps,
                                           choices=choices)
        report["settings"] = settings
        atomic_write_text(out / "nested.json", json.dumps(clean(report), indent=2))
    last = (*results, storage_lib.join(storage, f"{name}-fold{folds - 1}"))
    return {"report": report, "folds": choices, "location": location, "last": last, "settings": settings}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the console prints: each fold's choice, then the pooled headline."""
    from stocktrend.evaluation.retrain_report import pooled_lines

    report, settings = result["report"], result["settings"]
    lines = [f"\nnested walk-forward, {settings['folds']} folds, {settings['minutes']:.1f} min "
             f"({settings['num_samples']} trials per fold, {settings['search']} + {settings['scheduler']}):"]
    for f in result["folds"]:
        on = f["chosen_on"]
        lines.append(f"  fold chosen on {on['val_start']}..{on['val_end']} (tests from {on['test_start']}): trial "
                     f"{f['trial_id']} epoch {f['epoch']} {f['metric']} {f['score']:.4f} {f['config']}")
    if "rank_ic" in report:
        lines.append(f"  pooled test dates: {report['test']['dates']} dates, {report['test']['windows']} windows")
    lines += pooled_lines(report)
    lines.append(f"  -> {storage_lib.join(result['location'], 'nested.json')}")
    return lines
