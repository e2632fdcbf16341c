"""The multi-task network: direction plus the next h days' realised volatility.

The target is built like the direction label (from the adjusted closes of days t..t+h, no
later day, standardised on training windows only), trained beside the direction loss, carried
by the artifact, answered by every back-end and scored out of sample against a trailing
baseline fitted on training windows.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from stocktrend.config_io import with_overrides
from stocktrend.data import labels
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.store import read_metadata
from stocktrend.data.windows import window_keys
from stocktrend.inference.artifact import ArtifactError
from stocktrend.inference.backends import BACKENDS
from stocktrend.inference.predictor import TRADING_DAYS, Predictor
from stocktrend.models.config import model_config_from_metadata
from stocktrend.models.network import TrendNet, parameter_counts
from stocktrend.training.config import TrainConfig
from stocktrend.training.datamodule import TrendDataModule
from stocktrend.training.export import export_artifact
from stocktrend.training.fit_local import fit_local
from stocktrend.training.module import TrendClassifier

pytestmark = pytest.mark.timeout(600)
FAST = TrainConfig(batch_size=64, accumulate_grad_batches=1, max_epochs=2, seed=3)


# -- the target ------------------------------------------------------------------------------
def test_volatility_target_by_hand():
    close = np.array([100.0, 101.0, 99.0, 99.0, 103.0, 104.0])
    r = np.log(close[1:] / close[:-1])
    got = labels.future_log_vol(close, 2)
    # Window ending on day 1: the returns of days 2 and 3 (close[1] -> close[3]).
    assert got[1] == pytest.approx(np.log(np.sqrt((r[1] ** 2 + r[2] ** 2) / 2)))
    assert np.isnan(got[4]) and np.isnan(got[5])  # day t + h is beyond the data
    trailing = labels.trailing_log_vol(close, 3)
    assert trailing[3] == pytest.approx(np.log(np.sqrt((r[0] ** 2 + r[1] ** 2 + r[2] ** 2) / 3)))
    assert np.isnan(trailing[2])  # day 0 has no return: only two of three are known
    # A flat stretch is floored, not -inf.
    assert labels.future_log_vol(np.full(8, 50.0), 3)[0] == pytest.approx(np.log(labels.VOL_FLOOR))


@pytest.mark.parametrize("seed", range(5))
def test_volatility_target_sees_days_t_to_t_plus_h_and_trailing_columns_only_the_past(seed):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 400)))
    h, t = 5, int(rng.integers(40, 390 - 5))
    base = labels.volatility_columns(close, h)
    later, earlier = close.copy(), close.copy()
    later[t + h + 1:] *= rng.uniform(0.5, 1.5, len(close) - t - h - 1)  # after the label's last day
    earlier[:t] *= rng.uniform(0.5, 1.5, t)  # before the window's end
    # (Equal up to the rounding of the running sums: a leak would move them by percents.)
    assert labels.volatility_columns(later, h)[t, 0] == pytest.approx(base[t, 0], rel=1e-9)
    assert labels.volatility_columns(earlier, h)[t, 0] == pytest.approx(base[t, 0], rel=1e-9)
    after_t = close.copy()
    after_t[t + 1:] *= rng.uniform(0.5, 1.5, len(close) - t - 1)
    np.testing.assert_allclose(labels.volatility_columns(after_t, h)[t, 1:], base[t, 1:], rtol=1e-9)
    # ...and the target does move with days inside (t, t + h].
    inside = close.copy()
    inside[t + 2] *= 1.3
    assert labels.volatility_columns(inside, h)[t, 0] != pytest.approx(base[t, 0], rel=1e-3)


# -- the dataset -----------------------------------------------------------------------------
def _distinct_train(dataset):
    _, first = np.unique(window_keys(dataset, "train"), axis=0, return_index=True)
    return np.sort(first)


def test_dataset_stores_the_target_and_fits_its_standardisation_on_training_windows(small_multitask_dataset):
    d = small_multitask_dataset
    meta = read_metadata(d)
    aux = meta["auxiliary"]
    assert aux["kind"] == "volatility" and aux["columns"] == list(labels.VOL_COLUMNS)
    train = np.load(d / "train_vol.npy")
    distinct = train[_distinct_train(d), 0].astype(np.float64)
    assert aux["n_fit"] == len(distinct) < len(train)  # oversampled copies are not fitted twice
    assert aux["mean"] == pytest.approx(distinct.mean()) and aux["std"] == pytest.approx(distinct.std())
    for split in ("train", "val", "test"):
        vol = np.load(d / f"{split}_vol.npy")
        assert vol.shape == (len(np.load(d / f"{split}_y.npy")), 3) and np.isfinite(vol).all()
    # The same windows, labels and fits as the direction-only dataset: the target is an addition.
    dm = TrendDataModule(d, batch_size=8)
    x, y, z = dm.train_dataloader().dataset[0]
    assert x.shape == (10, 8) and z.dtype == torch.float32
    assert float(z) == pytest.approx((train[0, 0] - aux["mean"]) / aux["std"], rel=1e-5)


def test_later_prices_move_no_training_target_and_no_fitted_statistic(tmp_path, repo_root):
    import datetime as dt

    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml")
    cfg = with_overrides(cfg, {"start": dt.date(2008, 1, 2), "seq_len": 10, "n_features": 8,
                               "auxiliary": "volatility"})
    a = build_dataset(cfg, tmp_path / "a")
    raw = pd.read_csv(cfg.source_path("msft"))
    later = pd.to_datetime(raw["Date"]) >= pd.Timestamp(a["boundaries"]["val_start"])
    factor = np.random.default_rng(0).uniform(0.5, 1.5, size=later.sum())
    for col in ("Open", "High", "Low", "Close", "Adj Close"):
        if col in raw:
            raw.loc[later, col] = raw.loc[later, col] * factor
    raw.to_csv(tmp_path / "msft.csv", index=False)
    sources = {**cfg.sources, "msft": dataclasses.replace(cfg.sources["msft"], path=str(tmp_path / "msft.csv"))}
    b = build_dataset(dataclasses.replace(cfg, sources=sources), tmp_path / "b")
    assert not np.array_equal(np.load(tmp_path / "a/test_vol.npy"), np.load(tmp_path / "b/test_vol.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "a/train_vol.npy"), np.load(tmp_path / "b/train_vol.npy"))
    assert a["auxiliary"] == b["auxiliary"]


def test_panel_dataset_carries_each_instruments_own_volatility(tmp_path, repo_root):
    import datetime as dt

    cfg = load_data_config(repo_root / "datasets" / "stocks20.yaml")
    cfg = with_overrides(cfg, {"start": dt.date(2008, 1, 2), "seq_len": 10, "n_features": 8,
                               "auxiliary": "volatility"})
    meta = build_dataset(cfg, tmp_path / "panel")
    d = tmp_path / "panel"
    index, vol = np.load(d / "test_index.npy"), np.load(d / "test_vol.npy")
    close = np.load(d / "close.npy")
    i = len(index) // 2
    inst, row = index[i]
    assert vol[i, 0] == pytest.approx(labels.future_log_vol(close[inst], cfg.horizon)[row], rel=1e-6)
    assert meta["auxiliary"]["n_fit"] == len(np.unique(np.load(d / "train_index.npy"), axis=0))
    x, y, z = TrendDataModule(d).val_dataloader().dataset[0]
    assert x.shape == (10, 8) and np.isfinite(float(z))


# -- the network and its training ------------------------------------------------------------
def test_the_head_is_a_block_of_its_own_and_only_with_the_target(small_multitask_dataset, small_real_dataset):
    cfg = model_config_from_metadata("tiny", read_metadata(small_multitask_dataset))
    assert cfg.volatility_head and not model_config_from_metadata("tiny", read_metadata(small_real_dataset)).volatility_head
    net = TrendNet(cfg)
    counts = parameter_counts(net)
    width = cfg.head_widths[-1]
    assert counts["vol_head"] == cfg.d_model * width + width + width + 1
    logits, attention, vol, _ = net.eval().outputs(torch.zeros(3, cfg.seq_len, cfg.n_features))
    assert logits.shape == (3, 2) and attention.shape == (3, cfg.seq_len) and vol.shape == (3,)


def test_mismatched_head_and_target_are_refused(small_real_dataset, small_multitask_dataset, tmp_path):
    with_head = model_config_from_metadata("tiny", read_metadata(small_multitask_dataset))
    with pytest.raises(ValueError, match="aux_weight is 0"):
        TrendClassifier(with_head, dataclasses.replace(FAST, aux_weight=0.0), [1, 1])
    wrong = model_config_from_metadata("tiny", read_metadata(small_real_dataset), volatility_head=True)
    with pytest.raises(ValueError, match="no volatility target"):
        fit_local(small_real_dataset, wrong, FAST, tmp_path / "run", max_epochs=1, progress=False,
                  accelerator="cpu", enable_model_summary=False)


@pytest.fixture(scope="module")
def multitask_artifact(small_multitask_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multitask")
    cfg = model_config_from_metadata("tiny", read_metadata(small_multitask_dataset))
    res = fit_local(small_multitask_dataset, cfg, FAST, tmp / "run", progress=False, accelerator="cpu",
                    enable_model_summary=False)
    return res, export_artifact(res["best_checkpoint"], small_multitask_dataset, tmp / "models", "mt",
                                history=res["history"], version="v1")


def test_training_logs_volatility_scores_but_selects_on_direction(multitask_artifact, small_multitask_dataset):
    res, artifact = multitask_artifact
    for entry in res["history"]:
        assert {"val_vol_mse", "val_vol_r2", "val_vol_rank_corr", "train_vol_mse"} <= set(entry)
        # The objective is cross-entropy (>= 0) plus aux_weight times the volatility MSE.
        assert entry["train_loss"] >= FAST.aux_weight * entry["train_vol_mse"]
    training = json.loads((artifact / "training.json").read_text())
    assert training["selection_metric"] == FAST.selection_metric == "val_auroc"
    assert training["best_epoch"] == max(res["history"], key=lambda h: h["val_auroc"])["epoch"]
    pre = json.loads((artifact / "preprocessing.json").read_text())
    assert pre["auxiliary"] == read_metadata(small_multitask_dataset)["auxiliary"]


def test_every_backend_answers_the_volatility_forecast(multitask_artifact, small_multitask_dataset):
    _, artifact = multitask_artifact
    x = np.load(small_multitask_dataset / "val_X.npy")[:32]
    ref = Predictor.from_artifact(artifact)
    with torch.inference_mode():
        z = ref.model.outputs(torch.from_numpy(x)).volatility
    aux = ref.preprocessing["auxiliary"]
    expect = np.exp(z.numpy().astype(np.float64) * aux["std"] + aux["mean"]) * np.sqrt(TRADING_DAYS)
    np.testing.assert_allclose(ref.predict_windows(x).volatility, expect, rtol=1e-6)
    assert 0.02 < float(np.median(expect)) < 2.0  # an annualised volatility, not a log or a z-score
    for name in BACKENDS:
        got = Predictor.from_artifact(artifact, backend=name, threads=1).predict_windows(x)
        tol = 1e-4 if name == "onnx" else 0.05
        np.testing.assert_allclose(got.volatility, expect, rtol=tol, err_msg=name)


def test_a_head_without_its_standardisation_is_refused(multitask_artifact, tmp_path):
    import shutil

    from stocktrend.inference.artifact import MANIFEST, file_sha256

    _, artifact = multitask_artifact
    copy = tmp_path / "v1"
    shutil.copytree(artifact, copy)
    pre = json.loads((copy / "preprocessing.json").read_text())
    del pre["auxiliary"]
    (copy / "preprocessing.json").write_text(json.dumps(pre))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"]["preprocessing.json"] = file_sha256(copy / "preprocessing.json")
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="no auxiliary record"):
        Predictor.from_artifact(copy)


# -- evaluation ------------------------------------------------------------------------------
def test_report_scores_the_forecast_against_a_baseline_fitted_on_training_windows(multitask_artifact,
                                                                                  small_multitask_dataset, tmp_path):
    from stocktrend.evaluation.report import evaluate_artifact
    from stocktrend.evaluation.volatility import r2

    _, artifact = multitask_artifact
    d = small_multitask_dataset
    report = evaluate_artifact(artifact, d, tmp_path / "eval", n_boot=200)
    vol = report["volatility"]
    train = np.load(d / "train_vol.npy")[_distinct_train(d)].astype(np.float64)
    design = np.column_stack([np.ones(len(train)), train[:, 1], train[:, 2]])
    coef = np.linalg.lstsq(design, train[:, 0], rcond=None)[0]
    np.testing.assert_allclose(vol["baseline"]["coefficients"], coef, rtol=1e-8)
    test = np.load(d / "test_vol.npy").astype(np.float64)
    base = np.column_stack([np.ones(len(test)), test[:, 1], test[:, 2]]) @ coef
    assert vol["scores"]["baseline_r2"]["point"] == pytest.approx(r2(test[:, 0], base))
    p = Predictor.from_artifact(artifact)
    model = np.log(p.predict_windows(np.load(d / "test_X.npy")).volatility / np.sqrt(TRADING_DAYS))
    assert vol["scores"]["model_r2"]["point"] == pytest.approx(r2(test[:, 0], model), abs=1e-6)
    for k, s in vol["scores"].items():
        assert s["low"] <= s["point"] <= s["high"], k
    diff = vol["scores"]["r2_model_minus_baseline"]
    assert vol["model_beats_baseline_r2"] == (diff["low"] > 0)
    assert vol["model_beats_linear_r2"] == (vol["scores"]["r2_model_minus_linear"]["low"] > 0)
    # The linear baseline: a ridge on the trailing columns and the last day's features of the
    # distinct training windows, nothing from the test split.
    from sklearn.linear_model import Ridge

    last = np.load(d / "train_X.npy")[_distinct_train(d)][:, -1, :].astype(np.float64)
    ridge = Ridge(alpha=1.0).fit(np.column_stack([train[:, 1:], last]), train[:, 0])
    lin = ridge.predict(np.column_stack([test[:, 1:], np.load(d / "test_X.npy")[:, -1, :].astype(np.float64)]))
    assert vol["scores"]["linear_r2"]["point"] == pytest.approx(r2(test[:, 0], lin), abs=1e-9)
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "## Volatility forecast" in md and (tmp_path / "eval" / "volatility.png").stat().st_size > 5000
    # The trailing baseline is a real opponent here: it explains part of next week's volatility.
    assert vol["scores"]["baseline_rank_corr"]["point"] > 0.2
