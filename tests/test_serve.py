"""The Serve application on a real Ray head: HTTP on 127.0.0.1, real artifacts, real traffic."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import re
import shutil
import threading
import time
import urllib.request

import httpx
import numpy as np
import pytest

from stocktrend.inference.bars import bars_until
from stocktrend.inference.predictor import Predictor

pytestmark = [pytest.mark.ray, pytest.mark.slow]

API_KEY = "correct horse battery staple"
MAX_WINDOWS = 64
MAX_BODY = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def multitask_model(ray_module, small_multitask_dataset, tmp_path_factory):
    """The model roadmap's options in one tiny network, trained through Ray Train and exported:
    the TFT-style family, its recurrent encoder a GRU, with the volatility head."""
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.config import TrainConfig
    from stocktrend.training.export import export_artifact
    from stocktrend.training.ray_train import ray_train

    tmp = tmp_path_factory.mktemp("multitask")
    cfg = model_config_from_metadata("tiny", read_metadata(small_multitask_dataset), family="tft", rnn="gru")
    res = ray_train(small_multitask_dataset, cfg, TrainConfig(max_epochs=2, batch_size=64, accumulate_grad_batches=1),
                    tmp / "runs", "mt", num_workers=1, cpus_per_worker=1)
    return export_artifact(res["checkpoint"], small_multitask_dataset, tmp / "models", "mt", history=res["history"])


@pytest.fixture(scope="module")
def app(serve_deploy, two_versions, multitask_model, ray_head):
    _, v2 = two_versions
    # Six replicas sharing 60% of the head's baseline CPUs (0.2 each on 2 cores): the rest is
    # for the promotion test's second application and the traffic's own work.
    common = {"model": str(v2.parent), "backend": "onnx", "num_cpus": ray_head.share(0.6, 6), "max_batch_size": 16,
              "batch_wait_timeout_s": 0.01, "max_windows_per_request": MAX_WINDOWS, "max_body_bytes": MAX_BODY,
              "monitoring_flush_s": 0.1, "health_check_period_s": 1}
    return serve_deploy([
        # The shipped batch wait (none): a lone request may skip the batcher there.
        {"name": "stocktrend", "route_prefix": "/", "args": {**common, "num_replicas": 2, "batch_wait_timeout_s": 0.0}},
        {"name": "secured", "route_prefix": "/secure", "args": {**common, "num_replicas": 1, "api_key_env": "ST_KEY"},
         "runtime_env": {"env_vars": {"ST_KEY": API_KEY}}},
        # One replica that waits up to 1 s for a batch to fill: batch formation does not
        # depend on how fast this machine happens to be.
        {"name": "batched", "route_prefix": "/batched", "args": {**common, "num_replicas": 1,
                                                                 "batch_wait_timeout_s": 1.0}},
        # Monitoring judged on exactly the last 200 predictions (the minimum sample).
        {"name": "watched", "route_prefix": "/watched", "args": {**common, "num_replicas": 1,
                                                                 "monitoring_window": 200}},
        {"name": "multitask", "route_prefix": "/multitask", "args": {**common, "num_replicas": 1,
                                                                     "model": str(multitask_model.parent)}},
    ])


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def val(small_real_dataset):
    return np.load(small_real_dataset / "val_X.npy"), np.load(small_real_dataset / "val_dates.npy")


def _ok(http, app, windows, path="/v1/predict", app_index=0) -> dict:
    r = http.post(app.url(path, app=app_index), json={"windows": np.asarray(windows).tolist()})
    assert r.status_code == 200, r.text
    return r.json()


def test_health_model_and_openapi(app, http, two_versions):
    _, v2 = two_versions
    assert http.get(app.url("/healthz")).json() == {"status": "ok", "model_version": "v2", "models": {"small": "v2"}}
    info = http.get(app.url("/v1/model")).json()
    p = Predictor.from_artifact(v2)
    assert info["model_version"] == "v2" and info["backend"] == "onnx"
    assert info["features"] == p.features and info["preprocessing"]["seq_len"] == p.seq_len
    assert info["training_dates"]["train"]["start"] and "val_ce" in info["validation_metrics"]
    assert info["validation_outputs"]["n"] > 0 and set(info["sources"]) == set(p.data_cfg.sources)
    assert "/v1/predict/bars" in http.get(app.url("/openapi.json")).json()["paths"]


def test_single_and_batched_predictions_match_the_offline_predictor(app, http, val, two_versions):
    x, _ = val
    offline = Predictor.from_artifact(two_versions[1])
    for windows in (x[:1], x[10:17]):
        got = _ok(http, app, windows, "/v1/predict?attention=true")
        want = offline.predict_windows(windows)
        assert got["model_version"] == "v2" and len(got["predictions"]) == len(windows)
        for pred, probs, att in zip(got["predictions"], want.probs, want.attention):
            assert pred["p_up"] == pytest.approx(float(probs[1]), abs=1e-4)
            assert pred["p_down"] + pred["p_up"] == pytest.approx(1, abs=1e-5)
            assert pred["confidence"] == max(pred["p_up"], pred["p_down"])
            assert pred["direction"] == ("up" if probs[1] > probs[0] else "down")
            np.testing.assert_allclose(pred["attention"], att, atol=1e-4)
    assert "attention" not in _ok(http, app, x[:2])["predictions"][0]  # opt-in


def test_a_tft_gru_multitask_model_trained_through_ray_train_answers_volatility_and_feature_weights(
        app, http, val, multitask_model, small_multitask_dataset):
    training = json.loads((multitask_model / "training.json").read_text())
    assert all("val_vol_r2" in h and "train_vol_mse" in h for h in training["history"])  # from the Ray Train worker
    x = np.load(small_multitask_dataset / "val_X.npy")[:8]
    want = Predictor.from_artifact(multitask_model, backend="onnx").predict_windows(x)
    r = http.post(app.url("/v1/predict", app=4), json={"windows": x.tolist()})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    np.testing.assert_allclose([g["volatility"] for g in got], want.volatility, rtol=1e-5)
    np.testing.assert_allclose([g["p_up"] for g in got], want.probs[:, 1], atol=1e-6)
    model = http.get(app.url("/v1/model", app=4)).json()
    assert "volatility" in model["outputs"] and model["preprocessing"]["auxiliary"]["kind"] == "volatility"
    assert "feature_weights (?attention=true)" in model["outputs"]
    assert model["model_config"]["volatility_head"] is True
    assert model["model_config"]["family"] == "tft" and model["model_config"]["rnn"] == "gru"
    # ?attention=true: the pooling weights and, from this family, each feature's selection weight.
    explained = http.post(app.url("/v1/predict", app=4) + "?attention=true", json={"windows": x[:2].tolist()}).json()
    for row, weights in zip(explained["predictions"], want.feature_weights[:2]):
        assert list(row["feature_weights"]) == want_features(multitask_model)
        np.testing.assert_allclose(list(row["feature_weights"].values()), weights, atol=2e-6)
        assert sum(row["feature_weights"].values()) == pytest.approx(1, abs=1e-4) and len(row["attention"]) == 10
    # A direction-only model's answers carry no volatility.
    plain = _ok(http, app, val[0][:2])
    assert all("volatility" not in p for p in plain["predictions"])
    assert "volatility" not in http.get(app.url("/v1/model")).json()["outputs"]


def want_features(artifact) -> list[str]:
    return json.loads((artifact / "preprocessing.json").read_text())["features"]


def test_a_npy_body_answers_as_the_json_body(app, http, val):
    x, _ = val
    buf = io.BytesIO()
    np.save(buf, x[:16].astype(np.float32))
    r = http.post(app.url("/v1/predict"), content=buf.getvalue(), headers={"Content-Type": "application/x-npy"})
    assert r.status_code == 200, r.text
    as_json = _ok(http, app, x[:16])
    assert [p["p_up"] for p in r.json()["predictions"]] == pytest.approx([p["p_up"] for p in as_json["predictions"]],
                                                                          abs=1e-6)


def test_every_answer_carries_a_request_id_that_the_replica_logs(app, http, val, ray_head):
    x, _ = val
    given = http.post(app.url("/v1/predict"), json={"windows": x[:1].tolist()}, headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    fresh = {http.post(app.url("/v1/predict"), json={"windows": x[:1].tolist()}).headers["x-request-id"]
             for _ in range(3)}
    assert len(fresh) == 3 and all(len(f) >= 16 for f in fresh)
    error = http.post(app.url("/v1/predict"), content=b"{", headers={"X-Request-Id": "err-9"})
    assert error.status_code == 400 and error.headers["x-request-id"] == "err-9"
    # One JSON line per request in the replica's log, carrying the same id.
    logs = ray_head.temp_dir / "ray" / "session_latest" / "logs" / "serve"
    deadline, lines = time.monotonic() + 20, []
    while time.monotonic() < deadline and not lines:
        lines = [json.loads(line[line.index("{"):]) for f in logs.glob("replica_stocktrend_Predictor_*.log")
                 for line in f.read_text(errors="replace").splitlines() if '"request_id": "err-9"' in line
                 or '"request_id":"err-9"' in line]
        time.sleep(0.5)
    everywhere = [f"{f.name}: {line[:300]}" for f in logs.parent.rglob("*") if f.is_file()
                  for line in f.read_text(errors="replace").splitlines() if "err-9" in line]
    assert lines and lines[0]["status"] == 400 and lines[0]["endpoint"] == "predict", (
        sorted(p.name for p in logs.glob("*"))[:20], everywhere[:5])


def test_bars_endpoint_agrees_with_the_offline_pipeline(app, http, val, two_versions, repo_root):
    x, dates = val
    offline = Predictor.from_artifact(two_versions[1])
    i = len(x) - 1
    bars = bars_until(offline, repo_root / "datasets", day=str(dates[i]))
    r = http.post(app.url("/v1/predict/bars"), json={"bars": bars})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["as_of"] == str(dates[i]) and body["horizon_days"] == offline.horizon
    assert body["staleness_days"] == offline.staleness_days(str(dates[i]))
    want = offline.predict_windows(x[i : i + 1]).probs[0]
    assert body["predictions"][0]["p_up"] == pytest.approx(float(want[1]), abs=1e-4)


def _bars(two_versions, repo_root, **kw):
    return bars_until(Predictor.from_artifact(two_versions[1]), repo_root / "datasets", **kw)


def _bad_cases(x, two_versions, repo_root):
    """(name, path, body bytes, status, field or None): each names its problem."""
    w = x[:1].tolist()
    bars = _bars(two_versions, repo_root)
    target = next(iter(bars))  # msft: the target comes first in the config
    nan = json.dumps({"windows": w}).replace(str(w[0][0][0]), "NaN", 1)
    inf = json.dumps({"windows": w}).replace(str(w[0][0][0]), "Infinity", 1)
    huge = json.dumps({"windows": w}).replace(str(w[0][0][0]), "1e39", 1)  # beyond float32
    nan_npy = io.BytesIO()
    bad = x[:1].astype(np.float32).copy()
    bad[0, 0, 0] = np.nan
    np.save(nan_npy, bad)
    ints_npy = io.BytesIO()
    np.save(ints_npy, np.zeros((1, 2, 2), np.int64))
    no_col = {k: [{c: v for c, v in row.items() if c != "Close"} for row in rows] if k == target else rows
              for k, rows in bars.items()}
    unsorted = {**bars, target: bars[target][::-1]}
    dup = {**bars, target: bars[target] + bars[target][-1:]}
    short = {k: rows[-50:] for k, rows in bars.items()}
    missing = {k: v for k, v in bars.items() if k != target}
    text = {**bars, target: [{**r, "Close": "n/a?"} if i == 5 else r for i, r in enumerate(bars[target])]}
    J = lambda o: json.dumps(o).encode()
    return [
        ("empty body", "/v1/predict", b"", 400, "body"),
        ("not json", "/v1/predict", b"{windows:", 400, "body"),
        ("not an object", "/v1/predict", J([1, 2]), 422, "body"),
        ("unknown field", "/v1/predict", J({"windows": w, "x": 1}), 422, "x"),
        ("missing field", "/v1/predict", J({}), 422, "windows"),
        ("empty windows", "/v1/predict", J({"windows": []}), 422, "windows"),
        ("wrong shape", "/v1/predict", J({"windows": w[0]}), 422, "windows"),
        ("wrong days", "/v1/predict", J({"windows": [w[0][:-1]]}), 422, "windows"),
        ("wrong feature count", "/v1/predict", J({"windows": [[d[:-1] for d in w[0]]]}), 422, "windows"),
        ("ragged", "/v1/predict", J({"windows": [[w[0][0], w[0][1][:-1]]]}), 422, "windows"),
        ("NaN token (not JSON)", "/v1/predict", nan.encode(), 400, "body"),
        ("Infinity token (not JSON)", "/v1/predict", inf.encode(), 400, "body"),
        ("beyond float32", "/v1/predict", huge.encode(), 422, "windows[0][0][0]"),
        ("not UTF-8", "/v1/predict", b'{"windows": "\xff"}', 400, "body"),
        ("npy with a NaN", "/v1/predict", ("npy", nan_npy.getvalue()), 422, "windows[0][0][0]"),
        ("npy of integers", "/v1/predict", ("npy", ints_npy.getvalue()), 422, "windows"),
        ("npy garbage", "/v1/predict", ("npy", b"\x93NUMPY garbage"), 400, "body"),
        ("unsupported content type", "/v1/predict", ("text/csv", b"1,2,3"), 415, "Content-Type"),
        ("attention=maybe", "/v1/predict?attention=maybe", J({"windows": w}), 422, "attention"),
        ("strings", "/v1/predict", J({"windows": [[[str(v) for v in d] for d in w[0]]]}), 422, "windows"),
        ("booleans", "/v1/predict", J({"windows": [[[True] * len(d) for d in w[0]]]}), 422, "windows"),
        ("too many windows", "/v1/predict", J({"windows": x[: MAX_WINDOWS + 1].tolist()}), 413, "windows"),
        ("oversized body", "/v1/predict", b" " * (MAX_BODY + 10) + J({"windows": w}), 413, "body"),
        ("bars not an object", "/v1/predict/bars", J({"bars": [1]}), 422, "bars"),
        ("bars rows not objects", "/v1/predict/bars", J({"bars": {target: [1, 2]}}), 422, f"bars.{target}"),
        ("missing source", "/v1/predict/bars", J({"bars": missing}), 422, f"bars.{target}"),
        ("missing column", "/v1/predict/bars", J({"bars": no_col}), 422, f"bars.{target}"),
        ("non-numeric bar", "/v1/predict/bars", J({"bars": text}), 422, f"bars.{target}"),
        ("unsorted dates", "/v1/predict/bars", J({"bars": unsorted}), 422, f"bars.{target}"),
        ("duplicate dates", "/v1/predict/bars", J({"bars": dup}), 422, f"bars.{target}"),
        ("too little history", "/v1/predict/bars", J({"bars": short}), 422, f"bars.{target}"),
    ]


def test_every_bad_input_gets_a_4xx_naming_the_problem(app, http, val, two_versions, repo_root):
    x, _ = val
    failures = []
    types = {"npy": "application/x-npy"}
    for name, path, body, status, field in _bad_cases(x, two_versions, repo_root):
        kind, body = body if isinstance(body, tuple) else ("application/json", body)
        r = http.post(app.url(path), content=body, headers={"Content-Type": types.get(kind, kind)})
        got = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        err = got.get("error", {})
        if r.status_code != status or (field and err.get("field") != field) or not err.get("message"):
            failures.append(f"{name}: {r.status_code} {r.text[:300]}")
        assert got.get("model_version") == "v2", name
    assert not failures, "\n".join(failures)
    assert _ok(http, app, x[:1])["model_version"] == "v2"  # still answering
    assert http.get(app.url("/healthz")).status_code == 200


def test_concurrent_requests_are_batched(app, http, val):
    x, _ = val
    url = app.url("/v1/predict", app=2)
    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: http.post(url, json={"windows": x[i : i + 1].tolist()}), range(16)))
    assert all(r.status_code == 200 and len(r.json()["predictions"]) == 1 for r in results)
    # Each answer equals the window's own prediction: batching mixes no two requests up.
    single = Predictor.from_artifact(app.config["applications"][2]["args"]["model"], backend="onnx").predict_windows(x[:16])
    got = np.array([r.json()["predictions"][0]["p_up"] for r in results])
    np.testing.assert_allclose(got, single.probs[:, 1], atol=1e-4)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        batching = http.get(app.url("/v1/monitoring", app=2)).json()["windows"]["count"]["batching"]
        if batching["max_batch"] and batching["max_batch"] > 1:
            break
        time.sleep(0.2)
    assert batching["max_batch"] > 1, batching


def _totals(http, app) -> dict:
    return http.get(app.url("/v1/monitoring")).json()["totals"]


def _inference_calls(http, app, app_index: int) -> dict[str, dict]:
    """Each replica's back-end call counts, as its /v1/model tells them (asked until each answered)."""
    seen: dict[str, dict] = {}
    for _ in range(12):
        m = http.get(app.url("/v1/model", app=app_index)).json()
        seen[m["replica"]] = m["inference_calls_on_this_replica"]
    return seen


