"""How often would the known-answer tests fail on seeds other than theirs?

    python bench/known_answers.py [--seeds 20] [--scenarios panel,single]
        ->  bench/results/known_answers.json (known_answers_single.json for --scenarios single)

``tests/test_known_answers.py`` runs one market seed and one training seed. Here the same
scenario (its market specs, dataset shape and recipe, imported from the test module's
constants through ``evaluation.known_answers``) runs on ``--seeds`` other market and training
seeds, counting how often each assertion would fail: the network or the logistic baseline
missing a planted signal (interval not above 0, or point under half the oracle's IC), a
headline interval excluding 0 on a null market (a 95% interval does that on about 5% of
markets by design, more where the interval is too narrow: ``bench/interval_calibration.py``),
a network trained on shuffled labels passing for one that found the signal, and on the temporal
plant the network missing it or not beating both last-day baselines by a paired interval; on a
single instrument's temporal plant (headline AUROC against 0.5) the network missing it, or a
network trained on shuffled labels passing for one that found it.
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

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]
from machine import machine_info  # noqa: E402

import test_known_answers as case  # noqa: E402
from stocktrend.data.store import atomic_write_text  # noqa: E402
from stocktrend.evaluation.known_answers import (  # noqa: E402
    found,
    headline,
    market_dataset,
    single_headline,
    trained_p_up,
)

RESULTS = ROOT / "bench" / "results" / "known_answers.json"
SCENARIOS = ("panel", "single")


def one_seed(seed: int, root: Path, scenarios: tuple[str, ...] = SCENARIOS) -> dict:
    """The test module's scenarios (``panel``: linear, null and temporal panels; ``single``: one
    instrument's temporal plant) on market and training seed ``seed``."""

    def train(spec, shape: dict, recipe, name: str, shuffle: bool = False) -> tuple:
        """(headline of the network trained on ``spec`` at ``seed``, the oracle's realised IC or,
        for a single instrument, AUROC: None on a null market)."""
        single = spec.target == "single"
        dataset, realised = market_dataset(dataclasses.replace(spec, seed=seed), root / name,
                                           layout="yahoo" if single else "close_panel", **shape)
        if shuffle:
            case.shuffle_labels(dataset, seed)
        p_up = trained_p_up(dataset, dataclasses.replace(recipe, seed=seed), root / f"{name}_run")
        if single:
            return single_headline(dataset, p_up), realised["oracle_auroc"]
        return headline(dataset, p_up), realised.get("oracle_rank_ic")

    out: dict = {"seed": seed, "fails": {}}
    if "panel" in scenarios:
        both = ("model", *case.BASELINES)
        ics, oracle = train(case.PLANTED, case.SHAPE, case.RECIPE, "planted")
        shuffled = train(case.PLANTED, case.SHAPE, case.RECIPE, "shuffled", shuffle=True)[0]["model"]
        null_ics = train(case.NULL, case.SHAPE, case.RECIPE, "null")[0]
        t_ics, t_oracle = train(case.TEMPORAL, case.TEMPORAL_SHAPE, case.TEMPORAL_RECIPE, "temporal")
        t_shuffled = train(case.TEMPORAL, case.TEMPORAL_SHAPE, case.TEMPORAL_RECIPE, "t_shuffled", shuffle=True)[0]["model"]
        out.update({"oracle": oracle, "temporal_oracle": t_oracle, "planted": {k: ics[k].to_dict() for k in both},
                    "shuffled": shuffled.to_dict(), "null": {k: null_ics[k].to_dict() for k in both},
                    "temporal": {k: v.to_dict() for k, v in t_ics.items()}, "temporal_shuffled": t_shuffled.to_dict()})
        out["fails"].update({
            "network_misses_plant": not found(ics["model"], oracle),
            "logistic_misses_plant": not found(ics["logistic_regression"], oracle),
            "shuffled_passes": found(shuffled, oracle),
            "null_model_excludes_zero": not null_ics["model"].contains(0.0),
            "null_any_excludes_zero": not all(null_ics[k].contains(0.0) for k in both),
            "temporal_network_misses_plant": not found(t_ics["model"], t_oracle),
            "temporal_network_not_above_baselines": not all(t_ics[f"model - {k}"].low > 0 for k in case.BASELINES),
            "temporal_shuffled_passes": found(t_shuffled, t_oracle)})
    if "single" in scenarios:
        s_auroc, s_oracle = train(case.SINGLE, case.SINGLE_DATA, case.SINGLE_RECIPE, "single")
        s_shuffled = train(case.SINGLE, case.SINGLE_DATA, case.SINGLE_RECIPE, "s_shuffled", shuffle=True)[0]
        out.update({"single_oracle_auroc": s_oracle, "single": s_auroc.to_dict(), "single_shuffled": s_shuffled.to_dict()})
        out["fails"].update({"single_network_misses_plant": not found(s_auroc, s_oracle, chance=0.5),
                             "single_shuffled_passes": found(s_shuffled, s_oracle, chance=0.5)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=100, help="seeds apart from the tests' own (0)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {list(SCENARIOS)}")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: bench/results/known_answers.json, or known_answers_<scenario>.json for one scenario")
    args = ap.parse_args(argv)
    scenarios = tuple(x.strip() for x in args.scenarios.split(","))
    if not set(scenarios) <= set(SCENARIOS):
        ap.error(f"--scenarios: unknown {sorted(set(scenarios) - set(SCENARIOS))}; choose from {list(SCENARIOS)}")
    out_path = args.out or (RESULTS if set(scenarios) == set(SCENARIOS) else
                            RESULTS.with_name(f"known_answers_{'_'.join(scenarios)}.json"))
    logging.basicConfig(level=logging.WARNING)
    start, runs = time.perf_counter(), []
    for seed in tqdm(range(args.first_seed, args.first_seed + args.seeds), desc="seeds"):
        with tempfile.TemporaryDirectory(prefix="known-") as tmp:
            runs.append(one_seed(seed, Path(tmp), scenarios))
        rates = {k: sum(r["fails"][k] for r in runs) / len(runs) for k in runs[0]["fails"]}
        result = {"machine": machine_info(), "seeds": len(runs), "minutes": round((time.perf_counter() - start) / 60, 1),
                  "scenarios": list(scenarios), "failure_rates": rates}
        if "panel" in scenarios:
            result.update({"planted": dataclasses.asdict(case.PLANTED), "shape": case.SHAPE,
                           "temporal": dataclasses.asdict(case.TEMPORAL), "temporal_shape": case.TEMPORAL_SHAPE,
                           "temporal_epochs": case.TEMPORAL_RECIPE.max_epochs})
        if "single" in scenarios:
            result.update({"single": dataclasses.asdict(case.SINGLE), "single_data": case.SINGLE_DATA,
                           "single_epochs": case.SINGLE_RECIPE.max_epochs})
        result["runs"] = runs
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_path, json.dumps(result, indent=2))
    print(json.dumps({"seeds": len(runs), "failure_rates": rates}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
