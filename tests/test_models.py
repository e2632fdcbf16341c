"""TrendNet and ModelConfig: shapes, parameter counts, validation, options, learnability."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stocktrend.config_io import ConfigError, config_from_dict
from stocktrend.models.__main__ import main as models_main
from stocktrend.models.config import ModelConfig, model_config_from_metadata, preset
from stocktrend.models.network import TrendNet, parameter_counts


def _forward(cfg: ModelConfig, batch: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    model = TrendNet(cfg).eval()
    x = torch.randn(batch, cfg.seq_len, cfg.n_features)  # (B, L, F)
    with torch.no_grad():
        return model, model(x, return_attention=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "name, shape",
    [("tiny", {}), ("v2", {}), ("v1", dict(n_features=224, seq_len=120, n_classes=5))],
)
def test_forward_shapes_and_attention(name, shape):
    cfg = preset(name, **shape)
    batch = 2
    _, (logits, attn) = _forward(cfg, batch)
    assert logits.shape == (batch, cfg.n_classes)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert attn.shape == (batch, cfg.seq_len)
    assert torch.allclose(attn.sum(dim=1), torch.ones(batch), atol=1e-5)
    assert (attn >= 0).all()


@pytest.mark.timeout(10)
def test_plain_forward_returns_logits_only():
    cfg = preset("tiny")
    out = TrendNet(cfg)(torch.randn(4, cfg.seq_len, cfg.n_features))
    assert isinstance(out, torch.Tensor) and out.shape == (4, 2)


@pytest.mark.timeout(10)
def test_wrong_feature_count_is_a_clear_error():
    cfg = preset("tiny")
    with pytest.raises(ValueError, match="expects"):
        TrendNet(cfg)(torch.randn(2, cfg.seq_len, cfg.n_features + 1))


@pytest.mark.timeout(30)
def test_v2_parameter_count_matches_reference():
    # The reference document's network is v2 without the window readout.
    counts = parameter_counts(TrendNet(preset("v2", window_readout=0)))
    assert counts == {
        "cnn": 1_182_336,  # 5 x (conv weights + bias + BatchNorm gamma/beta)
        "lstm": 4_206_592,  # PyTorch LSTMs carry two bias vectors (b_ih, b_hh)
        "transformer": 3_152_384,  # ff 2048 as documented
        "pool": 513,
        "head": 173_506,
        "total": 8_715_331,
    }
    # The reference code's feed-forward of 1024 gives its ~7.67M.
    assert parameter_counts(TrendNet(preset("v2", transformer_ff=1024, window_readout=0)))["total"] == 7_665_731
    # The preset adds a readout of 30 steps x 50 features x 2 classes.
    assert parameter_counts(TrendNet(preset("v2"))) == {**counts, "readout": 3_000, "total": 8_718_331}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "data, key",
    [
        ({"n_feature": 50}, "n_feature"),  # typo: unknown key
        ({"cnn_dropout": 1.0}, "cnn_dropout"),
        ({"lstm_hidden": 0}, "lstm_hidden"),
        ({"cnn_kernel": 4}, "cnn_kernel"),
        ({"lstm_hidden": 10, "transformer_heads": 3}, "transformer_heads"),
        ({"head_width": 2, "head_layers": 3}, "head_width"),
        ({"n_classes": 1}, "n_classes"),
    ],
)
def test_bad_model_config_is_rejected_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(ModelConfig, data)


@pytest.mark.timeout(10)
def test_presets_and_metadata():
    with pytest.raises(ConfigError, match="lstm_hiden"):
        preset("v2", lstm_hiden=3)
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("v3")
    meta = {"seq_len": 120, "n_classes": 5, "features": {"selected": [f"f{i}" for i in range(224)]}}
    cfg = model_config_from_metadata("v1", meta, cnn_dropout=0.1)
    assert (cfg.n_features, cfg.seq_len, cfg.n_classes, cfg.cnn_dropout) == (224, 120, 5, 0.1)
    assert cfg.d_model == 1024 and cfg.head_widths == [512, 256, 128]
    assert preset("v2").head_widths == [256, 128, 64]
    with pytest.raises(ValueError, match="metadata"):
        model_config_from_metadata("v2", {"seq_len": 30})


@pytest.mark.timeout(20)
def test_residual_option_adds_projections_and_changes_forward():
    base_cfg, res_cfg = preset("tiny"), preset("tiny", cnn_residual=True)
    base, res = TrendNet(base_cfg).eval(), TrendNet(res_cfg).eval()
    # Only the 1x1 projection where channels change (F->16, 16->32) is new.
    extra = base_cfg.n_features * 16 + 16 * 32
    assert parameter_counts(res)["cnn"] == parameter_counts(base)["cnn"] + extra
    missing, unexpected = res.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(".skip." in k for k in missing)
    x = torch.randn(4, base_cfg.seq_len, base_cfg.n_features)
    with torch.no_grad():
        assert not torch.allclose(base(x), res(x))
    res.train()
    res(x).sum().backward()
    assert res.cnn.blocks[0].skip.weight.grad is not None


@pytest.mark.timeout(60)
def test_gru_option_has_three_gate_sets_and_serves_on_every_backend(tmp_path):
    """model.rnn: gru: the same bidirectional block with 3 gate sets instead of 4 (so 3/4 of
    its parameters), the same output width, and every inference back-end answers for it."""
    from stocktrend.inference.backends import BACKENDS, make_backend

    lstm_cfg, gru_cfg = preset("tiny"), preset("tiny", rnn="gru")
    lstm, gru = TrendNet(lstm_cfg).eval(), TrendNet(gru_cfg).eval()
    assert isinstance(gru.lstm.rnn, torch.nn.GRU) and isinstance(lstm.lstm.rnn, torch.nn.LSTM)
    assert parameter_counts(gru)["lstm"] * 4 == parameter_counts(lstm)["lstm"] * 3
    assert {k: v for k, v in parameter_counts(gru).items() if k not in ("lstm", "total")} == \
        {k: v for k, v in parameter_counts(lstm).items() if k not in ("lstm", "total")}
    x = torch.randn(8, gru_cfg.seq_len, gru_cfg.n_features)
    with torch.no_grad():
        probs, attention = gru(x, return_attention=True)
        ref = probs.softmax(-1).numpy()
    for name in BACKENDS:
        got, att, *_ = make_backend(name, gru, gru_cfg.seq_len, gru_cfg.n_features, threads=1)(x.numpy())
        assert got.shape == ref.shape and att.shape == attention.shape, name
        assert np.abs(got - ref).max() < (1e-4 if name in ("torch", "onnx") else 0.05), name
    with pytest.raises(ValueError, match="rnn"):
        preset("tiny", rnn="rnn")


@pytest.mark.timeout(20)
def test_positional_encoding_changes_forward_without_parameters():
    base, pe = TrendNet(preset("tiny")).eval(), TrendNet(preset("tiny", positional_encoding=True)).eval()
    pe.load_state_dict(base.state_dict())  # identical weights: no parameters added
    x = torch.randn(4, 30, 50)
    with torch.no_grad():
        out_base, out_pe = base(x), pe(x)
    assert torch.isfinite(out_pe).all() and not torch.allclose(out_base, out_pe)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("family", ["tiny", "tft"])
def test_window_readout_reads_only_the_last_steps_and_starts_as_the_trunk(family):
    """model.window_readout: k steps x features x classes weights (no bias), zero at the start
    (so the untrained network is the trunk alone), blind to steps before the window's last k,
    and every inference back-end answers for it once it has weights."""
    from stocktrend.inference.backends import BACKENDS, make_backend
    from stocktrend.models.network import build_network

    base_cfg = preset(family, seq_len=12, n_features=6, window_readout=0)
    cfg = preset(family, seq_len=12, n_features=6, window_readout=4)
    torch.manual_seed(0)
    base = build_network(base_cfg).eval()
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    counts = parameter_counts(net)
    assert counts["readout"] == 4 * 6 * 2 and counts["total"] == parameter_counts(base)["total"] + 4 * 6 * 2
    x = torch.randn(8, 12, 6)
    with torch.no_grad():
        assert torch.equal(base(x), net(x))
        net.readout.linear.weight.normal_()
        moved = x.clone()
        moved[:, :8] += 1.0  # only steps before the last 4 change
        assert torch.allclose(net.readout(x), net.readout(moved))
        moved[:, -1] += 1.0
        assert not torch.allclose(net.readout(x), net.readout(moved))
        ref = net(x).softmax(-1).numpy()
    assert preset(family, seq_len=12, window_readout=99).window_readout == 99  # more than the window: all of it
    with pytest.raises(ValueError, match="window_readout"):
        net(x[:, -3:])  # shorter than the steps it reads
    assert build_network(preset(family, seq_len=12, n_features=6, window_readout=99)).readout.steps == 12
    for name in BACKENDS:
        got, *_ = make_backend(name, net, cfg.seq_len, cfg.n_features, threads=1)(x.numpy())
        assert np.abs(got - ref).max() < (1e-4 if name in ("torch", "onnx") else 0.05), name


@pytest.mark.timeout(120)
def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    cfg = preset("tiny", n_features=6, seq_len=12, cnn_dropout=0.0, lstm_dropout=0.0,
                 transformer_dropout=0.0, head_dropout=0.0)
    model = TrendNet(cfg).train()
    x = torch.randn(32, cfg.seq_len, cfg.n_features)
    y = torch.randint(0, 2, (32,))  # random labels: only memorisation can fit them
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    first = None
    for _ in range(200):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert first > 0.5
    assert loss.item() < 0.05, f"tiny model failed to overfit 32 samples: loss {loss.item():.3f}"
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()


@pytest.mark.timeout(120)
def test_cli_prints_table(capsys):
    assert models_main(["--preset", "v2"]) == 0
    out = capsys.readouterr().out
    assert "8,718,331" in out and "transformer" in out and "readout" in out
    assert models_main(["--preset", "v2", "--window-readout", "0"]) == 0
    assert "8,715,331" in capsys.readouterr().out
    assert models_main(["--preset", "tiny", "--n-features", "0"]) == 2
    assert "n_features" in capsys.readouterr().err