def test_a_request_alone_on_a_fast_model_skips_the_batcher_and_its_thread(app, http, val):
    """One client at a time: once a replica has measured the small model's call, each request
    runs it on the event loop without the batcher, and answers as before; where the config
    asks batches to wait for more requests (the "batched" app), a lone request waits too."""
    x, _ = val
    before, before_batched = _inference_calls(http, app, 0), _inference_calls(http, app, 2)
    got = [_ok(http, app, x[i : i + 1])["predictions"][0]["p_up"] for i in range(12)]
    _ok(http, app, x[:1], app_index=2)
    after, after_batched = _inference_calls(http, app, 0), _inference_calls(http, app, 2)
    direct = sum(after[r]["direct"] - before.get(r, {"direct": 0})["direct"] for r in after)
    assert direct >= 8, (before, after)  # 12 requests over 2 replicas, each one's first call maybe in a thread
    assert all(a["direct"] == 0 for a in after_batched.values()), after_batched
    assert sum(a["thread"] + a["inline"] for a in after_batched.values()) > sum(
        b["thread"] + b["inline"] for b in before_batched.values())
    single = Predictor.from_artifact(app.config["applications"][0]["args"]["model"], backend="onnx").predict_windows(x[:12])
    np.testing.assert_allclose(got, single.probs[:, 1], atol=1e-4)


