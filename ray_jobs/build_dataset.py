"""Build the leakage-free training set from a dataset config and print its summary.

    python ray_jobs/build_dataset.py [--config datasets/msft_v2.yaml] [--protocol clean|seed] [--out DIR] [--ray]

A panel of more than a couple of hundred instruments is built in passes over chunks of
instruments (the config's ``panel.build``); with ``--ray`` those passes run as Ray tasks on
the running head (or a local instance), so every core works and no process holds the universe.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from stocktrend.config_io import ConfigError
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.errors import DataError
from stocktrend.data.summary import describe

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "datasets" / "msft_v2.yaml"), help="dataset YAML file")
    ap.add_argument("--protocol", choices=["clean", "seed"], help="override the config's protocol (seed = leaky reference)")
    ap.add_argument("--out", help="output folder (default: datasets/npy next to the config)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--ray", action="store_true",
                    help="run a streamed panel build's passes as Ray tasks (joins the running head, else starts one)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        cfg = load_data_config(args.config, protocol=args.protocol)
        default_out = Path(cfg.base_dir) / "npy"
        out = Path(args.out).resolve() if args.out else default_out
        analysis = Path(cfg.base_dir) / "analysis" if not args.out else out / "analysis"
        t0 = time.perf_counter()
        if args.ray:
            from stocktrend.cluster.connect import connect

            connect()
        meta = build_dataset(cfg, out, analysis_dir=analysis, progress=not args.quiet, use_ray=args.ray)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(describe(meta, out, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
