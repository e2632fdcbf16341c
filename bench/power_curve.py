"""Which signal could this much data detect? The headline's power on planted markets.

    python bench/power_curve.py [--seeds 50] [--ics 0.01,0.02,0.03,0.05] [--universe 20,50,100,200]
                                [--years 10,20,30] [--workers 2] [--replot] [--append]
        ->  bench/results/power_curve.json, docs/power_curve.png (with the network's cells of
            bench/power_network.py where it has run)

For each planted strength (the linear plant of ``stocktrend.data.synthetic``: the one-week
reversal, a quantity a last-day model can fit), universe size and history length, seeded
markets are drawn and a pooled logistic regression is fitted on the training block's
last-day features (the 1- to 20-day log returns, ranked across the instruments each day; one
day in h, so labels do not overlap) to the cross-sectional label (beats the day's median over
h days). Its headline on the test block (the last 10% of days, after a purge of h days) is
the mean daily rank IC with the report's own 95% interval (``evaluation.panel_metrics``);
power is the share of markets where that interval lies above 0. The answer to a quant's
first question: which IC could the real 20-stock panel (20 names, ~27 years to 2017) have
detected, and which not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

from stocktrend.data.synthetic import MarketSpec, calibrate, generate, plant_scale  # noqa: E402
from stocktrend.evaluation.bootstrap import Interval  # noqa: E402
from stocktrend.evaluation.core import date_mean  # noqa: E402
from stocktrend.evaluation.panel_metrics import rank_ic_by_date  # noqa: E402

HORIZON = 5
LAGS = (1, 2, 3, 5, 10, 20)
TRADING_DAYS = 252


def features(log_close: np.ndarray) -> np.ndarray:
    """(days, instruments, len(LAGS)): each n-day log return ranked across the instruments
    listed that day, centred on 0 (NaN where a return is missing)."""
    out = np.full((*log_close.shape, len(LAGS)), np.nan)
    for k, n in enumerate(LAGS):
        ret = np.full(log_close.shape, np.nan)
        ret[n:] = log_close[n:] - log_close[:-n]
        ranked = pd.DataFrame(ret).rank(axis=1, pct=True).to_numpy()
        out[..., k] = ranked - 0.5
    return out


def one_market(job: dict) -> dict:
    spec = MarketSpec(**job["spec"])
    m = generate(spec, job["cal"], scale=job["scale"])
    lc, d = m.log_close, spec.days
    x = features(lc)
    fwd = np.full(lc.shape, np.nan)
    fwd[:-HORIZON] = lc[HORIZON:] - lc[:-HORIZON]
    with warnings.catch_warnings():  # the last h days have no forward return: an all-NaN median
        warnings.simplefilter("ignore", RuntimeWarning)
        above = fwd > np.nanmedian(fwd, axis=1, keepdims=True)
    train_end, test_start = int(0.8 * d), int(0.9 * d) + HORIZON  # validation block and purges between
    rows = np.arange(max(LAGS), train_end - HORIZON, HORIZON)  # one day in h: labels that do not overlap
    xt, yt = x[rows].reshape(-1, len(LAGS)), above[rows].reshape(-1)
    ok = np.isfinite(xt).all(1) & np.isfinite(fwd[rows].reshape(-1))
    model = LogisticRegression(C=1.0, max_iter=200).fit(xt[ok], yt[ok])
    test_rows = np.arange(test_start, d - HORIZON)
    xs = x[test_rows].reshape(-1, len(LAGS))
    score = np.full(len(xs), np.nan)
    live = np.isfinite(xs).all(1)
    score[live] = model.predict_proba(xs[live])[:, 1]
    dates = np.repeat(test_rows, lc.shape[1])
    ic = rank_ic_by_date(dates, score, fwd[test_rows].reshape(-1)).to_numpy()
    iv = Interval(**date_mean(ic, HORIZON))
    return {"cell": job["cell"], "seed": spec.seed, "mean": iv.point, "low": iv.low, "high": iv.high,
            "oracle_rank_ic": m.realised.get("oracle_rank_ic"), "test_dates": int(len(ic))}


def plot(cells: list[dict], path: Path, network: list[dict] | None = None) -> None:
    """The logistic power per (IC, universe) in one panel per history length; ``network``: the
    tiny network's cells (``bench/power_network.py``) as open markers on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    years = sorted({c["years"] for c in cells})
    fig, axes = plt.subplots(1, len(years), figsize=(4.2 * len(years), 3.6), sharey=True)
    for ax, y in zip(np.atleast_1d(axes), years):
        for ic in sorted({c["ic"] for c in cells}):
            row = sorted((c for c in cells if c["years"] == y and c["ic"] == ic), key=lambda c: c["instruments"])
            line = ax.plot([c["instruments"] for c in row], [c["power"] for c in row], marker="o", label=f"IC {ic:g}")[0]
            net = [c for c in network or [] if c["years"] == y and c["ic"] == ic]
            if net:
                ax.scatter([c["instruments"] for c in net], [c["power_model"] for c in net], s=70, facecolors="none",
                           edgecolors=line.get_color(), linewidths=1.5,
                           label=f"IC {ic:g}, network ({net[0]['markets']} seeds)")
        ax.axhline(0.8, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted({c["instruments"] for c in cells}), labels=[str(v) for v in sorted({c["instruments"]
                                                                                                  for c in cells})])
        ax.set_title(f"{y} years of history")
        ax.set_xlabel("instruments")
    np.atleast_1d(axes)[0].set_ylabel("P(95% interval above 0)")
    np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Power of the headline rank IC on planted (linear) markets: pooled logistic (lines)"
                 + (", the tiny network (open markers)" if network else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)


