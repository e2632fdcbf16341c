"""Which training recipe finds a planted signal? The default recipe, chosen on known answers.

    python bench/recipe_comparison.py [--recipes reference,default] [--seeds 5] [--plant temporal]
                                      [--ic 0.07] [--instruments 50] [--years 15] [--epoch-windows 16384]
        ->  bench/results/recipe_comparison.json

A seeded synthetic market (``stocktrend.data.synthetic``; by default the temporal plant, an
ordering of moves inside the window that no last-day feature holds) is written as a close panel
and built by the real dataset builder from its config. Each named recipe
(``training.config.RECIPES``) trains the tiny network on it for each seed (plain Lightning, the
same module Ray Train runs), and the selected checkpoint is scored on the test split: the mean
daily rank IC against the oracle's realised one on the same test windows, beside pooled
logistic regression and gradient boosting on the last day's features, with the report's own
intervals (``evaluation.panel_metrics``). Each recipe's chosen epoch is set against its
warm-up (where early stopping with validation cross-entropy tends to pick the epoch whose
predictions sit nearest the class prior).

The recipe's effective batch (batch_size x accumulate_grad_batches = 64) runs as one
micro-batch of 64, as the GPU plan runs it, and an epoch is a budget of ``--epoch-windows``
shuffled training windows (``TrainConfig.epoch_windows``), so that 5 seeds of 2 recipes fit
about an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

from stocktrend.data.store import atomic_write_text, read_metadata  # noqa: E402
from stocktrend.data.synthetic import MarketSpec, planted_score  # noqa: E402
from stocktrend.data.windows import split_arrays  # noqa: E402
from stocktrend.evaluation.core import date_mean, paired_mean  # noqa: E402
from stocktrend.evaluation.known_answers import market_dataset  # noqa: E402
from stocktrend.evaluation.panel_metrics import rank_ic_by_date  # noqa: E402
from stocktrend.evaluation.panel_report import _pooled_fit  # noqa: E402
from stocktrend.models.config import model_config_from_metadata  # noqa: E402
from stocktrend.training.config import RECIPES, recipe  # noqa: E402
from stocktrend.training.fit_local import fit_local  # noqa: E402
from stocktrend.training.repeat import predict_split  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "recipe_comparison.json"


class TestBlock:
    """The test windows' dates, realised forward returns and the oracle's score on them."""

    def __init__(self, dataset: Path, plant: str, horizon: int):
        test = split_arrays(dataset, "test", mmap=False)
        inst, rows = test["index"][:, 0], test["index"][:, 1]
        self.dates, self.horizon = test["dates"], horizon
        self.ret = np.load(dataset / "forward_returns.npy")[inst, rows].astype(np.float64)
        log_close = np.log(np.load(dataset / "close.npy")).T  # (days, instruments)
        self.oracle = planted_score(log_close, plant, horizon)[rows, inst] if plant != "null" else None
        self.last_day = np.asarray(test["X"][:, -1, :], np.float64)

    def ic(self, score: np.ndarray) -> tuple[dict, np.ndarray]:
        series = rank_ic_by_date(self.dates, score, self.ret)
        return date_mean(series, self.horizon), series

    def paired(self, a, b) -> dict:
        """The mean of a - b over the dates both have, with the report's interval."""
        return paired_mean(a, b, self.horizon)


def run_one(dataset: Path, name: str, seed: int, epoch_windows: int, block: TestBlock, baseline_ics: dict,
            work: Path, window_readout: int | None = None) -> dict:
    cfg = recipe(name, seed=seed, batch_size=64, accumulate_grad_batches=1, epoch_windows=epoch_windows)
    readout = {} if window_readout is None else {"window_readout": window_readout}
    model_cfg = model_config_from_metadata("tiny", read_metadata(dataset), **readout)
    start = time.perf_counter()
    fit = fit_local(dataset, model_cfg, cfg, work / f"{name}_{seed}", progress=False, enable_model_summary=False)
    seconds = time.perf_counter() - start
    p_up = predict_split(fit["best_checkpoint"], dataset, "test")["probs"][:, 1]
    ic, series = block.ic(p_up)
    history = [{k: h.get(k) for k in ("epoch", "lr", "train_loss", "val_ce", "val_auroc")} for h in fit["history"]]
    # The schedule's warm-up, whether or not the recipe's early stopping waits for it.
    return {"recipe": name, "seed": seed, "selection_metric": cfg.selection_metric,
            "window_readout": model_cfg.window_readout,
            "warmup_epochs": math.ceil(cfg.pct_start * cfg.max_epochs),
            "chosen_epoch": fit["best_epoch"], "epochs_run": len(fit["history"]), "seconds": seconds,
            "test_rank_ic": ic, "minus": {b: block.paired(series, s) for b, s in baseline_ics.items()},
            "history": history}


