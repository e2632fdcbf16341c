"""Compare network families on a panel's walk-forward folds, through Ray Train, honestly.

    python ray_jobs/compare_families.py [--config datasets/stocks20.yaml] [--preset tiny]
        [--candidates v2,v2-gru,v2+vol,tft,tft+vol] [--folds 3] [--epochs 3]
        [--start 2004-01-02] [--seq-len 20] [--n-features 30] [--out runs/families] [--record JSON]

Candidates (evaluation/families.py): v2 (the reference's CNN -> BiLSTM -> Transformer
topology at the preset's size), v2-gru (its GRU cell), v2+vol (with the volatility head),
tft and tft+vol (the Temporal-Fusion-style family). Every candidate trains on the same folds
(the dataset carries the volatility target for all of them; direction-only candidates ignore
it), each fold's dataset fitted on its own training window. The report ranks them by mean
rank IC on the pooled test dates against the v2 topology and the simple rule each fold's
validation dates chose (StepM over every pair, paired intervals beside), says which
validation would have chosen, and scores the multi-task
candidates' volatility forecasts against the trailing baseline. Standalone it starts a local
Ray; under `ray job submit` it joins the cluster.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("compare_families")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from stocktrend.cluster.resources import add_wait_flag
    from stocktrend.evaluation.families import CANDIDATES
    from stocktrend.models.config import PRESETS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "datasets" / "stocks20.yaml"), help="a panel dataset YAML")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="the size every candidate has")
    ap.add_argument("--candidates", default=",".join(CANDIDATES),
                    help=f"comma-separated, from {', '.join(CANDIDATES)} (v2 is required: the reference)")
    ap.add_argument("--folds", type=int, default=3, help="walk-forward folds (expanding training windows)")
    ap.add_argument("--epochs", type=int, default=3, help="max epochs of each run")
    ap.add_argument("--start", type=dt.date.fromisoformat, help="ignore days before this date (ISO)")
    ap.add_argument("--seq-len", type=int, help="window length (default: the config's)")
    ap.add_argument("--n-features", type=int, help="selected features (default: the config's)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3, help="where the one-cycle schedule starts")
    ap.add_argument("--max-lr", type=float, default=5e-3, help="its peak")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--cpus-per-worker", type=float, default=1)
    ap.add_argument("--cache-root", default=str(ROOT / "datasets" / "cache"))
    ap.add_argument("--storage-path", default=str(ROOT / "runs" / "families"), help="Ray Train runs")
    ap.add_argument("--out", help="report folder (default: <storage-path>/report-<time>)")
    ap.add_argument("--record", metavar="JSON", help="also write the report with this machine's description and the "
                                                      "settings there (bench/results/family_comparison.json feeds "
                                                      "docs/BENCHMARKS.md)")
    add_wait_flag(ap)
    args = ap.parse_args(argv)
    args.candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [c for c in args.candidates if c not in CANDIDATES]
    if unknown or "v2" not in args.candidates:
        ap.error(f"--candidates: unknown {unknown}" if unknown else "--candidates must include v2 (the reference)")
    if args.folds < 1 or args.epochs < 1:
        ap.error("--folds and --epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from stocktrend.cluster.connect import connect
    from stocktrend.cluster.resources import ResourcesUnavailable
    from stocktrend.config_io import with_overrides
    from stocktrend.data.config import load_data_config
    from stocktrend.data.store import read_metadata
    from stocktrend.evaluation.core import ci_text, fmt
    from stocktrend.evaluation.families import CANDIDATES, compare_families
    from stocktrend.evaluation.repeated import fold_datasets
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.config import TrainConfig
    from stocktrend.training.repeat import train_many

    cfg = load_data_config(args.config)
    if cfg.panel is None:
        print(f"error: {args.config} is a single-stock dataset; the comparison ranks instruments, it needs a panel",
              file=sys.stderr)
        return 2
    overrides = {"auxiliary": "volatility", "start": args.start, "seq_len": args.seq_len, "n_features": args.n_features}
    cfg = with_overrides(cfg, {k: v for k, v in overrides.items() if v is not None})
    datasets = fold_datasets(cfg, args.folds, Path(args.cache_root))
    base_train = TrainConfig(max_epochs=args.epochs, batch_size=args.batch_size, accumulate_grad_batches=1,
                             lr=args.lr, max_lr=args.max_lr, seed=args.seed)
    jobs = []
    for name in args.candidates:
        spec = CANDIDATES[name]
        train = with_overrides(base_train, {"aux_weight": spec["aux_weight"]})
        for i, d in enumerate(datasets):
            model = model_config_from_metadata(args.preset, read_metadata(d), **spec["model"],
                                               volatility_head=spec["aux_weight"] > 0)
            jobs.append({"name": f"{name}-fold{i}", "candidate": name, "dataset": d, "model": model, "train": train})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    connect()
    t0 = time.perf_counter()
    try:
        results = train_many(jobs, Path(args.storage_path) / stamp, cpus_per_worker=args.cpus_per_worker,
                             wait_s=args.wait_for_resources)
    except ResourcesUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runs: dict[str, list[dict]] = {n: [] for n in args.candidates}
    for job, res in zip(jobs, results):
        runs[job["candidate"]].append(res)
    out = Path(args.out) if args.out else Path(args.storage_path) / f"report-{stamp}"
    minutes = (time.perf_counter() - t0) / 60
    report = compare_families(runs, datasets, out, n_boot=args.boot, seed=args.seed)
    print(f"\n{len(jobs)} runs ({len(args.candidates)} candidates x {args.folds} folds, preset {args.preset}) "
          f"in {minutes:.1f} min")
    if args.record:
        settings = {"command": " ".join(["python ray_jobs/compare_families.py", *(argv if argv is not None else
                                                                                  sys.argv[1:])]),
                    "folds": args.folds, "epochs": args.epochs, "preset": args.preset, "minutes": minutes}
        record(report, settings, Path(args.record))
    for n, e in report["scores"].items():
        print(f"  {n:20s} mean rank IC {ci_text(e['mean_rank_ic'], '+.4f')}"
              + (f"  val CE {fmt(e['mean_val_ce'], '.4f')}" if "mean_val_ce" in e else ""))
    print(report["verdict"])
    for line in report["volatility_verdicts"]:
        print("  " + line)
    print(f"report: {out / 'report.md'}")
    return 0


def record(report: dict, settings: dict, path: Path) -> None:
    """The report as a benchmark result: with the machine it ran on and how it was run."""
    import json

    sys.path.insert(0, str(ROOT / "bench"))
    from machine import machine_info

    from stocktrend.data.store import atomic_write_text

    atomic_write_text(path, json.dumps({**report, "machine": machine_info(), "settings": settings}, indent=2,
                                       default=float))


if __name__ == "__main__":
    sys.exit(main())
