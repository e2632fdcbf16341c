"""What a panel dataset costs to build as the universe grows: wall time and peak memory per
layout and size, each build in a fresh process (so its peak resident memory is its own).

    python bench/panel_scale.py [--sizes 20,100,400] [--layouts close_panel,long,parquet] [--days 3780]
        [--out bench/results/panel_scale.json]

Markets come from the known-answer generator (``stocktrend.data.synthetic``: factor returns
calibrated on the shipped panel, null plant), written in the layouts users bring, and are
built by the real builder (``data.build.build_dataset``) from their generated config. The
child reports the seconds spent reading the files into members (``data.panel.read_members``)
apart from the whole build, because a long file's read was the part that grew with the
square of the universe. Run another checkout's code with ``PYTHONPATH=<its src>`` to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

FILES = {"close_panel": "closes.csv", "long": "long.csv", "parquet": "long.parquet"}  # one file per layout
CHILD = """
import json, resource, sys, time
from stocktrend.data import panel
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config

read = [0.0]
real = panel.read_members
def timed(*a, **k):
    t = time.perf_counter()
    try:
        return real(*a, **k)
    finally:
        read[0] += time.perf_counter() - t
panel.read_members = timed
t0 = time.perf_counter()
meta = build_dataset(load_data_config(sys.argv[1]), sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t0, "read_seconds": read[0],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "instruments": len(meta["tickers"]), "windows": sum(s["n"] for s in meta["splits"].values())}))
"""


def build_once(config: Path, out: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, str(config), str(out)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"build of {config} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20,100,400", help="instruments per market, comma-separated")
    ap.add_argument("--layouts", default="close_panel,long,parquet", help="from close_panel, yahoo, long, parquet")
    ap.add_argument("--days", type=int, default=3780, help="trading days of history (3780: 15 years)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "panel_scale.json"))
    args = ap.parse_args()
    from stocktrend.data.synthetic import MarketSpec, generate
    from stocktrend.data.synthetic_files import write_market

    sizes = [int(x) for x in args.sizes.split(",")]
    layouts = tuple(args.layouts.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            market = generate(MarketSpec(instruments=n, days=args.days, seed=0))
            files = Path(tmp) / f"m{n}"
            write_market(market, files, layouts)
            written = time.perf_counter() - t0
            for layout in layouts:
                row = {"instruments": n, "layout": layout, "days": args.days, "generate_seconds": written,
                       "file_mib": (files / FILES[layout]).stat().st_size / 2**20 if layout in FILES else None,
                       **build_once(files / f"{layout}.yaml", Path(tmp) / f"d{n}-{layout}")}
                row["seconds_per_instrument"] = row["seconds"] / n
                rows.append(row)
                print(f"{n:5d} {layout:12s} build {row['seconds']:6.1f} s (reading {row['read_seconds']:5.1f} s), "
                      f"peak {row['peak_rss_mib']:7.0f} MiB", flush=True)
    result = {"benchmark": "panel_scale", "machine": machine_info(), "rows": rows,
              "command": "python bench/panel_scale.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
