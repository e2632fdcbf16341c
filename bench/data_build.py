"""Dataset build time and peak memory (each build in a fresh process, so peak RSS is its own).

    python bench/data_build.py [--repeats 3]  ->  bench/results/data_build.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

CHILD = """
import json, resource, sys, tempfile, time
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
t0 = time.perf_counter()
cfg = load_data_config(sys.argv[1])
meta = build_dataset(cfg, tempfile.mkdtemp() + "/npy")
seconds = time.perf_counter() - t0
n = sum(s["n"] for s in meta["splits"].values())
print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "windows": n, "candidates": meta["features"]["n_candidates"]}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = {"benchmark": "data_build", "configs": {}, "machine": machine_info()}
    for name in ("msft_v2", "msft_v1", "msft_v2_1999"):
        runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "datasets" / f"{name}.yaml")],
                                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
                for _ in range(args.repeats)]
        out["configs"][name] = {"seconds_median": statistics.median(r["seconds"] for r in runs),
                                "peak_rss_mib_max": max(r["peak_rss_mib"] for r in runs),
                                "windows": runs[0]["windows"], "candidates": runs[0]["candidates"],
                                "repeats": args.repeats}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "data_build.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
