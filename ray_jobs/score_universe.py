"""The daily scoring job of a panel model: its whole universe's latest predictions, written as
a snapshot the Serve deployment answers by ticker (``POST /v1/predict/tickers``).

    python ray_jobs/score_universe.py --model models/<name> [--data-root datasets] [--as-of YYYY-MM-DD]
                                      [--days 5] [--out <model folder>/snapshots] [--ray]

The universe is the model's dataset config read under --data-root (its close panel, folder,
long CSV or Parquet table, and its membership table), as of today's files: run it after the
day's data lands. Each chunk of instruments is read by one task (--ray: Ray tasks on this
node; else one after the other here) keeping only the rows the features need, so memory
grows with the universe, not with its history. Writes ``<out>/<as_of>.json`` whole (a
local rename or one object PUT); a deployment serving the model loads it within its
``snapshot_poll_s``. --out may be s3://bucket/... .
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/<name> (follows 'latest') or a version folder; or "
                                                   "s3://bucket/models/<name>")
    ap.add_argument("--data-root", default=str(ROOT / "datasets"),
                    help="the folder the model's dataset config's relative paths start from (default: datasets/)")
    ap.add_argument("--universe", metavar="CONFIG", help="score the universe of this panel dataset config instead "
                                                         "of the model's (its files, listing and membership; it must "
                                                         "yield the model's features)")
    ap.add_argument("--as-of", help="last day to score (default: the last day every context source covers)")
    ap.add_argument("--days", type=int, default=1, help="trading days scored, ending on --as-of (requests may "
                                                        "ask for any of them with as_of)")
    ap.add_argument("--out", help="snapshot folder (default: the model folder's snapshots/)")
    ap.add_argument("--ray", action="store_true", help="read the universe's chunks as Ray tasks on this node")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from stocktrend import storage
    from stocktrend.config_io import ConfigError
    from stocktrend.data.config import load_data_config
    from stocktrend.data.errors import DataError
    from stocktrend.inference.artifact import MANIFEST, ArtifactError, local_model_dir
    from stocktrend.inference.predictor import InputError, Predictor
    from stocktrend.inference.snapshot import snapshots_of, write_snapshot
    from stocktrend.inference.universe_scoring import score_universe

    if args.as_of is not None:
        import datetime as dt

        try:
            dt.date.fromisoformat(args.as_of)
        except ValueError:
            print(f"error: --as-of: {args.as_of!r} is not a date as YYYY-MM-DD", file=sys.stderr)
            return 2
    given = args.model if storage.is_remote(args.model) else str(Path(args.model).resolve())
    folder = storage.parent(given) if storage.exists(storage.join(given, MANIFEST)) else given
    try:
        predictor = Predictor.from_artifact(local_model_dir(given))
        if args.ray:
            from stocktrend.cluster.connect import connect

            connect()
        universe = load_data_config(args.universe) if args.universe else None
        meta, columns = score_universe(predictor, args.data_root, as_of=args.as_of, days=args.days,
                                       use_ray=args.ray, progress=not args.quiet, universe=universe)
    except (ArtifactError, InputError, DataError, ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        where = write_snapshot(args.out or snapshots_of(folder), meta, columns)
    except OSError as err:  # nothing half-written: the file is renamed (or PUT) whole
        print(f"error: the snapshot could not be written to {args.out or snapshots_of(folder)}: {err}", file=sys.stderr)
        return 2
    print(f"{meta['scored']} of {meta['universe']} instruments scored on {meta['as_of']} "
          f"({len(meta['dates'])} day(s), {len(meta['left_out'])} left out) with "
          f"{meta['model']}/{meta['model_version']}: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
