"""The Serve deployment under load, fuzzed input and a killed replica (loopback only)."""

from __future__ import annotations

import json
import math
import threading
import time

import httpx
import numpy as np
import pytest
import ray
from figures import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stocktrend.serving.config import PREDICTOR_DEPLOYMENT
from stocktrend.serving.loadgen import Response, load

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOAD_REQUESTS = 10_000
LOAD_CONCURRENCY = 64
FUZZ_CASES = 500
ARBITRARY_CASES = 400


@pytest.fixture(scope="module")
def app(serve_deploy, two_versions, ray_head):
    _, v2 = two_versions
    return serve_deploy([{"name": "reliability", "route_prefix": "/", "args": {
        "model": str(v2.parent), "backend": "onnx", "num_replicas": 2, "num_cpus": ray_head.share(0.25, 2),
        "max_batch_size": 32,
        "max_ongoing_requests": 64, "batch_wait_timeout_s": 0.005, "health_check_period_s": 1,
        "max_windows_per_request": 16}}])


@pytest.fixture(scope="module")
def val(small_real_dataset):
    return np.load(small_real_dataset / "val_X.npy")


def _well_formed(body: dict, n: int, seq_len: int, attention: bool = False) -> bool:
    preds = body.get("predictions", [])
    return body.get("model_version") == "v2" and len(preds) == n and all(
        p["direction"] in ("up", "down") and abs(p["p_up"] + p["p_down"] - 1) < 1e-4
        and p["confidence"] == max(p["p_up"], p["p_down"])
        and (len(p["attention"]) == seq_len if attention else "attention" not in p)
        for p in preds
    )


@pytest.mark.timeout(600)
def test_ten_thousand_requests_at_concurrency_64(app, val):
    seq_len = val.shape[1]
    bodies = [json.dumps({"windows": val[i : i + 1].tolist()}).encode() for i in range(min(256, len(val)))]
    malformed = []

    def check(r: Response) -> None:
        if r.status == 200 and not _well_formed(json.loads(r.body), 1, seq_len, attention=True):
            malformed.append(r.body[:200])

    # The budget: every request answered, well formed, within 30 s (Serve's request timeout);
    # a request that takes longer is a failure, not a hang of the test.
    result = load(app.url("/v1/predict?attention=true"), bodies, LOAD_REQUESTS, LOAD_CONCURRENCY, check=check,
                  timeout_s=30)
    s = result.summary()
    record("serve_load", concurrency=LOAD_CONCURRENCY, failures=s["requests"] - s["ok"] + len(malformed),
           malformed=len(malformed), **s)
    assert s["requests"] == LOAD_REQUESTS and s["ok"] == LOAD_REQUESTS, (s, result.exceptions[:3])
    assert s["errors_5xx"] == 0 and not malformed


# -- fuzzing --------------------------------------------------------------------------------
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
bad_scalar = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.text(max_size=3), st.booleans(),
                       st.none(), st.just([]), st.just({}))
json_value = st.recursive(st.one_of(st.none(), st.booleans(), finite, st.text(max_size=5)),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                          max_leaves=10)


@st.composite
def windows_request(draw, seq_len: int, n_features: int, valid: bool):
    """(body, number of predictions expected, or None for a request that must be refused).
    Invalid requests carry exactly one defect of a kind drawn at random."""
    n = draw(st.integers(1, 3))
    days, feats = seq_len, n_features
    defect = None if valid else draw(st.sampled_from(["empty", "days", "features", "value", "extra"]))
    if defect == "days":
        days = draw(st.sampled_from([1, seq_len - 1, seq_len + 1]))
    elif defect == "features":
        feats = draw(st.sampled_from([1, n_features - 1, n_features + 1]))
    flat = draw(st.lists(st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32),
                         min_size=n * days * feats, max_size=n * days * feats))
    windows = np.asarray(flat, dtype=np.float64).reshape(n, days, feats).tolist()
    if defect == "empty":
        windows = []
    elif defect == "value":
        windows[draw(st.integers(0, n - 1))][draw(st.integers(0, days - 1))][draw(st.integers(0, feats - 1))] = \
            draw(bad_scalar)
    body = {"windows": windows}
    if defect == "extra":
        body[draw(st.text(max_size=4).filter(lambda s: s != "windows"))] = draw(json_value)
    return body, (n if valid else None)


