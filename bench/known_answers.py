"""How often would the known-answer tests fail on seeds other than theirs?

    python bench/known_answers.py [--seeds 20]   ->  bench/results/known_answers.json

``tests/test_known_answers.py`` runs one market seed and one training seed. Here the same
scenario (its market specs, dataset shape and recipe, imported from the test module's
constants through ``evaluation.known_answers``) runs on ``--seeds`` other market and training
seeds, counting how often each assertion would fail: the network or the logistic baseline
missing a planted signal (interval not above 0, or point under half the oracle's IC), a
headline interval excluding 0 on a null market (a 95% interval does that on about 5% of
markets by design, more where the interval is too narrow: ``bench/interval_calibration.py``),
and a network trained on shuffled labels passing for one that found the signal.
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
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]
from machine import machine_info  # noqa: E402

from stocktrend.data.store import atomic_write_text  # noqa: E402
from stocktrend.evaluation.known_answers import found, headline, market_dataset, trained_p_up  # noqa: E402
from test_known_answers import BASELINES, NULL, PLANTED, RECIPE, SHAPE  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "known_answers.json"


def one_seed(seed: int, root: Path) -> dict:
    cfg = dataclasses.replace(RECIPE, seed=seed)
    planted, realised = market_dataset(dataclasses.replace(PLANTED, seed=seed), root / "planted", **SHAPE)
    oracle = realised["oracle_rank_ic"]
    ics = headline(planted, trained_p_up(planted, cfg, root / "planted_run"))
    shuffled_y = np.load(planted / "train_y.npy")
    np.save(planted / "train_y.npy", shuffled_y[np.random.default_rng(seed).permutation(len(shuffled_y))])
    shuffled = headline(planted, trained_p_up(planted, cfg, root / "shuffled_run"))["model"]
    null, _ = market_dataset(dataclasses.replace(NULL, seed=seed), root / "null", **SHAPE)
    null_ics = headline(null, trained_p_up(null, cfg, root / "null_run"))
    return {"seed": seed, "oracle": oracle,
            "planted": {k: ics[k].to_dict() for k in ("model", *BASELINES)},
            "shuffled": shuffled.to_dict(), "null": {k: null_ics[k].to_dict() for k in ("model", *BASELINES)},
            "fails": {"network_misses_plant": not found(ics["model"], oracle),
                      "logistic_misses_plant": not found(ics["logistic_regression"], oracle),
                      "shuffled_passes": found(shuffled, oracle),
                      "null_model_excludes_zero": not null_ics["model"].contains(0.0),
                      "null_any_excludes_zero": not all(null_ics[k].contains(0.0) for k in ("model", *BASELINES))}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=100, help="seeds apart from the tests' own (0)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    start, runs = time.perf_counter(), []
    for seed in tqdm(range(args.first_seed, args.first_seed + args.seeds), desc="seeds"):
        with tempfile.TemporaryDirectory(prefix="known-") as tmp:
            runs.append(one_seed(seed, Path(tmp)))
        rates = {k: sum(r["fails"][k] for r in runs) / len(runs) for k in runs[0]["fails"]}
        result = {"machine": machine_info(), "seeds": len(runs), "minutes": round((time.perf_counter() - start) / 60, 1),
                  "failure_rates": rates, "planted": dataclasses.asdict(PLANTED), "shape": SHAPE, "runs": runs}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps({"seeds": len(runs), "failure_rates": rates}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
