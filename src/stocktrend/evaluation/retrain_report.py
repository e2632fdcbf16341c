"""--seeds / --walk-forward of the evaluate command: retrain through Ray Train, then report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from stocktrend.config_io import config_from_dict, with_overrides
from stocktrend.data.store import atomic_write_text
from stocktrend.evaluation import backtest as bt
from stocktrend.evaluation.core import ci_text, clean
from stocktrend.evaluation.repeated import evaluate_seeds, evaluate_walk_forward, fold_datasets
from stocktrend.evaluation.report import ROOT, artifact_data_config, resolve_dataset
from stocktrend.inference.artifact import load_parts
from stocktrend.models.config import ModelConfig, model_config_from_metadata


def _spread_lines(title: str, spread: dict) -> list[str]:
    lines = [title]
    for k in ("accuracy", "balanced_accuracy", "auroc", "mcc"):
        if k in spread["test"]:
            s = spread["test"][k]
            lines.append(f"  {k:18s} mean {s['mean']:.3f}  std {s['std']:.3f}  [{s['min']:.3f}, {s['max']:.3f}]  n={s['n']}")
    return lines


def pooled_lines(result: dict) -> list[str]:
    """The console lines of a pooled walk-forward report: a panel's mean rank IC per scorer and
    its verdict, or a single stock's pooled metrics and headline (also ``tuning.nested``'s)."""
    if "rank_ic" in result:
        return [f"  mean rank IC {n:20s} {ci_text(e['mean'], '+.4f')}" for n, e in result["rank_ic"].items()] + [
            "  " + result["verdict"]]
    pooled = result["pooled"]["test"]["metrics"]
    lines = ["  pooled out-of-sample: " + ", ".join(f"{k} {ci_text(pooled[k])}" for k in ("accuracy", "auroc", "mcc"))]
    if result["pooled"].get("headline"):
        lines.append("  " + result["pooled"]["headline"]["verdict"])
    return lines


def retrain_and_report(model: Path, args, out_dir: Path) -> list[str]:
    from stocktrend.cluster.connect import connect
    from stocktrend.data.store import read_metadata
    from stocktrend.training.config import recorded_config
    from stocktrend.training.repeat import train_many

    version_dir, _, parts = load_parts(model)
    training, pre = parts["training"], parts["preprocessing"]
    cfg = artifact_data_config(pre, ROOT / "datasets")
    train_cfg = recorded_config(training["train_config"], "training.json train_config")
    if args.epochs:
        train_cfg = with_overrides(train_cfg, {"max_epochs": args.epochs})
    model_cfg = config_from_dict(ModelConfig, parts["model"], "model.json")
    market = bt.load_market(cfg) if cfg.panel is None else None
    storage = Path(args.storage_path) / f"{version_dir.parent.name}-{version_dir.name}-{time.strftime('%H%M%S')}"
    connect()
    lines: list[str] = []
    if args.seeds and cfg.panel is not None:
        raise ValueError("--seeds reports single-stock metrics; a panel model's spread comes from --walk-forward")
    if args.seeds:
        dataset = resolve_dataset(training, cfg, args.dataset)
        jobs = [{"name": f"seed{s}", "dataset": dataset, "model": model_cfg,
                 "train": with_overrides(train_cfg, {"seed": s})} for s in range(args.seeds)]
        runs = train_many(jobs, storage, cpus_per_worker=args.cpus_per_worker,
                          wait_s=args.wait_for_resources)
        result = evaluate_seeds(runs, Path(dataset), market, args.boot, args.cost_bps)
        atomic_write_text(out_dir / "seeds.json", json.dumps(clean(result), indent=2))
        lines += _spread_lines(f"\n{args.seeds} seeds, test split (mean and spread):", result["pooled_spread"])
        lines.append(f"  -> {out_dir / 'seeds.json'}")
    if args.walk_forward:
        datasets = fold_datasets(cfg, args.walk_forward, ROOT / "datasets" / "cache")
        # The architecture is the artifact's; shapes come from each fold's own dataset.
        shape_free = {k: v for k, v in parts["model"].items() if k not in ("n_features", "seq_len", "n_classes")}
        jobs = [{"name": f"fold{i}", "dataset": d, "train": train_cfg,
                 "model": model_config_from_metadata("v2", read_metadata(d), **shape_free)}
                for i, d in enumerate(datasets)]
        runs = train_many(jobs, storage, cpus_per_worker=args.cpus_per_worker,
                          wait_s=args.wait_for_resources)
        if cfg.panel is not None:
            from stocktrend.evaluation.panel_report import walk_forward_report

            result = walk_forward_report(runs, datasets, out_dir / "walk_forward", args.boot, args.cost_bps)
            lines += [f"\nwalk-forward, {args.walk_forward} folds, pooled test dates "
                      f"({result['test']['dates']} dates, {result['test']['windows']} windows):"]
            lines += [*pooled_lines(result), f"  -> {out_dir / 'walk_forward' / 'report.md'}"]
            return lines
        result = evaluate_walk_forward(runs, datasets, market, args.boot, args.cost_bps)
        atomic_write_text(out_dir / "walk_forward.json", json.dumps(clean(result), indent=2))
        lines += _spread_lines(f"\nwalk-forward, {args.walk_forward} folds (per-fold spread):", result["spread"])
        lines += [*pooled_lines(result), f"  -> {out_dir / 'walk_forward.json'}"]
    return lines
