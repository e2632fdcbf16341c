"""The Temporal-Fusion-style family: its blocks, its selection weights, and that it trains
through the project's LightningModule and runs on every back-end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stocktrend.data.store import read_metadata
from stocktrend.inference.backends import BACKENDS, make_backend
from stocktrend.models.config import model_config_from_metadata, preset
from stocktrend.models.network import build_network, parameter_counts
from stocktrend.models.tft import InterpretableAttention, TemporalFusionNet
from stocktrend.training.config import TrainConfig
from stocktrend.training.fit_local import fit_local

pytestmark = pytest.mark.timeout(600)


def test_blocks_outputs_and_shapes():
    cfg = preset("tft", n_features=12, seq_len=20, volatility_head=True)
    net = build_network(cfg).eval()
    assert isinstance(net, TemporalFusionNet)
    counts = parameter_counts(net)
    assert set(counts) == {"vsn", "lstm", "attention", "pool", "head", "vol_head", "readout", "total"}
    assert 50_000 < counts["total"] < 1_000_000  # CPU-sized, far below v2's 8.7M
    out = net.outputs(torch.randn(5, 20, 12))
    assert out.logits.shape == (5, 2) and out.volatility.shape == (5,)
    assert out.feature_weights.shape == (5, 12) and out.attention.shape == (5, 20)
    torch.testing.assert_close(out.feature_weights.sum(1), torch.ones(5))
    torch.testing.assert_close(out.attention.sum(1), torch.ones(5))
    with pytest.raises(ValueError, match="expects"):
        net(torch.randn(2, 20, 13))


def test_attention_heads_share_one_value_projection():
    attn = InterpretableAttention(d_model=32, heads=4, dropout=0.0)
    assert attn.v.weight.shape == (8, 32)  # one d_k-wide value projection, not one per head
    assert attn.q.weight.shape == (32, 32) and attn.out.weight.shape == (32, 8)


def test_the_gru_encoder_option_applies_to_this_family_too():
    lstm, gru = (build_network(preset("tft", n_features=6, seq_len=10, rnn=r)) for r in ("lstm", "gru"))
    assert parameter_counts(gru)["lstm"] < parameter_counts(lstm)["lstm"]
    assert isinstance(gru.lstm.rnn.rnn, torch.nn.GRU)


@pytest.fixture(scope="module")
def trained(tiny_dataset_dir, tmp_path_factory):
    """Trained by the project's LightningModule on windows whose label is feature 0's mean."""
    from stocktrend.training.module import TrendClassifier

    tmp = tmp_path_factory.mktemp("tft")
    cfg = model_config_from_metadata("tiny", read_metadata(tiny_dataset_dir), family="tft")
    train = TrainConfig(batch_size=32, accumulate_grad_batches=1, max_epochs=12, lr=1e-3, max_lr=5e-3,
                        label_smoothing=0.0, seed=0)
    res = fit_local(tiny_dataset_dir, cfg, train, tmp / "run", progress=False, accelerator="cpu",
                    enable_model_summary=False)
    module = TrendClassifier.load_from_checkpoint(res["best_checkpoint"], map_location="cpu", weights_only=False)
    return res, module.model.eval()


def _backend(name, net, x):
    return make_backend(name, net, x.shape[1], x.shape[2], threads=1)(x)


def test_it_learns_and_its_selection_weights_point_at_the_feature_that_matters(trained, tiny_dataset_dir):
    res, net = trained
    assert isinstance(net, TemporalFusionNet)
    assert max(h["val_acc"] for h in res["history"]) > 0.8
    mean_weights = _backend("torch", net, np.load(tiny_dataset_dir / "val_X.npy")).feature_weights.mean(axis=0)
    assert int(mean_weights.argmax()) == 0, mean_weights
    assert mean_weights[0] > 1.5 / len(mean_weights)  # well above an even share


def test_every_backend_runs_it(trained, tiny_dataset_dir):
    _, net = trained
    x = np.load(tiny_dataset_dir / "val_X.npy")[:16]
    ref = _backend("torch", net, x)
    for name in BACKENDS:
        got = _backend(name, net, x)
        tol = 1e-4 if name == "onnx" else 0.08
        np.testing.assert_allclose(got.probs, ref.probs, atol=tol, err_msg=name)
        np.testing.assert_allclose(got.feature_weights, ref.feature_weights, atol=tol, err_msg=name)


def test_the_backend_outputs_are_named_for_the_network():
    cfg = preset("tiny", n_features=4, seq_len=6, family="tft")
    out = make_backend("torch", build_network(cfg).eval(), 6, 4, threads=1)(np.zeros((2, 6, 4), np.float32))
    assert out.volatility is None and out.feature_weights.shape == (2, 4)
    plain = make_backend("torch", build_network(preset("tiny", n_features=4, seq_len=6)).eval(), 6, 4, 1)
    assert plain(np.zeros((2, 6, 4), np.float32)).feature_weights is None


def test_the_export_job_writes_and_checks_its_onnx_graphs(small_multitask_dataset, tmp_path):
    """ray_jobs/export.py's path on this family (multi-task too): the fp32 graph within the
    parity tolerance, the INT8 graph calibrated on training windows, both loadable."""
    from stocktrend.inference.export import export_backends
    from stocktrend.inference.predictor import Predictor
    from stocktrend.training.export import export_artifact

    cfg = model_config_from_metadata("tiny", read_metadata(small_multitask_dataset), family="tft")
    train = TrainConfig(batch_size=64, accumulate_grad_batches=1, max_epochs=1, seed=0)
    res = fit_local(small_multitask_dataset, cfg, train, tmp_path / "run", progress=False, accelerator="cpu",
                    enable_model_summary=False)
    artifact = export_artifact(res["best_checkpoint"], small_multitask_dataset, tmp_path / "models", "tft", version="v1")
    report = export_backends(artifact, "int8", small_multitask_dataset, threads=1)
    assert report["backends"]["onnx"]["within_tolerance"]
    assert report["backends"]["onnx"]["max_rel_volatility_diff"] < 1e-4
    assert report["backends"]["onnx-int8"]["calibration_windows"] > 0
    x = np.load(small_multitask_dataset / "val_X.npy")[:8]
    for name in ("onnx", "onnx-int8"):  # the exported files, sha256-checked at load
        got = Predictor.from_artifact(artifact, backend=name, threads=1).predict_windows(x)
        assert got.feature_weights.shape == (8, 8) and got.volatility.shape == (8,)