def summarise(runs: list[dict], oracle: float | None) -> dict:
    out = {}
    for name in dict.fromkeys(r["recipe"] for r in runs):
        rs = [r for r in runs if r["recipe"] == name]
        ics = np.array([r["test_rank_ic"]["point"] for r in rs])
        past = [r["chosen_epoch"] is not None and r["chosen_epoch"] >= r["warmup_epochs"] for r in rs]
        out[name] = {"seeds": len(rs), "median_test_rank_ic": float(np.median(ics)),
                     "median_share_of_oracle": float(np.median(ics) / oracle) if oracle else None,
                     "chosen_past_warmup": f"{sum(past)}/{len(rs)}",
                     "chosen_epochs": [r["chosen_epoch"] for r in rs], "epochs_run": [r["epochs_run"] for r in rs],
                     "excludes_zero": f"{sum(r['test_rank_ic']['low'] > 0 for r in rs)}/{len(rs)}",
                     "minutes": round(sum(r["seconds"] for r in rs) / 60, 1)}
    return out


def conclude(summary: dict, oracle: float | None, runs: list[dict]) -> str:
    """One sentence per recipe, and the seeds every recipe ran, paired (the page is generated
    from these figures; nothing is typed by hand)."""
    parts = []
    for name, row in summary.items():
        share = row["median_share_of_oracle"]
        parts.append(f"`{name}` recovers a median {row['median_test_rank_ic']:+.4f}"
                     + (f" ({share:.0%} of the oracle's {oracle:+.4f})" if share is not None else "")
                     + f", its interval above 0 on {row['excludes_zero']} seeds, the chosen epoch past the warm-up on "
                       f"{row['chosen_past_warmup']}")
    by_seed: dict[int, dict[str, float]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["recipe"]] = r["test_rank_ic"]["point"]
    paired = {s: v for s, v in sorted(by_seed.items()) if len(v) == len(summary)}
    tail = ("" if not paired else " Seeds run under every recipe: " + "; ".join(
        f"seed {s}: " + ", ".join(f"`{k}` {x:+.4f}" for k, x in v.items()) for s, v in paired.items()) + ".")
    return "; ".join(parts) + "." + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="reference,default", help=f"comma-separated, of {sorted(RECIPES)}")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--plant", default="temporal", choices=["null", "linear", "temporal"])
    ap.add_argument("--ic", type=float, default=0.07)
    ap.add_argument("--instruments", type=int, default=50)
    ap.add_argument("--years", type=float, default=15)
    ap.add_argument("--epoch-windows", type=int, default=16384)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--append", action="store_true",
                    help="add these runs to --out's (same market and epoch budget; its other recipes kept)")
    ap.add_argument("--market-seed", type=int, default=0)
    ap.add_argument("--window-readout", type=int, default=None,
                    help="override the tiny preset's ModelConfig.window_readout (0: the reference network)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [r for r in args.recipes.split(",") if r]
    for n in names:
        recipe(n)  # an unknown name stops here, before any work
    spec = MarketSpec(instruments=args.instruments, days=int(args.years * 252), plant=args.plant,
                      ic=args.ic if args.plant != "null" else 0.0, seed=args.market_seed)
    with tempfile.TemporaryDirectory(prefix="recipes-") as tmp:
        work = Path(tmp)
        dataset, realised = market_dataset(spec, work)
        block = TestBlock(dataset, args.plant, spec.horizon)
        pooled = _pooled_fit(dataset, block.last_day, seed=0)
        baselines = {k: block.ic(v) for k, v in pooled.items()}
        oracle = block.ic(block.oracle) if block.oracle is not None else None
        meta = read_metadata(dataset)
        head = {"machine": machine_info(), "market": {**spec.__dict__, "realised": realised},
                "dataset": {"windows": {k: v.get("n") for k, v in meta["splits"].items()},
                            "features": len(meta["features"]["selected"])},
                "epoch_windows": args.epoch_windows, "micro_batch": 64, "recipes": {n: RECIPES[n] for n in names},
                "oracle_test_rank_ic": oracle[0] if oracle else None,
                "baselines_test_rank_ic": {k: v[0] for k, v in baselines.items()}}
        oracle_point = oracle[0]["point"] if oracle else None
        runs: list[dict] = []
        if args.append and args.out.is_file():
            before = json.loads(args.out.read_text())
            if before["market"]["realised"] != json.loads(json.dumps(realised)) or before["epoch_windows"] != args.epoch_windows:
                raise SystemExit(f"--append: {args.out} holds another market or epoch budget")
            runs = [r for r in before["runs"] if not (r["recipe"] in names and r["seed"] >= args.first_seed)]
            head["recipes"] = {**before["recipes"], **head["recipes"]}
        # Seed by seed, every recipe, the results file rewritten after each run: a run cut short
        # still leaves whole pairs to compare.
        with tqdm(total=args.seeds * len(names), desc="runs") as bar:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for name in names:
                    runs.append(run_one(dataset, name, seed, args.epoch_windows, block,
                                        {k: v[1] for k, v in baselines.items()}, work, args.window_readout))
                    bar.update()
                    summary = summarise(runs, oracle_point)
                    result = {**head, "summary": summary, "conclusion": conclude(summary, oracle_point, runs),
                              "runs": runs}
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(args.out, json.dumps(result, indent=2, default=str))
    print(json.dumps({"oracle": oracle_point, "baselines": {k: v[0]["point"] for k, v in baselines.items()},
                      "summary": result["summary"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
