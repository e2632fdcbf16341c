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


TIGHT = 2  # the "tight" application: one request at a time, one more queued


@pytest.fixture(scope="module")
def app(serve_deploy, two_versions, ray_head):
    _, v2 = two_versions
    return serve_deploy([
        {"name": "reliability", "route_prefix": "/", "args": {
            "model": str(v2.parent), "backend": "onnx", "num_replicas": 2, "num_cpus": ray_head.share(0.25, 2),
            "max_batch_size": 32, "max_ongoing_requests": 64, "batch_wait_timeout_s": 0.005,
            "health_check_period_s": 1, "max_windows_per_request": 16, "monitoring_flush_s": 0.1}},
        # Overload: a queue of one beyond one request in flight.
        {"name": "tight", "route_prefix": "/tight", "args": {
            "model": str(v2.parent), "backend": "onnx", "num_replicas": 1, "num_cpus": ray_head.share(0.1, 1),
            "max_batch_size": 1, "max_ongoing_requests": 1, "max_queued_requests": 1, "health_check_period_s": 1,
            "max_body_bytes": 4 * 1024 * 1024}},
    ])


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
    # Shaped like a tickers request, every field any JSON (a list nested a thousand deep too).
    st.fixed_dictionaries({"tickers": json_value | st.lists(st.text(max_size=40) | json_value, max_size=5)},
                          optional={"as_of": json_value | st.text(max_size=12), "model": json_value}
                          ).map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.integers(900, 1100).map(lambda d: b'{"tickers": ["A", ' + b"[" * d + b"1" + b"]" * d + b"]}"),
    st.integers(900, 1100).map(lambda d: b'{"tickers": ["A"], "as_of": ' + b"[" * d + b"1" + b"]" * d + b"}"),
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
           path=st.sampled_from(["/v1/predict", "/v1/predict/bars", "/v1/predict?attention=true",
                                 "/v1/predict/tickers"]))
    def check(body, path):
        kind, content = body
        if path.startswith(("/v1/predict/bars", "/v1/predict/tickers")) and kind != "application/json":
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


# -- bounded request cost, fuzzed past the top-level checks ---------------------------------
@pytest.fixture(scope="module")
def bars(two_versions, repo_root):
    from stocktrend.inference.bars import bars_until
    from stocktrend.inference.predictor import Predictor

    return bars_until(Predictor.from_artifact(two_versions[1]), repo_root / "datasets")


def _alive(client: httpx.Client, app) -> bool:
    return client.get(app.url("/healthz")).status_code == 200


scalar_or_worse = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=12),
                            st.sampled_from(["2017-01-03T00:00:00+05:00", "2017-13-45", "", "NaN", "-1", "1e400"]),
                            st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                 max_size=2))


@st.composite
def bars_mutation(draw, sources: list[str]):
    """One change to a valid bars body, past the top-level checks: inside a source's rows."""
    return (draw(st.sampled_from(sources)),
            draw(st.sampled_from(["value", "date", "new_key", "drop_key", "drop_rows", "repeat_rows", "reverse",
                                  "not_a_row", "many_rows", "distinct_keys"])),
            draw(st.integers(0, 10**6)), draw(scalar_or_worse), draw(st.text(min_size=1, max_size=8)))


def _mutate(bars: dict, mutation) -> dict:
    source, kind, at, value, key = mutation
    body = {name: [dict(r) for r in rows] for name, rows in bars.items()}
    rows = body[source]
    i = at % len(rows)
    cols = list(rows[0])
    if kind == "value":
        rows[i][cols[1 + at % (len(cols) - 1)]] = value
    elif kind == "date":
        rows[i][cols[0]] = value
    elif kind == "new_key":
        rows[i][key] = value
    elif kind == "drop_key":
        rows[i].pop(cols[at % len(cols)])
    elif kind == "drop_rows":
        body[source] = rows[: i]
    elif kind == "repeat_rows":
        body[source] = rows + rows[: i + 1]
    elif kind == "reverse":
        body[source] = rows[::-1]
    elif kind == "not_a_row":
        rows[i] = value
    elif kind == "many_rows":
        body[source] = rows * 4
    elif kind == "distinct_keys":
        body[source] = [{**r, f"{key}{n}": 1} for n, r in enumerate(rows)]
    return body


