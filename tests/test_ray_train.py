"""Training on a real local Ray (Train V2 TorchTrainer), one and two workers, and the artifact."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from stocktrend.data.store import read_metadata
from stocktrend.inference.artifact import ArtifactError
from stocktrend.inference.bars import bars_until
from stocktrend.inference.predictor import Predictor
from stocktrend.models.config import model_config_from_metadata
from stocktrend.training.config import TrainConfig
from stocktrend.training.export import export_artifact
from stocktrend.training.module import TrendClassifier

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]
FAST = {"max_epochs": 2, "batch_size": 64, "accumulate_grad_batches": 1}


def _train(ray_local, dataset, tmp, num_workers):
    from stocktrend.training.ray_train import ray_train

    meta = read_metadata(dataset)
    return ray_train(dataset, model_config_from_metadata("tiny", meta), TrainConfig(**FAST), tmp / "runs",
                     f"w{num_workers}", num_workers=num_workers, cpus_per_worker=1)


@pytest.fixture(scope="module")
def one_worker_run(ray_module, small_real_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray1")
    res = _train(ray_module, small_real_dataset, tmp, 1)
    artifact = export_artifact(res["checkpoint"], small_real_dataset, tmp / "models", "msft_tiny", history=res["history"])
    return res, artifact


def test_one_worker_run_reports_every_epoch_and_keeps_the_best(one_worker_run):
    res, _ = one_worker_run
    assert [h["epoch"] for h in res["history"]] == [0, 1]
    best = max(h["val_auroc"] for h in res["history"])  # the recipe's selection metric
    assert res["metrics"]["val_auroc"] == pytest.approx(best)
    assert np.isfinite(res["metrics"]["val_ce"])


def _starts(run_dir) -> dict[int, list[dict]]:
    return {int(p.stem.removeprefix("rank")): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((run_dir / "starts").glob("rank*.jsonl"))}


def test_two_worker_ddp_run(ray_local, small_real_dataset, tmp_path):
    res = _train(ray_local, small_real_dataset, tmp_path, 2)
    assert [h["epoch"] for h in res["history"]] == [0, 1]
    ckpt = torch.load(res["checkpoint"], map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["model_cfg"]["n_features"] == 8
    # Two ranks of one DDP group, each training on its half of the shuffled training set.
    starts = _starts(tmp_path / "runs" / "w2")
    assert sorted(starts) == [0, 1]
    n_train = read_metadata(small_real_dataset)["splits"]["train"]["class_counts"]
    per_rank_batches = math.ceil(math.ceil(sum(n_train) / 2) / FAST["batch_size"])  # DistributedSampler pads
    for rank, (start, end) in starts.items():
        assert start["world_size"] == 2 and start["rank"] == rank and start["resumed_from"] is None
        assert end["train_batches"] == FAST["max_epochs"] * per_rank_batches, (rank, end)


def test_artifact_round_trip_gives_identical_outputs(one_worker_run, small_real_dataset):
    res, artifact = one_worker_run
    module = TrendClassifier.load_from_checkpoint(res["checkpoint"], map_location="cpu", weights_only=False).eval()
    x = np.load(small_real_dataset / "val_X.npy")[:64]
    with torch.inference_mode():
        expect = module(torch.from_numpy(x)).softmax(-1).numpy()
    pred = Predictor.from_artifact(artifact.parent).predict_windows(x)  # models/<name> -> latest
    np.testing.assert_array_equal(pred.probs, expect)
    assert pred.attention.shape == (64, 10)
    np.testing.assert_allclose(pred.attention.sum(axis=1), 1, rtol=1e-5)
    training = json.loads((artifact / "training.json").read_text())
    assert training["val_metrics"]["val_ce"] == pytest.approx(res["metrics"]["val_ce"])
    assert training["dataset"]["fingerprint"] == read_metadata(small_real_dataset)["fingerprint"]


def test_predictor_loads_in_a_process_that_never_imports_ray(one_worker_run, small_real_dataset):
    _, artifact = one_worker_run
    code = (
        "import sys, numpy as np\n"
        "from stocktrend.inference.predictor import Predictor\n"
        f"p = Predictor.from_artifact({str(artifact)!r})\n"
        f"x = np.load({str(small_real_dataset / 'val_X.npy')!r})[:4]\n"
        "print(p.predict_windows(x).probs.shape)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'lightning', 'pytorch_lightning')"
        " or m.startswith('stocktrend.training'))\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(4, 2)" in out.stdout


def test_tampered_or_incomplete_artifact_is_refused(one_worker_run, tmp_path):
    import shutil

    _, artifact = one_worker_run
    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    with open(bad / "weights.pt", "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        Predictor.from_artifact(bad)
    shutil.rmtree(bad)
    shutil.copytree(artifact, bad)
    (bad / "model.json").unlink()
    with pytest.raises(ArtifactError, match="model.json listed in the manifest is missing"):
        Predictor.from_artifact(bad)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "latest").write_text("nope\n")
    with pytest.raises(ArtifactError, match="names version 'nope'"):
        Predictor.from_artifact(tmp_path / "m")


def test_bars_path_and_window_path_agree_for_the_same_day(one_worker_run, small_real_dataset, repo_root):
    _, artifact = one_worker_run
    p = Predictor.from_artifact(artifact)
    x = np.load(small_real_dataset / "test_X.npy")
    dates = np.load(small_real_dataset / "test_dates.npy")
    for i in (0, len(x) - 1):
        bars = bars_until(p, repo_root / "datasets", day=str(dates[i]), keep=p.bars_needed)
        windows, as_of = p.windows_from_bars(bars)
        assert as_of == [str(dates[i])]
        np.testing.assert_allclose(windows[0], x[i], rtol=1e-4, atol=1e-5)
        by_bars = p.predict_bars(bars).probs
        np.testing.assert_allclose(by_bars, p.predict_windows(x[i : i + 1]).probs, atol=1e-5)


def test_bars_with_too_little_history_are_refused(one_worker_run, repo_root):
    from stocktrend.inference.predictor import InputError

    _, artifact = one_worker_run
    p = Predictor.from_artifact(artifact)
    bars = bars_until(p, repo_root / "datasets", day="2016-06-01", keep=p.bars_needed - 1)
    with pytest.raises(InputError, match="too little history"):
        p.predict_bars(bars)
    del bars["wti"]
    with pytest.raises(InputError, match="missing source") as info:
        p.predict_bars(bars)
    assert info.value.field == "bars.wti"
