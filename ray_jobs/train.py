"""Train a TrendNet preset on Ray Train workers and export the best epoch as a model artifact.

    python ray_jobs/train.py [--preset v2|v1|tiny] [--epochs N] [--num-workers N] [--use-gpu]
                             [--cpus-per-worker N] [--resources JSON] [--storage-path PATH|URI]
                             [--dataset PATH|URI] [--models PATH|URI] [--no-ray]

The dataset comes from --config (built once and cached under datasets/cache/<fingerprint>,
so a stale dataset is never trained on) or from an existing --dataset folder, local or on
object storage (s3://..., as `build_dataset.py --out s3://...` publishes it: every worker
fetches its own copy, and so does this driver for the export). Standalone, a local Ray is
started; under `ray job submit` it joins the cluster. --no-ray runs the same LightningModule
with plain Lightning (debugging; measuring Ray's overhead).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from stocktrend.models.config import PRESETS

    ap.add_argument("--preset", default="v2", choices=sorted(PRESETS),
                    help="network preset (tft: the Temporal-Fusion-style family)")
    ap.add_argument("--config", default=None, help="dataset YAML (default: datasets/msft_v2.yaml; msft_v1.yaml for --preset v1)")
    ap.add_argument("--dataset", help="use this built dataset (a folder, or object storage: s3://...) instead of --config")
    from stocktrend.training.config import RECIPES

    ap.add_argument("--recipe", default="default", choices=sorted(RECIPES),
                    help="training recipe (default: a 30-epoch budget the schedule spans, early stopping only after "
                         "the warm-up, val_auroc; reference: the write-up's 150-epoch OneCycle, patience 15, val_ce)")
    ap.add_argument("--epochs", type=int, help="max epochs: the budget the schedule spans (default: the recipe's)")
    ap.add_argument("--epoch-windows", type=int, help="training windows per epoch, a fresh draw each epoch "
                                                      "(default: all of them)")
    ap.add_argument("--batches", choices=["windows", "dates"],
                    help="training batches: any windows (default), or each one date's cross-section of a panel")
    ap.add_argument("--epoch-dates", type=int, help="with --batches dates: dates per epoch, a fresh draw each epoch")
    ap.add_argument("--rank-weight", type=float,
                    help="with --batches dates: weight of the rank-IC loss beside cross-entropy (default 0)")
    ap.add_argument("--batch-size", type=int, help="windows per batch (with --batches dates: at most, of one date)")
    ap.add_argument("--accumulate", type=int, help="gradient accumulation batches (recipe: 4)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--precision", choices=["32-true", "bf16-mixed"])
    ap.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (DDP when > 1)")
    ap.add_argument("--use-gpu", action="store_true")
    ap.add_argument("--cpus-per-worker", type=float,
                    help="CPUs (and torch threads) per worker (default: the free CPUs shared by the workers)")
    from stocktrend.cluster.resources import add_wait_flag, parse_resources

    ap.add_argument("--resources", type=parse_resources, default={}, metavar="JSON",
                    help='custom Ray resources each training worker holds (a node type), e.g. \'{"big_node": 1}\'')
    ap.add_argument("--storage-path", default=str(ROOT / "runs"),
                    help="Ray Train storage: a folder (absolute or relative) or object storage (s3://...)")
    ap.add_argument("--models", default=str(ROOT / "models"),
                    help="where model artifacts go: a folder, or object storage (s3://bucket/models)")
    ap.add_argument("--name", help="artifact name (default: <ticker>_<preset>)")
    ap.add_argument("--no-ray", action="store_true", help="plain Lightning, no Ray")
    add_wait_flag(ap)
    args = ap.parse_args(argv)
    from stocktrend import storage

    if args.no_ray and storage.is_remote(args.storage_path):
        ap.error("--no-ray writes its run to a local --storage-path")
    if args.no_ray and args.resources:
        ap.error("--resources asks Ray for a node type; --no-ray trains in this process")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from stocktrend import storage as storage_lib
    from stocktrend.config_io import config_to_dict
    from stocktrend.data.cache import build_cached
    from stocktrend.data.config import load_data_config
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.config import recipe
    from stocktrend.training.export import export_artifact

    overrides = {"max_epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                 "accumulate_grad_batches": args.accumulate, "precision": args.precision,
                 "epoch_windows": args.epoch_windows, "batches": args.batches, "epoch_dates": args.epoch_dates,
                 "rank_weight": args.rank_weight}
    try:
        train_cfg = recipe(args.recipe, **{k: v for k, v in overrides.items() if v is not None})
        if args.dataset:
            dataset = storage_lib.normalise(args.dataset)  # where the workers read it
            if storage_lib.is_remote(dataset) and not storage_lib.exists(storage_lib.join(dataset, "metadata.json")):
                # metadata.json is uploaded last: without it the folder is absent or half-written
                raise FileNotFoundError(f"no dataset at {dataset}: its metadata.json is missing (publish one with "
                                        "ray_jobs/build_dataset.py --out s3://...)")
        else:
            default = "msft_v1.yaml" if args.preset == "v1" else "msft_v2.yaml"
            cfg = load_data_config(args.config or ROOT / "datasets" / default)
            dataset = str(build_cached(cfg, ROOT / "datasets" / "cache"))
        local_dataset = storage_lib.fetch_dir(dataset, "datasets")  # this driver's copy, for the export
        meta = read_metadata(local_dataset)
    # pydantic's errors name the field (e.g. --rank-weight without --batches dates); a missing
    # dataset names the file and the command that builds it.
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model_cfg = model_config_from_metadata(args.preset, meta)
    name = args.name or f"{meta['ticker'].lower()}_{args.preset}"
    run_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = storage_lib.normalise(args.storage_path)

    t0 = time.perf_counter()
    if args.no_ray:
        from stocktrend.training.fit_local import fit_local

        res = fit_local(local_dataset, model_cfg, train_cfg, Path(storage) / run_name)
        checkpoint, history, engine = res["best_checkpoint"], res["history"], "lightning"
    else:
        from stocktrend.cluster.connect import connect
        from stocktrend.cluster.resources import Ask, ResourcesUnavailable, cpus_per_unit, require
        from stocktrend.training.ray_train import ray_train

        connect()
        cpus = args.cpus_per_worker or cpus_per_unit(args.num_workers)
        ask = Ask("training", {"CPU": cpus, "GPU": 1.0 if args.use_gpu else 0.0, **args.resources}, args.num_workers,
                  hint="--cpus-per-worker N, fewer --num-workers")
        try:
            require(ask, args.wait_for_resources)
        except ResourcesUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        log.info("training on %s", ask.describe())
        res = ray_train(dataset, model_cfg, train_cfg, storage, run_name, num_workers=args.num_workers,
                        use_gpu=args.use_gpu, cpus_per_worker=cpus, resources=args.resources)
        checkpoint, history, engine = res["checkpoint"], res["history"], f"ray-train x{args.num_workers}"
    seconds = time.perf_counter() - t0

    remote_models = storage_lib.is_remote(args.models)
    models = storage_lib.scratch("models-staged") if remote_models else args.models  # published whole below
    artifact = export_artifact(checkpoint, local_dataset, models, name, history=history,
                               extra={"engine": engine, "train_seconds": round(seconds, 1), "run": run_name})
    from stocktrend.inference.artifact import load_parts

    _, _, parts = load_parts(artifact)
    val = parts["training"]["val_metrics"]
    print(f"\ntrained {args.preset} ({engine}) in {seconds:.0f} s on {dataset}")
    print(f"model artifact: {artifact}")
    if remote_models:
        from stocktrend.training.export import publish_artifact

        print(f"model artifact published: {publish_artifact(artifact, args.models)}")
    print(f"best epoch {parts['training']['best_epoch']} by {train_cfg.selection_metric}: "
          + ", ".join(f"{k}={val[k]:.4f}" for k in ("val_ce", "val_acc", "val_auroc", "val_mcc", "val_f1") if k in val))
    print(f"model config: {config_to_dict(model_cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