def network_cells() -> list[dict] | None:
    """The network's cells, where ``bench/power_network.py`` has run."""
    path = ROOT / "bench" / "results" / "power_network.json"
    return json.loads(path.read_text())["cells"] if path.is_file() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--ics", default="0.01,0.02,0.03,0.05")
    ap.add_argument("--universe", default="20,50,100,200")
    ap.add_argument("--years", default="10,20,30")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="power_curve", help="results file name (bench/results/NAME.json)")
    ap.add_argument("--replot", action="store_true", help="only redraw docs/NAME.png from the results file")
    ap.add_argument("--append", action="store_true", help="add these cells to the results file (a cell measured "
                                                          "again is replaced), e.g. larger universes with fewer seeds")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads((ROOT / "bench" / "results" / f"{args.name}.json").read_text())["cells"],
             ROOT / "docs" / f"{args.name}.png", network_cells())
        return 0
    ics = [float(v) for v in args.ics.split(",")]
    universe = [int(v) for v in args.universe.split(",")]
    years = [int(v) for v in args.years.split(",")]
    t0 = time.time()
    cal = calibrate()
    scales = {ic: plant_scale(MarketSpec(instruments=200, days=3000, plant="linear", ic=ic), cal) for ic in ics}
    jobs = []
    for ic in ics:
        for n in universe:
            for y in years:
                spec = MarketSpec(instruments=n, days=y * TRADING_DAYS, plant="linear", ic=ic, churn=0.0)
                jobs += [{"spec": dataclasses.asdict(dataclasses.replace(spec, seed=s)), "cal": cal, "scale": scales[ic],
                          "cell": [ic, n, y]} for s in range(args.seeds)]
    jobs.sort(key=lambda j: -j["spec"]["instruments"] * j["spec"]["days"])  # the longest first: a balanced pool
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(tqdm(pool.map(one_market, jobs), total=len(jobs), desc="markets", unit="market"))
    cells = []
    for ic in ics:
        for n in universe:
            for y in years:
                mine = [r for r in runs if r["cell"] == [ic, n, y]]
                power = float(np.mean([r["low"] > 0 for r in mine]))
                cells.append({"ic": ic, "instruments": n, "years": y, "markets": len(mine), "power": power,
                              "mean_ic": float(np.mean([r["mean"] for r in mine])),
                              "oracle_ic": float(np.mean([r["oracle_rank_ic"] for r in mine])),
                              "false_negative_share": 1 - power})
    path = ROOT / "bench" / "results" / f"{args.name}.json"
    if args.append and path.is_file():  # the earlier cells and runs, but for the ones measured again
        old = json.loads(path.read_text())
        new = {(c["ic"], c["instruments"], c["years"]) for c in cells}
        cells = [c for c in old["cells"] if (c["ic"], c["instruments"], c["years"]) not in new] + cells
        runs = [r for r in old["runs"] if tuple(r["cell"]) not in new] + runs
        added = old.get("appended", []) + [{"machine": machine_info(), "seconds": round(time.time() - t0, 1),
                                            "command": "python bench/power_curve.py " + " ".join(sys.argv[1:]),
                                            "cells": sorted(new)}]
    out = {"benchmark": "power_curve", "machine": machine_info(), "seconds": round(time.time() - t0, 1),
           "learner": "pooled logistic regression on ranked 1-20 day returns (last day)", "plant": "linear",
           "horizon": HORIZON, "test_block": "last 10% of days", "plant_scales": scales,
           "cells": cells, "runs": runs}
    if args.append and path.is_file():  # the file's first run stays its machine and time; appends are listed
        out.update({k: old[k] for k in ("machine", "seconds") if k in old}, appended=added)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    plot(cells, ROOT / "docs" / f"{args.name}.png", network_cells())
    for c in cells:
        print(json.dumps({k: c[k] for k in ("ic", "instruments", "years", "power", "mean_ic", "oracle_ic")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
