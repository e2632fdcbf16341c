"""The entry points as command-line tools, in their own processes (the other tests call the
library underneath): exit codes, what they print, what they write. Those that need Ray are
pointed at the session's private head with RAY_ADDRESS, never at a head the user runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "ray_jobs" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def small_config(tmp_path: Path, **overrides) -> Path:
    raw = yaml.safe_load((ROOT / "datasets" / "msft_v2.yaml").read_text())
    for spec in raw["sources"].values():
        spec["path"] = str(ROOT / "datasets" / spec["path"])
    raw.update({"start": "2008-01-02", "seq_len": 10, "n_features": 8, **overrides})
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.timeout(120)
def test_build_dataset_writes_a_dataset_and_names_a_bad_key(tmp_path):
    out = run("build_dataset", "--config", str(small_config(tmp_path)), "--out", str(tmp_path / "npy"), "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    meta = json.loads((tmp_path / "npy" / "metadata.json").read_text())
    assert meta["seq_len"] == 10 and len(meta["features"]["selected"]) == 8
    assert np.load(tmp_path / "npy" / "train_X.npy").shape[1:] == (10, 8)
    assert (tmp_path / "npy" / "analysis" / "MSFT_analysis.csv").is_file()
    bad = small_config(tmp_path, n_featurez=3)
    out = run("build_dataset", "--config", str(bad), "--out", str(tmp_path / "bad"))
    assert out.returncode == 2 and str(bad) in out.stderr and "n_featurez" in out.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.timeout(180)
def test_train_without_ray_exports_an_artifact(small_real_dataset, tmp_path):
    out = run("train", "--preset", "tiny", "--no-ray", "--epochs", "1", "--batch-size", "64", "--accumulate", "1",
              "--dataset", str(small_real_dataset), "--models", str(tmp_path / "models"),
              "--storage-path", str(tmp_path / "runs"), "--name", "cli_tiny")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "model artifact:" in out.stdout and "best epoch 0 by val_auroc" in out.stdout
    assert (tmp_path / "models" / "cli_tiny" / "latest").is_file()


@pytest.mark.timeout(60)
def test_deploy_refuses_a_tampered_artifact_before_touching_any_cluster(two_versions, tmp_path):
    bad = tmp_path / "small" / "v1"
    shutil.copytree(two_versions[0], bad)
    weights = bad / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-7])
    out = run("deploy", "--model", str(bad), "--no-start-head", timeout=60,
              env={"RAY_ADDRESS": "", "RAY_DASHBOARD_ADDRESS": ""})
    assert out.returncode == 2 and "sha256" in out.stderr and "weights.pt" in out.stderr, out.stderr[-2000:]
    assert "deploying" not in out.stdout


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_audit_leakage_writes_its_report(ray_local, ray_head, tmp_path):
    report = tmp_path / "AUDIT.md"
    out = run("audit_leakage", "--epochs", "1", "--out", str(report), "--storage-path", str(tmp_path / "runs"),
              timeout=400, env={"RAY_ADDRESS": ray_head.address})
    assert out.returncode == 0, out.stderr[-3000:]
    text = report.read_text()
    assert "| test accuracy |" in text and "1-NN memorisation probe" in text
    figures = json.loads(report.with_suffix(".json").read_text())
    assert figures["clean"]["twins"]["identical"] == 0 and figures["seed"]["twins"]["identical"] > 0


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_evaluate_retrains_over_seeds_and_walk_forward_folds(ray_local, ray_head, two_versions, tmp_path):
    out = run("evaluate", "--model", str(two_versions[0]), "--boot", "20", "--seeds", "2", "--walk-forward", "2",
              "--epochs", "1", "--out", str(tmp_path / "rep"), "--storage-path", str(tmp_path / "runs"),
              timeout=580, env={"RAY_ADDRESS": ray_head.address})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 seeds, test split (mean and spread)" in out.stdout and "walk-forward, 2 folds" in out.stdout
    seeds = json.loads((tmp_path / "rep" / "seeds.json").read_text())
    assert seeds["pooled_spread"]["test"]["accuracy"]["n"] == 2
    folds = json.loads((tmp_path / "rep" / "walk_forward.json").read_text())
    assert folds["spread"]["test"]["accuracy"]["n"] == 2 and "pooled" in folds
    pooled = folds["pooled"]["test"]["metrics"]["accuracy"]
    assert pooled["low"] <= pooled["point"] <= pooled["high"]
