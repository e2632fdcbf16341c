"""Offline batch scoring with Ray Data: a prediction for every day of a CSV of daily bars.

    python ray_jobs/predict.py --model models/<name> --input bars.csv --output predictions.csv
                               [--source NAME=PATH ...] [--backend onnx] [--batch-size 256]
                               [--concurrency N] [--start YYYY-MM-DD] [--end YYYY-MM-DD]

--input holds the target's bars laid out like the model's target source file (same
columns). The model's context sources (index, other stocks, rates, oil) come from the
files its dataset config names, or from --source NAME=PATH. Features are computed once
by the same code as training and serving (causal: a day's features use rows up to that
day only, so scoring all days at once equals scoring each day alone); windows are then
scored in parallel by a pool of Ray Data actors, each holding one Predictor. Writes
date, p_down, p_up, direction, confidence for every day with the history the model
needs (its bars_needed rows up to that day), atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/<name> (follows 'latest') or a version folder; or s3://bucket/models/<name>")
    ap.add_argument("--input", required=True, help="CSV of the target's daily bars (the target source's layout)")
    ap.add_argument("--output", required=True, help="predictions CSV to write")
    ap.add_argument("--source", action="append", default=[], metavar="NAME=PATH", help="replace a context source's file")
    ap.add_argument("--backend", default="torch", help="torch | bf16 | torch-int8 | onnx | onnx-int8")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=2, help="scoring actors")
    ap.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per scoring actor")
    ap.add_argument("--start", help="first day to score")
    ap.add_argument("--end", help="last day to score")
    ap.add_argument("-v", "--verbose", action="store_true")
    from stocktrend.cluster.resources import add_wait_flag

    add_wait_flag(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import pandas as pd

    from stocktrend import storage
    from stocktrend.data.errors import DataError
    from stocktrend.data.store import atomic_write_text
    from stocktrend.inference.artifact import MANIFEST, ArtifactError, local_model_dir
    from stocktrend.inference.predictor import InputError, Predictor
    from stocktrend.serving.batch import WindowScorer

    try:
        predictor = Predictor.from_artifact(local_model_dir(args.model))
        cfg = predictor.data_cfg
        if cfg.panel is not None:
            raise InputError("--model", "a panel model scores the windows of its dataset (ray_jobs/evaluate.py); "
                                        "this command scores one stock's bars")
        paths = {name: ROOT / "datasets" / spec.path for name, spec in cfg.sources.items()}
        paths[cfg.target] = Path(args.input)
        for item in args.source:
            name, _, path = item.partition("=")
            if name not in cfg.sources or not path:
                raise InputError("--source", f"{item!r}: expected NAME=PATH with NAME one of {sorted(cfg.sources)}")
            paths[name] = Path(path)
        raw = {}
        for name, path in paths.items():
            if not path.is_file():
                raise InputError(name, f"file not found: {path}")
            raw[name] = pd.read_csv(path, dtype=str, keep_default_na=False)
        values, days = predictor.scaled_features(raw)
    except (ArtifactError, InputError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # A day is scored only with the model's full history behind it (the long moving averages
    # and EWM burn-in it was trained with); earlier days would get features it never saw.
    ends = predictor.window_ends(values)
    ends = ends[ends >= predictor.bars_needed - 1]
    keep = np.ones(len(ends), bool)
    if args.start:
        keep &= days[ends] >= pd.Timestamp(args.start)
    if args.end:
        keep &= days[ends] <= pd.Timestamp(args.end)
    ends = ends[keep]
    if len(ends) == 0:
        print(f"error: no day in range has a full window of features and {predictor.bars_needed} bars of history "
              f"({args.input} has {len(days)} usable days)", file=sys.stderr)
        return 2

    import ray

    from stocktrend.cluster.connect import connect
    from stocktrend.cluster.resources import Ask, ResourcesUnavailable, require, units_that_fit

    connect()
    per_actor = {"CPU": args.num_cpus}
    try:
        require(Ask("batch scoring", per_actor, 1, "scoring actor", hint="--num-cpus F, --concurrency N"),
                args.wait_for_resources)
    except ResourcesUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    actors = min(args.concurrency, units_that_fit(per_actor))
    ds = ray.data.from_items([{"end": int(e)} for e in ends])
    # The scoring actors open this very version, from storage every node reaches.
    version_location = str(predictor.version_dir)
    if storage.is_remote(args.model):
        is_version = storage.exists(storage.join(args.model, MANIFEST))
        version_location = args.model if is_version else storage.join(args.model, predictor.version)
    scored = ds.map_batches(
        WindowScorer, batch_size=args.batch_size, num_cpus=args.num_cpus,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
        fn_constructor_kwargs={"model": version_location, "backend": args.backend,
                               "threads": max(1, int(args.num_cpus)), "values": ray.put(values)},
    ).to_pandas().sort_values("end")
    out = pd.DataFrame({
        "date": [str(d.date()) for d in days[scored["end"].to_numpy()]],
        "p_down": scored["p_down"].to_numpy(), "p_up": scored["p_up"].to_numpy(),
    })
    out["direction"] = np.where(out["p_up"] > out["p_down"], "up", "down")
    out["confidence"] = out[["p_up", "p_down"]].max(axis=1)
    out["model_version"] = predictor.version
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.output), out.to_csv(index=False))
    print(f"{len(out)} days scored ({out['date'].iloc[0]} to {out['date'].iloc[-1]}) with "
          f"{predictor.name}/{predictor.version}: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
