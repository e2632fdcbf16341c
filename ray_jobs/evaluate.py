"""Evaluate a model artifact honestly on its test split and write a report next to it.

    python ray_jobs/evaluate.py --model models/<name>[/<version>] [--dataset DIR] [--boot N]
                                [--cost-bps X] [--staggered] [--seed S] [--out DIR]
                                [--seeds N] [--walk-forward K] [--epochs E]

--seeds N retrains the artifact's model and recipe with N seeds, --walk-forward K on K
expanding windows (each fold's dataset built and fitted on its own training window),
through Ray Train, several at once where CPUs allow; the report gives every run's test
metrics, their mean and spread, and for walk-forward the pooled out-of-sample figures.

Writes report.json, report.md, predictions.csv and PNG plots into
<version>/evaluation/ (or --out) and prints a short summary. Test metrics carry 95%
block-bootstrap intervals; baselines are compared with paired intervals; the backtest
trades on prices with costs. Needs no Ray: the dataset the model was trained on is
located with --dataset (its fingerprint is checked) or rebuilt from the artifact's data
config into datasets/cache/.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/<name> (follows 'latest') or a version folder")
    ap.add_argument("--dataset", help="the built dataset folder the model was trained on (default: rebuild/cache)")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--cost-bps", type=float, default=5.0, help="transaction cost per side in bps (default 5)")
    ap.add_argument("--staggered", action="store_true", help="h overlapping tranches instead of non-overlapping holds")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the fitted baselines")
    ap.add_argument("--out", help="report folder (default: <version>/evaluation)")
    ap.add_argument("--seeds", type=int, help="retrain with N seeds (Ray Train) and report mean and spread")
    ap.add_argument("--walk-forward", type=int, metavar="K", help="retrain on K expanding windows (Ray Train)")
    ap.add_argument("--epochs", type=int, help="max epochs of retraining (default: the artifact's recipe)")
    ap.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs of each retraining run's worker")
    ap.add_argument("--storage-path", default=str(Path(__file__).resolve().parents[1] / "runs" / "evaluate"))
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress")
    from stocktrend.cluster.resources import add_wait_flag

    add_wait_flag(ap)
    args = ap.parse_args(argv)
    if args.boot < 10:
        ap.error("--boot must be at least 10")
    if args.cost_bps < 0:
        ap.error("--cost-bps must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from stocktrend.data.errors import DataError
    from stocktrend.evaluation.report import EvaluationError, evaluate_artifact, summary_lines
    from stocktrend.inference.artifact import ArtifactError

    try:
        report = evaluate_artifact(Path(args.model), args.dataset, args.out, n_boot=args.boot, seed=args.seed,
                                   cost_bps=args.cost_bps, staggered=args.staggered)
    except (EvaluationError, ArtifactError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    print(f"report: {report['files']['markdown']} (and report.json, plots) in {Path(report['files']['json']).parent}")
    if args.seeds or args.walk_forward:
        from stocktrend.cluster.resources import ResourcesUnavailable
        from stocktrend.evaluation.retrain_report import retrain_and_report

        try:
            lines = retrain_and_report(Path(args.model), args, Path(report["files"]["json"]).parent)
        except (ResourcesUnavailable, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
