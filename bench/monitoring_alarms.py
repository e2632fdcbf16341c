"""How often the drift alert fires when nothing drifted, and how often it catches a shift.

    python bench/monitoring_alarms.py [--draws 2000] [--sizes 200 500 1000]  ->  bench/results/monitoring_alarms.json

On the default dataset (msft_v2) the training split's last-day features, one row per
trading day, are what a model's monitor compares live traffic with. For each sample size n:

- false alarms: thousands of seeded draws of n training days, (a) as contiguous stretches
  (consecutive days, as live traffic arrives) and (b) as independent days, judged by the
  serving DriftTest with the artifact's block-bootstrap thresholds, and (c) contiguous
  stretches judged by the independent-draws (multinomial) null, which ignores serial
  dependence: the rate a naive PSI threshold would give;
- power: the same contiguous stretches with a stated shift added to the scaled features
  (0.1 to 1 standard deviation on every feature; 0.5 on the five fastest-moving only);
- the validation period (a later market, nothing injected): the share of its n-day
  stretches flagged, reported as what it is: real change, not a false alarm.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

SHIFTS = (0.1, 0.25, 0.5, 1.0)  # standard deviations added to every scaled feature


def last_days(dataset: Path, split: str) -> np.ndarray:
    x = np.load(dataset / f"{split}_X.npy", mmap_mode="r")
    _, first = np.unique(np.load(dataset / f"{split}_dates.npy"), return_index=True)
    return np.asarray(x[first, -1, :], np.float64)


def alarm_rates(train: np.ndarray, val: np.ndarray, distribution: dict, sizes: list[int], draws: int,
                seed: int = 0) -> list[dict]:
    from stocktrend.inference.drift import DriftTest

    rng = np.random.default_rng(seed)
    test = DriftTest(distribution, min_samples=1)
    iid_null = DriftTest({**distribution, "drift_null": None}, min_samples=1)
    # The fastest-moving features: lowest lag-1 autocorrelation on the training days.
    lag1 = np.array([np.corrcoef(train[:-1, k], train[1:, k])[0, 1] for k in range(train.shape[1])])
    fast = np.argsort(lag1)[:5]
    rows = []
    for n in sizes:
        if n > len(train) // 2:
            continue
        starts = rng.integers(0, len(train) - n, size=draws)
        fired = {"contiguous": 0, "independent": 0, "contiguous_iid_null": 0,
                 **{f"shift_{d}": 0 for d in SHIFTS}, "shift_0.5_fast5": 0}
        for s in starts:
            block = train[s : s + n]
            fired["contiguous"] += test(block)["status"] == "drift"
            fired["contiguous_iid_null"] += iid_null(block)["status"] == "drift"
            for d in SHIFTS:
                fired[f"shift_{d}"] += test(block + d)["status"] == "drift"
            shifted = block.copy()
            shifted[:, fast] += 0.5
            fired["shift_0.5_fast5"] += test(shifted)["status"] == "drift"
        for _ in range(draws):
            fired["independent"] += test(train[rng.choice(len(train), n, replace=False)])["status"] == "drift"
        verdicts = [test(val[s : s + n]) for s in range(0, max(1, len(val) - n), max(1, n // 4))]
        flagged = collections.Counter(d["name"] for v in verdicts for d in v.get("drifted_features", []))
        rows.append({"n": n, "draws": draws, **{k: v / draws for k, v in fired.items()},
                     "validation_stretches": len(verdicts),
                     "validation_flagged": float(np.mean([v["status"] == "drift" for v in verdicts])),
                     "validation_features_flagged": dict(flagged.most_common(8)),
                     "fast_features": [distribution["features"][k]["name"] for k in fast]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 500, 1000])
    args = ap.parse_args()
    from stocktrend.data.cache import build_cached
    from stocktrend.data.config import load_data_config
    from stocktrend.data.store import read_metadata
    from stocktrend.training.export import feature_distribution

    dataset = build_cached(load_data_config(ROOT / "datasets" / "msft_v2.yaml"), ROOT / "datasets" / "cache")
    distribution = feature_distribution(dataset, read_metadata(dataset)["features"]["selected"])
    rows = alarm_rates(last_days(dataset, "train"), last_days(dataset, "val"), distribution, args.sizes, args.draws)
    out = {"benchmark": "monitoring_alarms", "machine": machine_info(), "dataset": "msft_v2",
           "alpha": distribution["drift_null"]["alpha"], "train_days": distribution["n"], "rows": rows}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "monitoring_alarms.json").write_text(json.dumps(out, indent=2))
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