def test_monitoring_counts_equal_the_traffic_sent(app, http, val, ray_head, repo_root):
    x, _ = val
    before = _totals(http, app)
    sent_predictions = 0
    for i in range(20):
        n = 1 + i % 3
        _ok(http, app, x[i : i + n])
        sent_predictions += n
    http.post(app.url("/v1/predict"), json={"windows": []})  # one 4xx
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = _totals(http, app)
        if now["predictions"] - before["predictions"] >= sent_predictions and now["errors_4xx"] > before["errors_4xx"]:
            break
        time.sleep(0.2)
    assert now["predictions"] - before["predictions"] == sent_predictions
    assert now["requests"] - before["requests"] == 20
    assert now["errors_4xx"] - before["errors_4xx"] == 1
    m = http.get(app.url("/v1/monitoring")).json()
    assert m["model"] == "small" and m["model_version"] == "v2" and m["min_samples"] == 200
    assert m["reference"]["features"].startswith("train split")
    # The same counts reach Ray's Prometheus endpoint (exported every few seconds).
    # Every metric the shipped Grafana dashboard queries exists on Ray's metrics endpoint.
    dashboard = json.loads((repo_root / "serve" / "grafana_dashboard.json").read_text())
    queried = {name for p in dashboard["panels"] for t in p["targets"]
               for name in re.findall(r"\b(ray_[a-z0-9_]+)", t["expr"])}
    assert {"ray_stocktrend_predictions_total", "ray_stocktrend_request_latency_ms_bucket_total",
            "ray_stocktrend_drifted_features", "ray_stocktrend_confidence_sum_total"} <= queried
    metrics_url = f"http://127.0.0.1:{ray_head.ports.metrics}/metrics"

    def series(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("ray_stocktrend_predictions_total{")]

    def labelled(text: str) -> bool:  # ... with the labels its model and version filters select on
        return any('model="small"' in line and 'model_version="v2"' in line for line in series(text))

    deadline, exported, text = time.monotonic() + 60, set(), ""
    while time.monotonic() < deadline and not (queried <= exported and labelled(text)):
        time.sleep(2)
        text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    assert queried <= exported, sorted(queried - exported)
    assert labelled(text), "\n".join(series(text))


