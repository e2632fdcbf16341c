"""ASHA + Optuna against random search + FIFO on a planted market, under equal budgets
counted in trial-epochs, over several seeds: the best validation score reached against the
trial-epochs spent. Writes bench/results/tune_efficiency.json.

    python bench/tune_efficiency.py [--seeds 2] [--asha-samples 6] [--max-epochs 5]
                                    [--plant temporal] [--ic 0.1] [--instruments 30] [--days 1500]

The quick space (``search_spaces/quick.yaml``: tiny networks, data choices included) searched on
a seeded synthetic market with a planted signal (``stocktrend.data.synthetic``, written as a
close panel and built by the real builder in every trial), so that configurations differ in
what they can find; ``--plant real`` keeps the space's own dataset (the single stock, where every
configuration sits near chance and the comparison can show nothing). The score is the recipe's
selection metric (validation AUROC). Budget: ASHA + Optuna runs first with --asha-samples trials;
random + FIFO then gets as many full-length trials as fit in the trial-epochs ASHA spent
(rounded up). Goal (the "Known answers" issue): ASHA reaches random's best validation score
with at most a third of the trial-epochs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

QUICK = ROOT / "search_spaces" / "quick.yaml"


def trajectory(results, metric: str, mode: str) -> pd.DataFrame:
    """Every epoch report of every trial in time order: cumulative trial-epochs, best so far."""
    frames = [r.metrics_dataframe[["trial_id", "training_iteration", "timestamp", metric]]
              for r in results if r.metrics_dataframe is not None]
    # One row per (trial, epoch): Tune may record a trial's last report again when it ends,
    # and a restarted worker group re-reports epochs; neither is extra training budget.
    reports = pd.concat(frames).drop_duplicates(["trial_id", "training_iteration"], keep="first")
    reports = reports.sort_values("timestamp", kind="stable").reset_index(drop=True)
    reports["trial_epochs"] = range(1, len(reports) + 1)
    reports["best"] = reports[metric].cummin() if mode == "min" else reports[metric].cummax()
    return reports


def planted_space_file(args, root: Path) -> tuple[Path, dict]:
    """The quick space pointed at a planted market's close panel (written under ``root``): a
    space file of its own, so that the space loader sizes the purge gap as for any dataset."""
    import yaml

    from stocktrend.data.synthetic import MarketSpec, generate
    from stocktrend.data.synthetic_files import write_market

    spec = MarketSpec(instruments=args.instruments, days=args.days, plant=args.plant,
                      ic=args.ic if args.plant != "null" else 0.0, seed=args.market_seed)
    market = generate(spec)
    write_market(market, root / "market", layouts=("close_panel",))
    raw = yaml.safe_load(QUICK.read_text())
    raw["dataset"] = str(root / "market" / "close_panel.yaml")
    path = root / "quick_planted.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, {**dataclasses.asdict(spec), "realised": market.realised}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--asha-samples", type=int, default=6)
    ap.add_argument("--max-epochs", type=int, default=5)
    ap.add_argument("--plant", default="temporal", choices=["temporal", "linear", "null", "real"])
    ap.add_argument("--ic", type=float, default=0.1)
    ap.add_argument("--instruments", type=int, default=30)
    ap.add_argument("--days", type=int, default=1500)
    ap.add_argument("--market-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tune_efficiency.json")
    args = ap.parse_args(argv)
    from stocktrend.cluster.connect import connect
    from stocktrend.data.store import atomic_write_text
    from stocktrend.training.config import selection_mode
    from stocktrend.tuning.run import SearchOptions, run_search
    from stocktrend.tuning.space import load_space

    metric = SearchOptions().metric
    mode = selection_mode(metric)
    connect()
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        space_file, market, cache = QUICK, None, ROOT / "datasets" / "cache"
        if args.plant != "real":
            (space_file, market), cache = planted_space_file(args, Path(tmp)), Path(tmp) / "cache"
        space = dataclasses.replace(load_space(space_file), max_epochs=args.max_epochs, grace_period=1,
                                    reduction_factor=2)
        for seed in range(args.seeds):
            asha = run_search(space, SearchOptions(search="optuna", scheduler="asha", num_samples=args.asha_samples,
                                                   seed=seed), Path(tmp), f"asha{seed}", cache)
            ta = trajectory(asha, metric, mode)
            n_random = math.ceil(len(ta) / args.max_epochs)
            rand = run_search(space, SearchOptions(search="random", scheduler="fifo", num_samples=n_random, seed=seed),
                              Path(tmp), f"random{seed}", cache)
            tr = trajectory(rand, metric, mode)
            target = tr["best"].iloc[-1]
            reached = ta.loc[(ta["best"] <= target) if mode == "min" else (ta["best"] >= target), "trial_epochs"]
            rows.append({"seed": seed, "method": "asha+optuna", "trials": len(asha), "trial_epochs": len(ta),
                         "best": float(ta["best"].iloc[-1]),
                         "epochs_to_reach_random_best": int(reached.iloc[0]) if len(reached) else None})
            rows.append({"seed": seed, "method": "random+fifo", "trials": len(rand), "trial_epochs": len(tr),
                         "best": float(target), "epochs_to_reach_random_best": len(tr)})
            curves[f"asha+optuna seed {seed}"] = ta[["trial_epochs", "best"]].values.tolist()
            curves[f"random+fifo seed {seed}"] = tr[["trial_epochs", "best"]].values.tolist()
    fractions = [a["epochs_to_reach_random_best"] / r["trial_epochs"] for a, r in zip(rows[::2], rows[1::2])
                 if a["epochs_to_reach_random_best"] is not None]
    met = len(fractions) == args.seeds and all(f <= 1 / 3 for f in fractions)
    missed = "" if len(fractions) == args.seeds else f" ({args.seeds - len(fractions)} seed(s) never reached it)"
    where = ("the space's own dataset (the single stock)" if market is None else
             f"a synthetic market ({args.instruments} names x {args.days} days, plant `{args.plant}` at population IC "
             f"{market['ic']:g}, realised oracle rank IC {market['realised'].get('oracle_rank_ic', float('nan')):+.3f})")
    out = {"benchmark": "tune_efficiency", "metric": metric, "mode": mode, "market": market, "rows": rows,
           "curves": curves, "machine": machine_info(),
           "setup": (f"quick space on {where}, tiny preset, max {args.max_epochs} epochs per trial, ASHA grace 1 / "
                     f"reduction 2 with {args.asha_samples} Optuna (TPE) trials; random search + FIFO given the same "
                     f"trial-epochs; {args.seeds} seeds; 2 trials at a time on 2 CPUs; score: {metric} ({mode})."),
           "conclusion": (f"Goal: ASHA + Optuna reaches random search's best {metric} with <= 1/3 of its "
                          f"trial-epochs. Fractions needed per seed: "
                          f"{', '.join(f'{f:.2f}' for f in fractions) or 'never reached'}{missed}"
                          f" -> {'met' if met else 'not met'}.")}
    atomic_write_text(args.out, json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "curves"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
