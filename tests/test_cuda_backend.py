"""The cuda back-end's padding and chunking, checked on the CPU (capture off), and the rules
that choose and size it. The graph capture itself needs a GPU: bench/gpu_check.sh runs it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stocktrend.inference.backends import make_backend, resolve_backend
from stocktrend.inference.cuda_graphs import BUCKETS, GraphBackend, bucket_for, chunks
from stocktrend.models.config import preset
from stocktrend.models.network import build_network
from stocktrend.serving.config import ServeArgs


def test_buckets_and_chunks_cover_every_row_once():
    assert [bucket_for(n) for n in (1, 2, 8, 9, 500, 512, 9999)] == [1, 8, 8, 32, 512, 512, 512]
    for n in (1, 7, 8, 33, 512, 513, 1500):
        parts = chunks(n)
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))  # contiguous, no overlap
        assert all(stop - start <= bucket and bucket in BUCKETS for start, stop, bucket in parts)
    assert chunks(1500) == [(0, 512, 512), (512, 1024, 512), (1024, 1500, 512)]
    assert chunks(530) == [(0, 512, 512), (512, 530, 32)]


@pytest.mark.parametrize("family,vol", [("trendnet", False), ("tft", True)])
def test_padding_changes_no_answer(family, vol):
    torch.manual_seed(0)
    cfg = preset("tiny", n_features=6, seq_len=12, family=family, volatility_head=vol)
    net = build_network(cfg).eval()
    eager = make_backend("torch", net, 12, 6, threads=1)
    padded = GraphBackend(net, 12, 6, device="cpu", capture=False)
    assert padded.name == "padded-cpu" and next(net.parameters()).device.type == "cpu"
    rng = np.random.default_rng(0)
    for n in (1, 3, 8, 9, 40, 600):
        x = rng.standard_normal((n, 12, 6)).astype(np.float32)
        want, got = eager(x), padded(x)
        for field in want._fields:
            a, b = getattr(want, field), getattr(got, field)
            assert (a is None) == (b is None), field
            if a is not None:
                assert b.shape == a.shape, (field, n)
                np.testing.assert_allclose(b, a, atol=2e-5, err_msg=f"{field} at n={n}")


def test_no_gpu_is_said_not_faked(monkeypatch):
    net = build_network(preset("tiny", n_features=4, seq_len=6)).eval()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
        make_backend("cuda", net, 6, 4, threads=1)


def test_auto_picks_cuda_on_a_gpu_node_and_onnx_without(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto", tmp_path)[0] == "onnx"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    name, why = resolve_backend("auto", tmp_path)
    assert name == "cuda" and "NVIDIA H200" in why
    assert resolve_backend("onnx", tmp_path)[0] == "onnx"  # a named back-end is never overridden


def test_serve_args_reserve_a_gpu_share_for_cuda(two_versions):
    from stocktrend.serving.app import build

    with pytest.raises(ValueError, match="num_gpus"):
        ServeArgs(backend="cuda")
    with pytest.raises(ValueError):
        ServeArgs(num_gpus=1.5)
    model = str(two_versions[1].parent)
    # What Ray schedules the replica with (the builder's deployment options).
    app = build(ServeArgs(model=model, backend="cuda", num_gpus=0.25))
    assert app._bound_deployment.ray_actor_options == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert build(ServeArgs(model=model))._bound_deployment.ray_actor_options == {"num_cpus": 0.5}