def _watched(http, app, predictions: int) -> dict:
    """The watched app's monitoring once it has counted ``predictions`` in all."""
    deadline = time.monotonic() + 10
    while True:
        m = http.get(app.url("/v1/monitoring", app=3)).json()
        if m["totals"]["predictions"] >= predictions or time.monotonic() > deadline:
            return m


def test_drift_alerts_fire_on_shifted_windows_and_not_on_training_like_ones(app, http, small_real_dataset):
    """200 distinct training days: within what any 200-day stretch of training shows, so no
    alert. The same days shifted by 3 standard deviations: an alert naming features."""
    x = np.load(small_real_dataset / "train_X.npy")
    _, first = np.unique(np.load(small_real_dataset / "train_dates.npy"), return_index=True)
    block = x[first[300:500]]  # 200 consecutive training days, one window each
    _ok(http, app, block[:16], app_index=3)
    early = _watched(http, app, 16)["windows"]
    for window in early.values():  # 16 of the 200 needed: no figure, no verdict, no alert
        assert window["distribution"]["status"] == window["drift"]["status"] == "not enough data", window
        assert "up" not in window["distribution"] and "drifted_features" not in window["drift"]
    for i in range(16, 200, 16):
        _ok(http, app, block[i : i + 16], app_index=3)
    quiet = _watched(http, app, 200)
    drift = quiet["windows"]["count"]["drift"]
    assert drift["status"] == "ok" and drift["samples"] == 200, drift
    assert drift["null"].startswith("block bootstrap over contiguous training days") and drift["null_sample_size"] == 200
    assert not [a for a in quiet["alerts"] if a["name"] == "feature_drift"]
    for i in range(0, 200, 16):
        _ok(http, app, block[i : i + 16] + 3.0, app_index=3)
    loud = _watched(http, app, 400)
    drift = loud["windows"]["count"]["drift"]
    assert drift["status"] == "drift" and len(drift["drifted_features"]) >= 5, drift
    assert all(d["psi"] > d["threshold"] for d in drift["drifted_features"])
    assert [a for a in loud["alerts"] if a["name"] == "feature_drift"]


