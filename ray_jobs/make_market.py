"""Write a synthetic market with a known answer: daily prices from a factor model calibrated on
the shipped 20-stock panel, with a signal of chosen strength planted in them (or none).

    python ray_jobs/make_market.py --out datasets/synthetic/temporal --plant temporal --ic 0.05
        [--instruments 50] [--years 15] [--target panel|single] [--layouts close_panel,yahoo,long]
        [--seed 0]
    python ray_jobs/build_dataset.py --config datasets/synthetic/temporal/close_panel.yaml

Writes the instruments' files in each layout the readers take (a wide close panel, a folder of
Yahoo-layout CSVs, a long CSV with a ticker column), synthetic context series (index, rate
curve, oil), a dataset config per layout, and market.json: the spec, the calibration figures,
and the planted score's realised strength (rank IC, or AUROC for one instrument) to print
beside what a model recovers. See stocktrend.data.synthetic.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from stocktrend.data.synthetic import LAYOUTS, PLANTS, TARGETS, MarketError, MarketSpec, generate
from stocktrend.data.synthetic_files import check_layouts, write_market

TRADING_DAYS_PER_YEAR = 252


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write the market into")
    ap.add_argument("--plant", default="null", help=f"planted signal: {', '.join(PLANTS)}")
    ap.add_argument("--ic", type=float, default=0.0, help="its population correlation with the forward return")
    ap.add_argument("--instruments", type=int, default=50)
    ap.add_argument("--years", type=float, default=15.0, help=f"history length ({TRADING_DAYS_PER_YEAR} days a year)")
    ap.add_argument("--start", default="2003-01-02", help="first trading day")
    ap.add_argument("--horizon", type=int, default=5, help="days ahead the plant acts on (the label's horizon)")
    ap.add_argument("--target", default="panel", help=f"{' or '.join(TARGETS)} (one instrument's direction)")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated: {', '.join(LAYOUTS)}")
    ap.add_argument("--churn", type=float, default=0.2, help="share of instruments that list late or delist early")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = MarketSpec(instruments=args.instruments, days=int(round(args.years * TRADING_DAYS_PER_YEAR)),
                      start=args.start, plant=args.plant, ic=args.ic, horizon=args.horizon, target=args.target,
                      churn=args.churn, seed=args.seed)
    layouts = tuple(x.strip() for x in args.layouts.split(",") if x.strip())
    try:
        check_layouts(layouts)
        spec.check()
        market = generate(spec)
        written = write_market(market, args.out, layouts)
    except MarketError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"out": args.out, "files": {k: str(v) for k, v in written.items()},
                      "configs": [f"{args.out}/{layout}.yaml" for layout in written], "realised": market.realised},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
