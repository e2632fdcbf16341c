"""The model roadmap's options searched and compared on the 20-stock panel, on a real Ray:
a Tune search over the family and the auxiliary weight, and the walk-forward comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stocktrend.data.windows import split_arrays
from stocktrend.inference.predictor import Predictor
from stocktrend.tuning.run import SearchOptions, export_best, run_search
from stocktrend.tuning.space import load_space
from stocktrend.tuning.summary import choices_table, write_summary

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# The panel cut short (2010-): minutes on two cores, real data, every code path.
SMALL_PANEL = {"start": "2010-01-04", "seq_len": 10, "n_features": 8, "auxiliary": "volatility"}


@pytest.mark.timeout(600)
def test_a_search_over_the_family_on_the_panel_says_which_choice_won(ray_local, repo_root, tmp_path):
    space_file = tmp_path / "families.yaml"
    space_file.write_text(yaml.safe_dump({
        "description": "family and multi-task search on the panel", "preset": "tiny",
        "dataset": str(repo_root / "datasets" / "stocks20.yaml"), "num_samples": 2, "max_concurrent": 2, "seed": 0,
        "scheduler": {"max_epochs": 2, "grace_period": 1, "reduction_factor": 2}, "data": SMALL_PANEL,
        "train": {"batch_size": 256, "accumulate_grad_batches": 1},
        "space": {"model.family": {"choice": ["trendnet", "tft"]}, "train.aux_weight": {"choice": [0.0, 1.0]}},
        # Both families and both weights are tried whatever the sampler draws next.
        "points_to_evaluate": [{"model.family": "trendnet", "train.aux_weight": 0.0},
                               {"model.family": "tft", "train.aux_weight": 1.0}]}))
    space = load_space(space_file)
    results = run_search(space, SearchOptions(num_samples=2, scheduler="fifo"), tmp_path / "runs", "families",
                         tmp_path / "cache")
    assert results.num_errors == 0 and len(results) == 2
    metric = "val_auroc"  # the recipe's selection metric (SearchOptions' default)
    table = write_summary(results, space, metric, tmp_path / "runs" / "families" / "summary")
    choices = choices_table(table, space, metric)
    family = choices[choices["dimension"] == "model.family"].set_index("value")
    assert set(family.index) == {"trendnet", "tft"} and family["trials"].sum() == 2
    assert family["trials"].min() >= 1 and family["in best trial"].sum() == 1
    winner = family.index[family["in best trial"]][0]
    assert family.loc[winner, f"best {metric}"] == pytest.approx(table[f"best_{metric}"].max())
    assert "model.family" in (tmp_path / "runs" / "families" / "summary" / "choices.md").read_text()

    artifact = export_best(results, space, metric, tmp_path / "runs" / "families", tmp_path / "cache",
                           tmp_path / "models", "panel_families")
    p = Predictor.from_artifact(artifact)
    best = table.iloc[0]
    assert p.model_cfg.family == best["cfg.model.family"]
    assert p.has_volatility == (best["cfg.train.aux_weight"] > 0)
    assert ("auxiliary" in p.preprocessing) == p.has_volatility


@pytest.mark.timeout(900)
def test_the_family_comparison_pairs_every_candidate_on_the_same_dates(ray_local, ray_head, repo_root, tmp_path):
    out = subprocess.run(
        [sys.executable, str(repo_root / "ray_jobs" / "compare_families.py"), "--start", SMALL_PANEL["start"],
         "--seq-len", "10", "--n-features", "8", "--folds", "2", "--epochs", "1", "--candidates", "v2,tft+vol",
         "--boot", "100", "--storage-path", str(tmp_path / "runs"), "--cache-root", str(tmp_path / "cache"),
         "--out", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=850, env={**os.environ, "RAY_ADDRESS": ray_head.address})
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    scores = report["scores"]
    assert set(scores) >= {"v2", "tft+vol", "reversal_1w", "momentum_12_1"}
    # Paired against the reference and the better rule, on one set of dates for everyone.
    # The rule is chosen per fold on its validation dates, recomputed here from the fold datasets.
    from stocktrend.evaluation.families import rule_on_validation
    from stocktrend.evaluation.panel_metrics import momentum_12_1_score, rank_ic_by_date, reversal_score

    folds = report["simple_rule_per_fold"]
    assert report["simple_rule"] == "simple_rule" and len(folds) == 2
    for fold, dataset in zip(folds, report["fold_datasets"]):
        val = split_arrays(Path(dataset), "val")
        inst, rows = val["index"][:, 0], val["index"][:, 1]
        close = np.load(Path(dataset) / "close.npy")
        ret = np.load(Path(dataset) / "forward_returns.npy")[inst, rows]
        ic = {"reversal_1w": rank_ic_by_date(val["dates"], reversal_score(close, inst, rows), ret).mean(),
              "momentum_12_1": rank_ic_by_date(val["dates"], momentum_12_1_score(close, inst, rows), ret).mean()}
        assert fold["rule"] == max(ic, key=lambda k: ic[k] if np.isfinite(ic[k]) else -np.inf)
        assert fold == rule_on_validation(Path(dataset))
    d = scores["tft+vol"]["minus_v2"]
    assert d["low"] <= d["point"] <= d["high"]
    fw = report["familywise"]
    assert set(fw["beats"]) == {"tft+vol vs v2", "v2 vs simple_rule", "tft+vol vs simple_rule"}
    assert report["beats_reference"] == (["tft+vol"] if fw["beats"]["tft+vol vs v2"] else [])
    assert "over 3 comparisons" in fw["method"] and fw["method"] in report["verdict"]
    assert report["chosen_on_validation"] == min(("v2", "tft+vol"), key=lambda n: scores[n]["mean_val_ce"])
    # Only the multi-task candidate is scored on volatility, against the trailing baseline.
    assert "volatility" in scores["tft+vol"] and "volatility" not in scores["v2"]
    assert scores["tft+vol"]["volatility"]["cross_sectional_rank_corr"]["trailing_har"]["point"] > 0.2
    md = (tmp_path / "report" / "report.md").read_text()
    assert report["verdict"] in md and "| tft+vol |" in md
    assert report["verdict"] in out.stdout
    # Every candidate's folds are the same folds (one dataset per fold, shared).
    assert len(report["folds"]) == 2 and report["folds"][0]["test"]["end"] < report["folds"][1]["test"]["start"]


def test_choices_table_reads_a_trials_table():
    class Space:
        distributions = {"model.family": {"choice": ["trendnet", "tft"]}, "train.lr": {"loguniform": [1e-4, 1e-3]}}

    table = pd.DataFrame({"best_val_ce": [0.69, 0.70, 0.71, None], "cfg.model.family": ["tft", "trendnet", "tft", "tft"],
                          "cfg.train.lr": [1e-4, 2e-4, 3e-4, 4e-4]})
    got = choices_table(table, Space(), "val_ce").set_index("value")
    assert list(got.index) == ["trendnet", "tft"]  # continuous dimensions have no choices to rank
    assert got.loc["tft", "trials"] == 2 and got.loc["tft", "best val_ce"] == 0.69  # the unscored trial is left out
    assert got.loc["tft", "median val_ce"] == pytest.approx(0.70) and bool(got.loc["tft", "in best trial"])
    assert not bool(got.loc["trendnet", "in best trial"])
