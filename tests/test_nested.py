"""The nested walk-forward (`tune.py --walk-forward K`) on a real Ray: one search per fold, each
choosing on dates before its own test block, the folds' test blocks pooled."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from stocktrend.evaluation.repeated import fold_plans
from stocktrend.tuning.space import load_space

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_each_fold_chooses_on_its_own_past_and_the_choice_is_the_best_validation_score(
        ray_local, ray_head, repo_root, tmp_path):
    space = repo_root / "search_spaces" / "smoke.yaml"
    out = subprocess.run(
        [sys.executable, str(repo_root / "ray_jobs" / "tune.py"), "--space", str(space), "--walk-forward", "2",
         "--boot", "50", "--name", "nested", "--storage-path", str(tmp_path / "runs"), "--models",
         str(tmp_path / "models"), "--cache-root", str(tmp_path / "cache"), "--record", str(tmp_path / "rec.json")],
        capture_output=True, text=True, timeout=560, env={**os.environ, "RAY_ADDRESS": ray_head.address})
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads((tmp_path / "runs" / "nested-nested" / "nested.json").read_text())
    assert report["kind"] == "nested_walk_forward" and "Nothing was chosen on a test date" in report["policy"]
    assert json.loads((tmp_path / "rec.json").read_text())["machine"]["cores"] >= 1
    # The folds are evaluate.py --walk-forward's folds of the space's dataset.
    plans, _ = fold_plans(load_space(space).data, 2)
    assert len(report["folds"]) == len(plans) == 2
    for fold, plan in zip(report["folds"], plans):
        chosen, test = fold["chosen"], fold["test_split"]
        # Chosen on validation dates whose labels end before the fold's first test window starts.
        assert pd.Timestamp(fold["val"]["label_end"]) < pd.Timestamp(test["window_start"])
        assert pd.Timestamp(fold["train"]["label_end"]) < pd.Timestamp(fold["val"]["window_start"])
        assert test["start"] >= str(plan.test_start) and test["end"] <= str(plan.end)
        assert chosen["chosen_on"]["val_end"] == fold["val"]["end"] < test["start"] == chosen["chosen_on"]["test_start"]
        # The choice is the best validation score over every trial and epoch of that fold's search.
        scores = []
        for result in (tmp_path / "runs" / f"nested-fold{fold['fold']}").glob("run_trial_*/result.json"):
            scores += [json.loads(line)[chosen["metric"]] for line in result.read_text().splitlines() if line.strip()]
        assert len(scores) >= chosen["trials"] and chosen["score"] == pytest.approx(max(scores))
    assert len({f["chosen"]["search"] for f in report["folds"]}) == 2  # a search per fold, not one reused
    assert report["pooled"]["test"]["n"] == sum(f["test_split"]["n"] for f in report["folds"])
    assert "nested walk-forward, 2 folds" in out.stdout and "model artifact (the last fold's choice" in out.stdout