def test_api_key_is_required_when_set(app, http, val):
    x, _ = val
    body = {"windows": x[:1].tolist()}
    assert http.get(app.url("/healthz", app=1)).status_code == 200  # liveness stays open
    for headers in ({}, {"X-API-Key": "wrong"}):
        r = http.post(app.url("/v1/predict", app=1), json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["field"] == "X-API-Key"
    assert http.get(app.url("/v1/model", app=1)).status_code == 401
    r = http.post(app.url("/v1/predict", app=1), json=body, headers={"X-API-Key": API_KEY})
    assert r.status_code == 200 and r.json()["predictions"]
    assert http.post(app.url("/v1/predict"), json=body).status_code == 200  # the other app has no key


@pytest.mark.timeout(420)
def test_promotion_and_rollback_under_traffic_fail_no_request(serve_deploy, http, val, two_versions, ray_head,
                                                                 tmp_path, capsys):
    """On a private copy of the models folder (promotion rewrites `latest` and the log), with
    an application of its own replacing this module's (this test runs last in the module)."""
    from conftest import load_job

    promote = load_job("promote")
    x, _ = val
    models = tmp_path / "small"
    shutil.copytree(two_versions[0].parent, models)
    app = serve_deploy([{"name": "promoted", "route_prefix": "/", "args": {
        "model": str(models), "backend": "onnx", "num_cpus": ray_head.share(0.25, 2), "num_replicas": 2, "max_batch_size": 16,
        "health_check_period_s": 1}}])
    seen: list[tuple[float, float, int, str | None]] = []  # sent, answered, status, version
    stop = threading.Event()

    def traffic():
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                sent = time.monotonic()
                r = c.post(app.url("/v1/predict"), json={"windows": x[:2].tolist()})
                seen.append((sent, time.monotonic(), r.status_code,
                             r.json().get("model_version") if r.status_code == 200 else r.text))

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        assert promote.main(["--model", str(models), "--version", "v1", "--dashboard", ray_head.dashboard]) == 0
        promoted = time.monotonic()
        assert (models / "latest").read_text().strip() == "v1"
        assert http.get(app.url("/v1/model")).json()["model_version"] == "v1"
        time.sleep(2)
        rollback_started = time.monotonic()
        assert promote.main(["--model", str(models), "--rollback", "--dashboard", ray_head.dashboard]) == 0
        rolled_back = time.monotonic()
        assert http.get(app.url("/v1/model")).json()["model_version"] == "v2"
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failed = [s for s in seen if s[2] != 200]
    assert not failed, failed[:5]
    # Once promote.py returns, every replica serves v1 (it waits for all of them); once the
    # rollback returns, every replica serves v2. In between the switches, replicas move one by one.
    between = [v for sent, done, _, v in seen if sent >= promoted and done <= rollback_started]
    after = [v for sent, _, _, v in seen if sent >= rolled_back]
    assert len(between) > 5 and set(between) == {"v1"}, between
    assert len(after) > 5 and set(after) == {"v2"}, after
    assert [json.loads(line)["to"] for line in (models / "promotions.jsonl").read_text().splitlines()] == ["v1", "v2"]
    assert not (two_versions[0].parent / "promotions.jsonl").exists()  # the shared folder was not touched
    print(f"promotion under traffic: {len(seen)} requests, 0 failed")


@pytest.mark.timeout(180)
def test_a_deployment_that_requires_a_key_refuses_to_start_without_one(app, two_versions, ray_head):
    """require_api_key (on by default off loopback; here set, since the test head serves on
    127.0.0.1): a replica without the key in its environment does not start, and Serve's
    message names the setting."""
    import copy

    from stocktrend.serving import control

    before = control.deployed_config(ray_head.dashboard)  # whatever this module deployed last
    config = copy.deepcopy(before)
    template = control.load_config(control.DEFAULT_CONFIG)["applications"][0]
    args = {"model": str(two_versions[1].parent), "backend": "onnx", "num_cpus": ray_head.share(0.05, 1),
            "api_key_env": "ST_NO_SUCH_KEY", "require_api_key": True}
    config["applications"] += control.with_overrides({"applications": [template]}, None, args, {}, name="keyless",
                                                     route_prefix="/keyless")["applications"]
    control.client(ray_head.dashboard).deploy_applications(config)
    try:
        with pytest.raises(control.ServeControlError, match="require_api_key") as err:
            control.wait_running(ray_head.dashboard, "keyless", timeout=150)
        assert "ST_NO_SUCH_KEY is not set" in str(err.value)
    finally:
        control.client(ray_head.dashboard).deploy_applications(before)
        deadline = time.monotonic() + 60
        while "keyless" in (control.client(ray_head.dashboard).get_serve_details().get("applications") or {}):
            assert time.monotonic() < deadline
            time.sleep(1)
    assert httpx.get(app.url("/healthz"), timeout=30).status_code == 200
