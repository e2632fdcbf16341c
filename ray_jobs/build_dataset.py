"""Build the leakage-free training set from a dataset config and print its summary.

    python ray_jobs/build_dataset.py [--config datasets/msft_v2.yaml] [--protocol clean|seed] [--out DIR|URI] [--ray]

A panel of more than a couple of hundred instruments is built in passes over chunks of
instruments (the config's ``panel.build``); with ``--ray`` those passes run as Ray tasks on
the running head (or a local instance), so every core works and no process holds the universe.
A universe on object storage (a source path ``s3://...``) is read by tasks on every node of
the cluster; one on the driver's disk by tasks beside it.

--out s3://bucket/datasets publishes the dataset to ``<out>/<fingerprint>/`` (built in this
node's temp folder, uploaded with its metadata last; one already there is kept as it is), the
location `train.py --dataset` takes. The analysis plots are written for a local --out only.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from stocktrend import storage
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
    ap.add_argument("--out", help="output folder (default: datasets/npy next to the config), or object storage "
                                  "(s3://bucket/datasets: published under its fingerprint)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--ray", action="store_true",
                    help="run a streamed panel build's passes as Ray tasks (joins the running head, else starts one)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        cfg = load_data_config(args.config, protocol=args.protocol)
        t0 = time.perf_counter()
        if args.ray:
            from stocktrend.cluster.connect import connect

            connect()
        if args.out and storage.is_remote(args.out):
            from stocktrend.data.cache import build_published

            meta, published = build_published(cfg, args.out, progress=not args.quiet, use_ray=args.ray)
            print(describe(meta, published, time.perf_counter() - t0))
            return 0
        default_out = Path(cfg.base_dir) / "npy"
        out = Path(args.out).resolve() if args.out else default_out
        analysis = Path(cfg.base_dir) / "analysis" if not args.out else out / "analysis"
        meta = build_dataset(cfg, out, analysis_dir=analysis, progress=not args.quiet, use_ray=args.ray)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(describe(meta, out, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