@pytest.mark.timeout(600)
def test_fuzzed_requests_get_200_or_4xx_never_5xx(app, val):
    seq_len, n_features = val.shape[1], val.shape[2]
    client = httpx.Client(timeout=60)
    counts = {"valid": 0, "invalid": 0, "arbitrary": 0}

    def post(content: bytes) -> httpx.Response:
        return client.post(app.url("/v1/predict"), content=content, headers={"Content-Type": "application/json"})

    valid, invalid = windows_request(seq_len, n_features, True), windows_request(seq_len, n_features, False)

    @settings(max_examples=FUZZ_CASES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(valid, invalid, invalid, json_value.map(lambda v: (v, None))),
           raw=st.booleans())
    def check(case, raw):
        body, expected = case
        content = json.dumps(body, allow_nan=True).encode()
        if raw and expected is None:  # sometimes not even JSON
            content = content[: max(1, len(content) // 2)]
        r = post(content)
        assert r.status_code < 500, (r.status_code, r.text[:300])
        if expected is not None:
            counts["valid"] += 1
            assert r.status_code == 200, r.text[:300]
            assert _well_formed(r.json(), expected, seq_len)
        else:
            counts["arbitrary" if not isinstance(body, dict) or "windows" not in body else "invalid"] += 1
            assert 400 <= r.status_code < 500, (r.status_code, content[:200])
            err = r.json()["error"]
            assert err["field"] and err["message"]

    try:
        check()
        after = post(json.dumps({"windows": val[:1].tolist()}).encode())
        assert after.status_code == 200 and _well_formed(after.json(), 1, seq_len)
    finally:
        client.close()
    total = sum(counts.values())
    record("serve_fuzz", cases=total, valid=counts["valid"], invalid=counts["invalid"] + counts["arbitrary"],
           errors_5xx=0)
    assert total >= FUZZ_CASES and counts["valid"] >= 50 and counts["invalid"] + counts["arbitrary"] >= 100


def _json_in(encoding: str, value) -> bytes:
    return json.dumps(value, allow_nan=True).encode(encoding)


arbitrary_bodies = st.one_of(
    st.binary(max_size=3000),  # any bytes at all
    st.integers(1, 20_000).map(lambda d: b"[" * d + b"1" + b"]" * d),  # nesting of any depth
    st.integers(1, 20_000).map(lambda d: b'{"windows":' + b"[" * d + b"0.5" + b"]" * d + b"}"),
    st.tuples(st.sampled_from(["utf-16", "utf-32", "latin-1", "utf-8-sig", "utf-16-be"]),
              json_value).map(lambda t: _json_in(*t)),  # other encodings, BOMs
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(), st.text(max_size=20)),
                 lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
                 max_leaves=60).map(lambda v: json.dumps({"windows": v}, allow_nan=True).encode()),
    st.tuples(json_value, json_value).map(  # duplicate keys: the last one wins
        lambda t: b'{"windows": ' + json.dumps(t[0]).encode() + b', "windows": ' + json.dumps(t[1]).encode() + b"}"),
    st.binary(max_size=400).map(lambda b: b"\x93NUMPY\x01\x00" + b),  # .npy-looking garbage
)


def _npy(arr) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


npy_bodies = st.one_of(
    st.sampled_from([np.zeros((1, 3), np.float32), np.zeros((2,), np.float64), np.array([["a"]]),
                     np.array([{"x": 1}], dtype=object), np.zeros((1, 1, 1, 1), np.float32),
                     np.full((1, 30, 8), np.inf, np.float32), np.zeros((0, 30, 8), np.float32)]).map(_npy),
    st.binary(max_size=500),
)


