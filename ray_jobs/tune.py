"""Search data, architecture and regularisation with Ray Tune + Optuna (ASHA early stopping),
then export the best trial as a model artifact and evaluate it once on the test split.

    python ray_jobs/tune.py --space search_spaces/quick.yaml [--num-samples N] [--max-concurrent N]
        [--search optuna|random] [--scheduler asha|fifo] [--metric val_ce|val_auroc --mode min|max]
        [--cpus-per-trial N] [--gpus-per-trial F] [--resources JSON] [--storage-path PATH|URI]
        [--models PATH|URI] [--name NAME] [--resume] [--walk-forward K] [--record JSON]

Standalone it starts a local Ray (dashboard on 127.0.0.1:8265); under
`ray job submit -- python ray_jobs/tune.py ...` it joins the cluster. Trials are chosen on
the validation split only; the test split is scored once, after the choice.

--walk-forward K (or the space's `evaluation: {walk_forward: K}`) nests the search: one
search per expanding-window fold, each choosing its configuration and epoch on validation
dates that end a purge gap before its own test block; the K test blocks are pooled into one
report with every fold's choice (`src/stocktrend/tuning/nested.py`). The exported model is
the last fold's choice. `--walk-forward 0` runs one search on the space's own split.

On a cluster of several nodes, --storage-path and --models name storage every node reaches
(a shared file system, or object storage such as s3://bucket/prefix): trials and training
workers read nothing from this machine's disk (docs/CONTAINERS.md, "More than one node").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "quick.yaml"), help="search space YAML")
    ap.add_argument("--num-samples", type=int, help="trials (default: the space file's)")
    ap.add_argument("--max-concurrent", type=int, help="trials at once (default: the space file's)")
    ap.add_argument("--search", choices=["optuna", "random"], default="optuna")
    ap.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    ap.add_argument("--metric", choices=["val_ce", "val_auroc"],
                    help="the one selection metric (checkpointing, early stopping, search, export); default: the "
                         "space's train.selection_metric, else the recipe's (val_auroc)")
    ap.add_argument("--mode", choices=["min", "max"], help="must agree with --metric (val_ce: min, val_auroc: max)")
    ap.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs of each trial's training worker")
    ap.add_argument("--gpus-per-trial", type=float, default=0, help="fractional GPUs pack trials on a card")
    from stocktrend.cluster.resources import add_wait_flag, parse_resources

    ap.add_argument("--resources", type=parse_resources, default={}, metavar="JSON",
                    help='custom Ray resources each trial and its training worker hold, e.g. \'{"gpu_node": 1}\'')
    ap.add_argument("--max-failures", type=int, default=1, help="retries of a failed trial / worker group")
    ap.add_argument("--seed", type=int, help="searcher seed (default: the space file's)")
    ap.add_argument("--storage-path", default=str(ROOT / "runs" / "tune"),
                    help="experiment storage (shared storage such as s3:// or NFS on a multi-node cluster)")
    ap.add_argument("--cache-root", default=str(ROOT / "datasets" / "cache"),
                    help="this machine's dataset cache (export, test report); trials cache theirs in the storage path")
    ap.add_argument("--models", default=str(ROOT / "models"),
                    help="where the best model artifact goes (a folder, or object storage: s3://bucket/models)")
    ap.add_argument("--model-name", help="artifact name (default: <ticker>_<space>)")
    ap.add_argument("--name", help="experiment name (required with --resume)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted experiment --name")
    ap.add_argument("--no-evaluate", action="store_true", help="skip the test-split report")
    ap.add_argument("--walk-forward", type=int, metavar="K",
                    help="nested walk-forward: a search per fold, K folds (default: the space's evaluation."
                         "walk_forward; 0: one search)")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the nested report's intervals")
    ap.add_argument("--record", metavar="JSON",
                    help="also write the nested report, with this machine's description, to JSON (a benchmark result)")
    ap.add_argument("--mlflow", nargs="?", const="", metavar="URI",
                    help="track every trial in MLflow (default store: <storage-path>/mlflow.db; needs the mlflow extra)")
    add_wait_flag(ap)
    ap.add_argument("--kill-worker-at-epoch", type=int, help=argparse.SUPPRESS)  # fault injection (tests)
    args = ap.parse_args(argv)
    if args.resume and not args.name:
        ap.error("--resume needs --name of the experiment to continue")
    if args.walk_forward is not None and args.walk_forward < 0:
        ap.error(f"--walk-forward must be 0 (one search) or a number of folds, got {args.walk_forward}")
    if args.mode and args.metric and args.mode != {"val_ce": "min", "val_auroc": "max"}[args.metric]:
        ap.error(f"--mode {args.mode} contradicts --metric {args.metric}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from stocktrend import storage as storage_lib
    from stocktrend.cluster.connect import connect
    from stocktrend.cluster.resources import ResourcesUnavailable
    from stocktrend.config_io import ConfigError, with_overrides
    from stocktrend.training.config import selection_mode
    from stocktrend.tuning.run import SearchOptions, best_trial, export_best, fit_concurrency, run_search
    from stocktrend.tuning.space import load_space
    from stocktrend.tuning.summary import write_summary

    try:
        space = load_space(args.space)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metric = args.metric or space.train.selection_metric
    if args.mode and args.mode != selection_mode(metric):
        print(f"error: --mode {args.mode} contradicts the selection metric {metric}", file=sys.stderr)
        return 2
    space = dataclasses.replace(space, train=with_overrides(space.train, {"selection_metric": metric}))
    opts = SearchOptions(search=args.search, scheduler=args.scheduler, num_samples=args.num_samples,
                         max_concurrent=args.max_concurrent, metric=metric, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, resources=args.resources,
                         max_failures=args.max_failures, seed=args.seed,
                         kill_worker_at_epoch=args.kill_worker_at_epoch)
    name = args.name or f"{space.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = storage_lib.normalise(args.storage_path)  # a folder or an object-storage URI
    if args.mlflow is not None:
        from stocktrend.tuning.tracking import default_uri

        if not args.mlflow and storage_lib.is_remote(storage):
            print("error: --mlflow needs a tracking URI when --storage-path is object storage", file=sys.stderr)
            return 2
        opts = dataclasses.replace(opts, tracking_uri=args.mlflow or default_uri(Path(storage)))
    cache = Path(args.cache_root).resolve()

    connect()
    if not args.resume:
        try:
            opts = fit_concurrency(space, opts, args.wait_for_resources)
        except ResourcesUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    folds = space.walk_forward if args.walk_forward is None else args.walk_forward
    if folds:
        if args.resume:
            print("error: --resume continues one search; a nested walk-forward is rerun (its searches are short)",
                  file=sys.stderr)
            return 2
        return nested(args, space, opts, storage, name, cache, folds)
    t0 = time.perf_counter()
    from stocktrend.tuning.tracking import TrackingUnavailable

    try:
        results = run_search(space, opts, storage, name, cache, resume=args.resume)
    except TrackingUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    minutes = (time.perf_counter() - t0) / 60
    summary = storage_lib.join(storage, name, "summary")
    with storage_lib.staged(summary) as folder:
        table = write_summary(results, space, metric, folder)
    if results.num_errors == len(results):
        print(f"error: all {len(results)} trials failed; see {storage_lib.join(storage, name)}", file=sys.stderr)
        return 1

    best = best_trial(results, metric)
    model_name = args.model_name or f"{space.data.ticker.lower()}_{space.path.stem}"
    # On object storage the artifact is written here first, evaluated, then published whole.
    models = Path(args.models) if not storage_lib.is_remote(args.models) else storage_lib.scratch("models-staged")
    artifact = export_best(results, space, metric, storage_lib.join(storage, name), cache, models, model_name)
    print(f"\nsearch {name}: {len(results)} trials ({results.num_errors} failed) in {minutes:.1f} min "
          f"[{args.search} + {args.scheduler}]")
    cols = [c for c in ("trial_id", "status", "epochs", f"best_{metric}", "val_auroc@best", "val_acc@best")
            if c in table]
    print(table[cols].head(8).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"best trial {best['trial_id']} (epoch {best['epoch']}, {metric}={best['score']:.4f}): {best['config']}")
    from stocktrend.tuning.summary import choices_table

    choices = choices_table(table, space, metric)
    if not choices.empty:  # which family / cell / weight won on validation
        print("searched choices on validation:")
        print(choices.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"summary: {summary}")
    print(f"model artifact: {artifact}")
    if not args.no_evaluate:
        from stocktrend.evaluation.report import evaluate_artifact, summary_lines

        report = evaluate_artifact(artifact, dataset_dir=None)
        print("\n".join(summary_lines(report)))
    published = None
    if storage_lib.is_remote(args.models):  # whole, with its report, `latest` moved last
        from stocktrend.training.export import publish_artifact

        published = publish_artifact(artifact, args.models)
        print(f"model artifact published: {published}")
        import shutil

        shutil.rmtree(artifact, ignore_errors=True)  # the staged copy
    if opts.tracking_uri:
        from stocktrend.tuning.tracking import tag_artifact

        run_id = tag_artifact(opts.tracking_uri, name, best["trial_id"], published or artifact)
        print(f"MLflow: experiment {name!r} at {opts.tracking_uri} (best trial's run {run_id})")
    return 0


def nested(args: argparse.Namespace, space, opts, storage: str, name: str, cache: Path, folds: int) -> int:
    """The nested walk-forward (``tuning.nested``), then the last fold's choice exported."""
    from stocktrend import storage as storage_lib
    from stocktrend.tuning.nested import nested_walk_forward, summary_lines
    from stocktrend.tuning.run import export_best

    try:
        result = nested_walk_forward(space, opts, storage, name, cache, folds, n_boot=args.boot)
    except RuntimeError as err:  # every trial of a fold failed
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(summary_lines(result)))
    if args.record:
        sys.path.insert(0, str(ROOT / "bench"))
        from machine import machine_info

        from stocktrend.data.store import atomic_write_text

        command = " ".join(["python ray_jobs/tune.py", *(sys.argv[1:])])
        atomic_write_text(Path(args.record), json.dumps({**result["report"], "command": command,
                                                         "machine": machine_info()}, indent=2, default=float))
        print(f"recorded: {args.record}")
    fold_space, results, experiment = result["last"]
    model_name = args.model_name or f"{space.data.ticker.lower()}_{space.path.stem}"
    models = Path(args.models) if not storage_lib.is_remote(args.models) else storage_lib.scratch("models-staged")
    artifact = export_best(results, fold_space, opts.metric, experiment, cache, models, model_name,
                           extra={"nested_walk_forward": storage_lib.join(result["location"], "nested.json")})
    print(f"model artifact (the last fold's choice; its test split is that fold's block): {artifact}")
    if storage_lib.is_remote(args.models):
        from stocktrend.training.export import publish_artifact

        print(f"model artifact published: {publish_artifact(artifact, args.models)}")
        import shutil

        shutil.rmtree(artifact, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
