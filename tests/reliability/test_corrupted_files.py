"""Corrupted inputs (a CSV, a .npy, a model artifact): a clear error naming the file, and the
previous good artifacts intact and still usable."""

from __future__ import annotations

import shutil

import pytest
from figures import record

from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.errors import DataError
from stocktrend.inference.artifact import ArtifactError
from stocktrend.inference.predictor import Predictor
from stocktrend.training.datamodule import TrendDataModule


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_corrupted_csv_fails_the_build_and_keeps_the_previous_dataset(tmp_path, repo_root):
    data = tmp_path / "data"
    shutil.copytree(repo_root / "datasets" / "crude-datasets", data / "crude-datasets")
    shutil.copy(repo_root / "datasets" / "msft_v2.yaml", data / "msft_v2.yaml")
    cfg = load_data_config(data / "msft_v2.yaml")
    out = tmp_path / "npy"
    build_dataset(cfg, out)
    before = _snapshot(out)
    csv = data / "crude-datasets" / "msft.csv"
    raw = csv.read_bytes()
    csv.write_bytes(raw[: len(raw) // 2] + b"\x00\xff garbage,,\n" + raw[len(raw) // 2 :])  # a damaged sector
    with pytest.raises(DataError) as err:
        build_dataset(load_data_config(data / "msft_v2.yaml"), out)
    assert "msft.csv" in str(err.value)
    assert _snapshot(out) == before
    record("corrupted_csv", error=str(err.value).splitlines()[0].rsplit("/", 1)[-1][:100], previous_dataset_intact=True)


def test_truncated_npy_is_named_and_the_other_splits_are_untouched(small_real_dataset, tmp_path):
    copy = tmp_path / "npy"
    shutil.copytree(small_real_dataset, copy)
    x = copy / "train_X.npy"
    x.write_bytes(x.read_bytes()[: x.stat().st_size // 3])
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.name != "train_X.npy"}
    dm = TrendDataModule(copy, batch_size=16)
    with pytest.raises(ValueError, match="train_X.npy") as err:
        dm.setup("fit")
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.name != "train_X.npy"} == before
    TrendDataModule(small_real_dataset, batch_size=16).setup("fit")  # the original still loads
    record("corrupted_npy", error=str(err.value).rsplit("/", 1)[-1][:100], other_files_intact=True)


def test_corrupted_artifact_is_refused_and_the_good_version_stays_current(two_versions, tmp_path):
    from conftest import load_job

    v1, v2 = two_versions
    models = tmp_path / "small"
    shutil.copytree(v1.parent, models, ignore=shutil.ignore_patterns("promotions.jsonl"))
    (models / "latest").write_text("v1\n")
    weights = models / "v2" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256") as err:
        Predictor.from_artifact(models / "v2")
    promote = load_job("promote")
    assert promote.main(["--model", str(models), "--version", "v2", "--no-serve"]) == 2
    assert (models / "latest").read_text().strip() == "v1"
    assert Predictor.from_artifact(models).version == "v1"  # the good version still loads
    record("corrupted_artifact", error="v2/" + str(err.value).rsplit("/", 1)[-1][:100], promotion_refused=True,
           current_version="v1")