@pytest.mark.timeout(600)
def test_any_body_on_any_endpoint_gets_a_4xx_with_the_contract_never_5xx(app, val):
    """Not only schema-shaped requests: arbitrary bytes and JSON of any nesting, size, type
    and encoding, duplicate keys, huge numbers, and .npy bodies of every wrong kind."""
    seq_len = val.shape[1]
    client = httpx.Client(timeout=60)
    seen = {"json": 0, "npy": 0}

    @settings(max_examples=ARBITRARY_CASES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=st.one_of(arbitrary_bodies.map(lambda b: ("application/json", b)),
                          npy_bodies.map(lambda b: ("application/x-npy", b))),
           path=st.sampled_from(["/v1/predict", "/v1/predict/bars", "/v1/predict?attention=true"]))
    def check(body, path):
        kind, content = body
        if path.startswith("/v1/predict/bars") and kind != "application/json":
            kind = "application/json"
        r = client.post(app.url(path), content=content, headers={"Content-Type": kind})
        seen["npy" if kind.endswith("npy") else "json"] += 1
        assert r.status_code < 500, (r.status_code, path, content[:200], r.text[:300])
        if r.status_code != 200:
            assert 400 <= r.status_code < 500
            err = r.json()["error"]
            assert err["field"] and err["message"] and "model_version" in r.json()

    try:
        check()
        after = client.post(app.url("/v1/predict"), json={"windows": val[:1].tolist()})
        assert after.status_code == 200 and _well_formed(after.json(), 1, seq_len)
    finally:
        client.close()
    record("serve_fuzz_arbitrary", cases=sum(seen.values()), json_bodies=seen["json"], npy_bodies=seen["npy"],
           errors_5xx=0)


# -- a replica killed under load ------------------------------------------------------------
def _replicas(app) -> list[dict]:
    details = app.control.app_details(app.head.dashboard, "reliability")
    return details["deployments"][PREDICTOR_DEPLOYMENT]["replicas"]


@pytest.mark.timeout(300)
def test_killed_replica_is_replaced_and_traffic_recovers(app, val):
    body = json.dumps({"windows": val[:1].tolist()}).encode()
    log: list[tuple[float, bool]] = []
    stop = threading.Event()

    def traffic():  # the budget: a request unanswered within 10 s is a failure
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                try:
                    ok = c.post(app.url("/v1/predict"), content=body,
                                headers={"Content-Type": "application/json"}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                log.append((time.monotonic(), ok))

    running = [r for r in _replicas(app) if r["state"] == "RUNNING"]
    assert len(running) == 2
    threads = [threading.Thread(target=traffic) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        victim = running[0]
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=True)
        deadline = killed_at + 120
        replaced_at = None
        while time.monotonic() < deadline:
            now = [r for r in _replicas(app) if r["state"] == "RUNNING"]
            if len(now) == 2 and victim["replica_id"] not in {r["replica_id"] for r in now}:
                replaced_at = time.monotonic()
                break
            time.sleep(0.5)
        assert replaced_at is not None, "Serve did not replace the killed replica within 120 s"
        time.sleep(3)  # traffic on the full set again
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failures = [t for t, ok in log if not ok]
    after = [ok for t, ok in log if t > replaced_at]
    last_failure = max(failures) - killed_at if failures else 0.0
    record("serve_replica_killed", requests=len(log), failed=len(failures),
           failed_share=round(len(failures) / len(log), 5), replaced_after_s=round(replaced_at - killed_at, 1),
           last_failure_after_kill_s=round(last_failure, 2))
    # Budget: under 1% of requests fail while Serve replaces the replica, none once it runs.
    assert len(log) > 200 and len(failures) / len(log) < 0.01
    assert all(after) and len(after) > 20  # every request succeeds once the replacement runs
