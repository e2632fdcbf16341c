"""Routing between models and versions, and the durable prediction log, without a cluster."""

from __future__ import annotations

import random

import pytest

from stocktrend.serving.predlog import PredictionLog, read_log
from stocktrend.serving.routes import Route, Routing, select, sticky_unit
from stocktrend.serving.wire import ApiError


@pytest.fixture
def dirs(tmp_path):
    for name, versions in {"msft": ["v1", "v2", "v3"], "panel": ["p1"]}.items():
        for v in versions:
            (tmp_path / name / v).mkdir(parents=True)
            (tmp_path / name / v / "manifest.json").write_text("{}")
    return {"msft": tmp_path / "msft", "panel": tmp_path / "panel"}


def routing(**msft) -> Routing:
    return Routing(default="msft", models={"msft": Route(champion="v2", **msft), "panel": Route(champion="p1")})


def test_ids_select_the_model_and_version(dirs):
    r = routing()
    assert select(r, dirs, None, None).model_id == "msft/v2"
    assert select(r, dirs, "panel", None).model_id == "panel/p1"
    assert select(r, dirs, "msft/v2", None).role == "pinned"  # a routed version
    with pytest.raises(ApiError) as err:  # a version the routes do not name: not for any client to load
        select(r, dirs, "msft/v3", None)
    assert err.value.status == 403 and "pinnable_versions" in err.value.message
    pinned = select(r, dirs, "msft/v3", None, pinnable=["v3"])  # one the deployment allows
    assert pinned.model_id == "msft/v3" and pinned.role == "pinned"
    assert select(r, dirs, "msft/v1", None, pinnable=["*"]).model_id == "msft/v1"  # any verified one on disk
    with pytest.raises(ApiError) as err:
        select(r, dirs, "aapl", None)
    assert err.value.status == 404 and "msft" in err.value.message and "panel" in err.value.message
    with pytest.raises(ApiError) as err:
        select(r, dirs, "msft/v9", None, pinnable=["*"])
    assert err.value.status == 404 and "v1" in err.value.message


def test_split_share_and_stickiness(dirs):
    r = routing(challenger="v1", split=0.1)
    picks = [select(r, dirs, None, f"client-{i}").version for i in range(5000)]
    assert 0.085 < picks.count("v1") / len(picks) < 0.115
    assert [select(r, dirs, None, f"client-{i}").version for i in range(200)] == picks[:200]
    # Raising the split only moves clients towards the challenger.
    wider = routing(challenger="v1", split=0.3)
    assert all(select(wider, dirs, None, f"client-{i}").version == "v1" for i in range(5000) if picks[i] == "v1")
    # Without a client id each request is drawn.
    rng = random.Random(0)
    drawn = [select(r, dirs, None, None, rng).version for _ in range(5000)]
    assert 0.085 < drawn.count("v1") / len(drawn) < 0.115
    assert sticky_unit("msft", "a") != sticky_unit("panel", "a")  # independent across models


def test_shadow_answers_with_the_champion(dirs):
    r = routing(challenger="v1", shadow=True)
    sel = select(r, dirs, None, "anyone")
    assert sel.version == "v2" and sel.role == "champion" and sel.shadow == "v1"


@pytest.mark.parametrize("bad", [dict(split=0.1), dict(shadow=True), dict(challenger="v2"),
                                 dict(challenger="v1", split=0.2, shadow=True), dict(challenger="v1", split=1.5)])
def test_inconsistent_routes_are_refused(bad):
    with pytest.raises(ValueError):
        Route(champion="v2", **bad)


def test_routing_round_trips_through_the_user_config():
    r = routing(challenger="v1", split=0.25)
    assert Routing.from_user_config(r.user_config()) == r
    # A deployment pinned by an older version of this project: one model, one version.
    assert Routing.from_user_config({"model_version": "v7"}, "msft") == Routing(
        default="msft", models={"msft": Route(champion="v7")})
    with pytest.raises(ValueError, match="default model"):
        Routing.from_user_config({"routing": {"default": "x", "models": {"msft": {"champion": "v1"}}}})


def test_prediction_log_appends_rotates_and_survives_a_cut_line(tmp_path):
    model = tmp_path / "msft"
    log = PredictionLog({"msft": model}, "replica/1", flush_s=1, max_bytes=1024)
    for i in range(60):
        log.pending.setdefault("msft", []).append({"i": i, "p_up": [0.5]})
        if i % 10 == 9:
            log._write(log.pending)
            log.pending = {}
    files = sorted((model / "predictions").glob("*.jsonl"))
    assert len(files) > 1 and all(f.name.startswith("replica_1.") for f in files)
    assert [r["i"] for r in read_log(model)] == list(range(60))
    with open(files[-1], "ab") as f:  # a crash mid-line
        f.write(b'{"i": 60, "p_')
    assert len(read_log(model)) == 60