@st.composite
def npy_header(draw):
    """A .npy body whose header declares anything, followed by any amount of data."""
    descr = draw(st.sampled_from(["<f4", "<f8", ">f8", "|O", "<i8", "<f2", "<c16", "|S10", "<U3", "x"]))
    shape = tuple(draw(st.lists(st.one_of(st.integers(0, 40), st.integers(0, 10**12)), max_size=4)))
    header = f"{{'descr': {descr!r}, 'fortran_order': {draw(st.booleans())}, 'shape': {shape!r}, }}"
    if draw(st.booleans()):
        header = header[: draw(st.integers(0, len(header)))]  # cut anywhere
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]))
    text = header.encode("latin1")
    size = 4 if version == (1, 0) else 4 + 2
    text += b" " * ((64 - (8 + size + len(text) + 1) % 64) % 64) + b"\n"
    length = len(text).to_bytes(2 if version == (1, 0) else 4, "little")
    data = b"\0" * draw(st.sampled_from([0, 1, 7, 4 * 30 * 8, 8 * 30 * 8, 8 * 10 * 8, 4 * 10 * 8 * 3]))
    return b"\x93NUMPY" + bytes(version) + length + text + data


@pytest.mark.timeout(600)
def test_fuzzed_bars_rows_and_npy_headers_get_4xx_and_leave_the_replica_alive(app, bars, val):
    """Generated, not hand-listed: changes inside a source's rows (values, dates with other
    UTC offsets, keys, row counts) and .npy headers declaring any dtype, shape and size. No
    5xx, and after every case the replica answers /healthz."""
    client = httpx.Client(timeout=60)
    statuses: dict[int, int] = {}

    @settings(max_examples=80, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(bars_mutation(sorted(bars)).map(lambda m: ("bars", m)), npy_header().map(lambda b: ("npy", b))))
    def check(case):
        kind, what = case
        if kind == "bars":
            r = client.post(app.url("/v1/predict/bars"), json={"bars": _mutate(bars, what)})
        else:
            r = client.post(app.url("/v1/predict"), content=what, headers={"Content-Type": "application/x-npy"})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (kind, str(what)[:300], r.text[:300])
        if r.status_code != 200:
            assert r.json()["error"]["field"], r.text[:300]
        assert _alive(client, app)

    try:
        check()
        assert client.post(app.url("/v1/predict/bars"), json={"bars": bars}).status_code == 200
    finally:
        client.close()
    record("serve_fuzz_rows_and_headers", cases=sum(statuses.values()), statuses=statuses, errors_5xx=0)
    assert sum(v for k, v in statuses.items() if 400 <= k < 500) >= 40


def _replica_pid(app_name: str, deployment: str) -> int:
    from ray.util.state import list_actors

    from stocktrend.cluster.resources import state_address

    (actor,) = list_actors(address=state_address(), detail=True, raise_on_missing_output=False, filters=[
        ("class_name", "=", f"ServeReplica:{app_name}:{deployment}"), ("state", "=", "ALIVE")])
    return actor.pid


