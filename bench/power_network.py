"""The power curve's network cells: does the tiny network find a planted signal as often as the
pooled logistic regression does, on the same markets?

    python bench/power_network.py [--cells 0.05x20x10,0.05x50x10,0.03x50x10] [--seeds 5]
                                  [--epochs 8] [--epoch-windows 16384]
        ->  bench/results/power_network.json (drawn beside the logistic curve by bench/power_curve.py)

Each cell is (planted IC) x (instruments) x (years), the linear plant of ``bench/power_curve.py``
at the same plant scale per IC. Each seeded market goes the way a user's files go
(``evaluation.known_answers``): written as a close panel, built by the real dataset builder (its
generated config: 30-day windows, 50 selected features, 80/10/10 split with the purge gap), the
tiny network trained with the default recipe (an epoch is a budget of ``--epoch-windows``
windows), and scored by the panel report's own code: the mean daily rank IC over the test dates
with its interval, beside the report's pooled logistic regression and gradient boosting on the
same windows. Power per learner: the share of a cell's markets whose interval lies above 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

from stocktrend.data.store import atomic_write_text  # noqa: E402
from stocktrend.data.synthetic import MarketSpec, calibrate, plant_scale  # noqa: E402
from stocktrend.evaluation.known_answers import headline, market_dataset, trained_p_up  # noqa: E402
from stocktrend.training.config import recipe  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "power_network.json"
TRADING_DAYS = 252
LEARNERS = ("model", "logistic_regression", "gradient_boosting")


def parse_cells(text: str) -> list[tuple[float, int, int]]:
    cells = []
    for part in text.split(","):
        ic, n, years = part.strip().split("x")
        cells.append((float(ic), int(n), int(years)))
    return cells


def one_market(spec: MarketSpec, cal: dict, scale: float, train_cfg, root: Path) -> dict:
    dataset, realised = market_dataset(spec, root, calibration=cal, scale=scale)
    start = time.perf_counter()
    ics = headline(dataset, trained_p_up(dataset, train_cfg, root / "run"), seed=spec.seed)
    return {"seed": spec.seed, "oracle_rank_ic": realised.get("oracle_rank_ic"),
            "train_seconds": round(time.perf_counter() - start, 1),
            **{name: ics[name].to_dict() for name in LEARNERS}, "model - logistic_regression":
            ics["model - logistic_regression"].to_dict()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="0.05x20x10,0.05x50x10,0.03x50x10", help="ICxINSTRUMENTSxYEARS, comma-separated")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--epoch-windows", type=int, default=16384)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t0, cal = time.time(), calibrate()
    cells = parse_cells(args.cells)
    # The logistic power curve's scale per IC (bench/power_curve.py), so the cells are its cells.
    scales = {ic: plant_scale(MarketSpec(instruments=200, days=3000, plant="linear", ic=ic), cal)
              for ic in sorted({c[0] for c in cells})}
    train_cfg = recipe("default", max_epochs=args.epochs, batch_size=64, accumulate_grad_batches=1,
                       epoch_windows=args.epoch_windows)
    rows = []
    jobs = [(cell, seed) for cell in cells for seed in range(args.seeds)]
    for (ic, n, years), seed in tqdm(jobs, desc="markets", unit="market"):
        spec = MarketSpec(instruments=n, days=years * TRADING_DAYS, plant="linear", ic=ic, churn=0.0, seed=seed)
        with tempfile.TemporaryDirectory(prefix="power-") as tmp:
            run = one_market(spec, cal, scales[ic], dataclasses.replace(train_cfg, seed=seed), Path(tmp))
        rows.append({"cell": [ic, n, years], **run})
        summary = []
        for cell in cells:
            mine = [r for r in rows if r["cell"] == list(cell)]
            if mine:
                summary.append({"ic": cell[0], "instruments": cell[1], "years": cell[2], "markets": len(mine),
                                **{f"power_{k}": float(np.mean([r[k]["low"] > 0 for r in mine])) for k in LEARNERS},
                                **{f"mean_ic_{k}": float(np.mean([r[k]["point"] for r in mine])) for k in LEARNERS},
                                "oracle_ic": float(np.mean([r["oracle_rank_ic"] for r in mine]))})
        out = {"benchmark": "power_network", "machine": machine_info(), "minutes": round((time.time() - t0) / 60, 1),
               "learner": (f"tiny network (default recipe, {args.epochs} epochs of {args.epoch_windows} windows), "
                           "beside the report's pooled logistic regression and boosting on the same test windows"),
               "plant": "linear", "plant_scales": {str(k): v for k, v in scales.items()}, "cells": summary, "runs": rows}
        atomic_write_text(args.out, json.dumps(out, indent=1))  # after every market: a stopped run keeps its cells
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