def _rss_bytes(pid: int) -> int:
    line = next(x for x in open(f"/proc/{pid}/status") if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _chunked_post(port: int, path: str, total: int, chunk: int = 256 * 1024) -> tuple[int | None, int]:
    """POST ``total`` bytes with Transfer-Encoding: chunked (no Content-Length); stops sending
    as soon as an answer arrives. Returns (status, bytes sent)."""
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    answered, sent = threading.Event(), [0]

    def pump():
        piece = b"%x\r\n" % chunk + b" " * chunk + b"\r\n"
        try:
            while sent[0] < total and not answered.is_set():
                sock.sendall(piece)
                sent[0] += chunk
            if not answered.is_set():
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection after answering
            pass

    sender = threading.Thread(target=pump)
    sender.start()
    try:
        head = sock.recv(4096).decode(errors="replace")
    finally:
        answered.set()
        sender.join(60)
        sock.close()
    return (int(head.split()[1]) if head.startswith("HTTP/") else None), sent[0]


@pytest.mark.timeout(120)
def test_a_chunked_oversized_body_is_refused_while_it_streams(app):
    cap = 4 * 1024 * 1024  # the "tight" application's max_body_bytes
    pid = _replica_pid("tight", PREDICTOR_DEPLOYMENT)
    before = _rss_bytes(pid)
    status, sent = _chunked_post(app.head.serve_port, "/tight/v1/predict/bars", 64 * 1024 * 1024)
    grown = _rss_bytes(pid) - before
    record("serve_chunked_oversize", status=status, sent_mib=round(sent / 2**20, 1), rss_growth_mib=round(grown / 2**20, 1),
           cap_mib=cap / 2**20)
    assert status == 413 and sent < 64 * 1024 * 1024
    assert grown < 2 * cap, f"the replica grew by {grown / 2**20:.1f} MiB for a cap of {cap / 2**20:.0f} MiB"


@pytest.mark.timeout(120)
def test_overload_beyond_the_queue_answers_503_with_retry_after_within_a_second(app, bars):
    """The "tight" application holds one request and queues one more: a burst of bars requests
    (each featurised for tens of milliseconds) is shed at once, and the replica serves normally
    afterwards."""
    body = json.dumps({"bars": bars}).encode()
    results: list[tuple[int, float, str | None]] = []
    go = threading.Barrier(24)

    def one():
        with httpx.Client(timeout=30) as c:
            go.wait()
            t0 = time.monotonic()
            r = c.post(app.url("/tight/v1/predict/bars"), content=body, headers={"Content-Type": "application/json"})
            results.append((r.status_code, time.monotonic() - t0, r.headers.get("retry-after")))

    threads = [threading.Thread(target=one) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    shed = [(dt, retry) for code, dt, retry in results if code == 503]
    record("serve_overload", requests=len(results), answered=sum(c == 200 for c, _, _ in results), shed=len(shed),
           slowest_shed_s=round(max((dt for dt, _ in shed), default=0.0), 3))
    assert {c for c, _, _ in results} <= {200, 503} and len(results) == 24
    assert shed and all(dt < 1.0 and retry for dt, retry in shed), shed
    after = httpx.post(app.url("/tight/v1/predict/bars"), content=body, headers={"Content-Type": "application/json"},
                       timeout=30)
    assert after.status_code == 200


def _traffic(app, body: bytes, stop: threading.Event, log: list, path: str = "/v1/predict", get: bool = False):
    with httpx.Client(timeout=30) as c:
        while not stop.is_set():
            try:
                r = c.get(app.url(path)) if get else c.post(app.url(path), content=body,
                                                            headers={"Content-Type": "application/json"})
                log.append(r.status_code)
            except httpx.HTTPError as err:
                log.append(repr(err))


@pytest.mark.timeout(120)
def test_monitoring_hammered_beside_predictions_never_answers_5xx(app, val):
    body = json.dumps({"windows": val[:2].tolist()}).encode()
    predicted, watched, stop = [], [], threading.Event()
    threads = [threading.Thread(target=_traffic, args=(app, body, stop, predicted)) for _ in range(4)]
    threads += [threading.Thread(target=_traffic, args=(app, b"", stop, watched, "/v1/monitoring", True))
                for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(8)
    stop.set()
    for t in threads:
        t.join(60)
    record("serve_monitoring_hammered", predictions=len(predicted), monitoring_requests=len(watched),
           not_200=sum(s != 200 for s in predicted + watched))
    assert len(watched) > 50 and set(predicted) == {200} and set(watched) == {200}, \
        (set(predicted), set(watched))


@pytest.mark.timeout(300)
def test_predictions_keep_answering_while_the_monitor_is_killed(app, val):
    """The monitor is a separate replica: killed under traffic, no prediction fails; Serve
    starts a new one, the replicas tell it their models again, and monitoring resumes."""
    body = json.dumps({"windows": val[:1].tolist()}).encode()
    details = app.control.app_details(app.head.dashboard, "reliability")
    (monitor,) = [r for r in details["deployments"]["Monitor"]["replicas"] if r["state"] == "RUNNING"]
    log, stop = [], threading.Event()
    threads = [threading.Thread(target=_traffic, args=(app, body, stop, log)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        ray.kill(ray.get_actor(monitor["actor_name"], namespace="serve"), no_restart=True)
        time.sleep(6)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert len(log) > 100 and set(log) == {200}, {s for s in log if s != 200}
    deadline, figures = time.monotonic() + 120, None
    with httpx.Client(timeout=30) as c:
        while time.monotonic() < deadline:
            c.post(app.url("/v1/predict"), content=body, headers={"Content-Type": "application/json"})
            r = c.get(app.url("/v1/monitoring"))
            if r.status_code == 200 and r.json().get("totals", {}).get("predictions", 0) > 0:
                figures = r.json()
                break
            time.sleep(1)
    record("serve_monitor_killed", predictions=len(log), failed=sum(s != 200 for s in log),
           monitoring_resumed=figures is not None)
    assert figures is not None, "monitoring did not resume after the monitor was replaced"
