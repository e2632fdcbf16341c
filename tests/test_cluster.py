"""The cluster helpers without a cluster: the token, ports, session pruning, resource sizing
and the preflight's message (the real-head paths are in test_first_contact.py)."""

from __future__ import annotations

import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stocktrend.cluster import auth, resources
from stocktrend.cluster.head import prune_sessions
from stocktrend.cluster.ports import HeadPorts, PortInUse, check_free
from stocktrend.training.ray_train import prune_stale_run_folders


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in (auth.TOKEN_ENV, auth.TOKEN_PATH_ENV, auth.MODE_ENV):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_token_is_created_once_private_and_reused(empty_home):
    assert auth.read_token() is None
    token = auth.ensure_token()
    path = empty_home / ".ray" / "auth_token"
    assert len(token) == 64 and int(token, 16) >= 0
    assert path.read_text() == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.ensure_token() == token
    assert auth.auth_headers() == {"Authorization": f"Bearer {token}"}
    assert not [p for p in path.parent.iterdir() if p.name != "auth_token"]  # no temporary file left


def test_token_sources_follow_rays_order(empty_home, monkeypatch):
    monkeypatch.setenv(auth.TOKEN_PATH_ENV, str(empty_home / "elsewhere" / "token"))
    token = auth.ensure_token()
    assert (empty_home / "elsewhere" / "token").read_text() == token
    assert not (empty_home / ".ray").exists()
    monkeypatch.setenv(auth.TOKEN_ENV, "from-the-environment")
    assert auth.ensure_token() == "from-the-environment"


def _race(_):
    return auth.ensure_token()


def test_racing_processes_agree_on_one_token(empty_home):
    with multiprocessing.get_context("fork").Pool(6) as pool:
        tokens = set(pool.map(_race, range(24)))
    assert tokens == {(empty_home / ".ray" / "auth_token").read_text()}


def test_clients_turn_token_mode_on_only_when_a_token_exists_and_respect_an_explicit_mode(empty_home, monkeypatch):
    assert auth.use_token_auth() is False and auth.MODE_ENV not in os.environ
    auth.ensure_token()
    assert auth.use_token_auth() is True and os.environ[auth.MODE_ENV] == "token"
    monkeypatch.setenv(auth.MODE_ENV, "disabled")
    assert auth.use_token_auth() is False and os.environ[auth.MODE_ENV] == "disabled"


def test_head_ports_become_flags_and_haproxy_environment():
    ports = HeadPorts(gcs=1, dashboard=2, client=3, agent_http=4, agent_grpc=None, metrics=None, runtime_env=None,
                      haproxy_metrics=5, haproxy_stats=6, serve_fallback_http=7, serve_fallback_grpc=8)
    assert ports.start_args() == ["--port", "1", "--dashboard-port", "2", "--ray-client-server-port", "3",
                                  "--dashboard-agent-listen-port", "4"]
    assert ports.env() == {"RAY_SERVE_HAPROXY_METRICS_PORT": "5", "RAY_SERVE_HAPROXY_STATS_PORT": "6",
                           "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": "7", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": "8"}
    free = HeadPorts.free()
    assert len({p for _, p in free.items()}) == len(free.items()) == 12
    # A private head's Serve replicas take a block of their own, clear of Ray's default
    # 30000-31000 / 40000-41000 (a user's head) and of Ray's worker ports (10002-19999).
    env = {k: int(v) for k, v in free.env().items() if k.startswith("RAY_SERVE_DIRECT_INGRESS_")}
    assert 20000 <= env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] < env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] \
        < env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"] < env["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"] < 30000


def test_a_taken_port_names_its_role_holder_and_flag():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUse) as err:
            check_free(HeadPorts(dashboard=port, gcs=None, client=None, agent_http=None, haproxy_metrics=None,
                                 haproxy_stats=None, serve_fallback_http=None, serve_fallback_grpc=None),
                       "make head HEAD_ARGS='{flag} N'")
    message = str(err.value)
    assert f"port {port} (Ray dashboard) is already in use by pid {os.getpid()}" in message
    assert "make head HEAD_ARGS='--dashboard-port N'" in message
    with socket.socket() as s:  # a port moved by an environment variable says so
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(PortInUse, match="RAY_SERVE_HAPROXY_STATS_PORT=<another port> in the environment"):
            check_free(HeadPorts(gcs=None, dashboard=None, client=None, agent_http=None, haproxy_metrics=None,
                                 haproxy_stats=s.getsockname()[1], serve_fallback_http=None,
                                 serve_fallback_grpc=None), "{flag} N")


def test_old_ray_sessions_are_pruned_but_never_the_current_one(tmp_path):
    now = time.time()
    sessions = []
    for i in range(6):
        p = tmp_path / f"session_2026-12-0{i + 1}_00-00-00_000000_{i}"
        p.mkdir()
        os.utime(p, (now - 1000 * (6 - i), now - 1000 * (6 - i)))  # session 5 is the newest
        sessions.append(p)
    (tmp_path / "session_latest").symlink_to(sessions[0])  # the running head's, the oldest
    assert prune_sessions(tmp_path, keep=3) == []  # written to within the day: maybe a live head's
    removed = prune_sessions(tmp_path, keep=3, min_age_s=0)
    left = sorted(p.name for p in tmp_path.glob("session_2*"))
    assert left == sorted([sessions[0].name, sessions[4].name, sessions[5].name])
    assert len(removed) == 3


def test_stale_empty_run_folders_go_and_live_ones_stay(tmp_path):
    old_empty, old_full, new_empty = (tmp_path / f"lightning_checkpoints-job_id=0{i}-name=x-world_rank=0"
                                      for i in range(3))
    for p in (old_empty, old_full, new_empty):
        p.mkdir()
    (old_full / "3").mkdir()
    for p in (old_empty, old_full):
        os.utime(p, (time.time() - 7 * 3600, time.time() - 7 * 3600))
    prune_stale_run_folders(tmp_path)
    assert not old_empty.exists() and old_full.exists() and new_empty.exists()


def test_units_fit_whole_on_a_node():
    nodes = [{"CPU": 1.5}, {"CPU": 4.0, "GPU": 1.0}]
    assert resources.units_that_fit({"CPU": 1}, nodes) == 5
    assert resources.units_that_fit({"CPU": 2}, nodes) == 2  # 1.5 CPUs on the first node hold none
    assert resources.units_that_fit({"CPU": 1, "GPU": 0.25}, nodes) == 4
    assert resources.units_that_fit({"CPU": 0, "GPU": 0}, nodes) >= 10**6


def test_cpus_per_unit_prefers_whole_cpus_then_quarters():
    assert resources.cpus_per_unit(1, [{"CPU": 1.5}]) == 1.0  # beside a 0.5-CPU Serve replica on 2 cores
    assert resources.cpus_per_unit(2, [{"CPU": 1.5}]) == 0.75
    assert resources.cpus_per_unit(2, [{"CPU": 8.0}, {"CPU": 2.0}]) == 4.0
    assert resources.cpus_per_unit(1, [{"CPU": 0.0}]) == 1.0  # does not fit: the preflight says so


def test_the_message_says_what_was_asked_what_is_free_who_holds_it_and_what_to_do(monkeypatch):
    monkeypatch.setattr(resources, "holders", lambda: ["0.5 CPU by Serve application 'stocktrend' (1 replica of Predictor)"])
    ask = resources.Ask("training", {"CPU": 2.0, "GPU": 0.0}, 1, hint="--cpus-per-worker N")
    text = resources.unavailable_message(ask, [{"CPU": 1.5}], {"CPU": 2.0}, {"CPU": 2.0})
    assert text.startswith("training asks for 1 worker x 2 CPU; the cluster has 1.5 of 2 CPU free.")
    assert "0.5 CPU by Serve application 'stocktrend'" in text
    assert "--cpus-per-worker N" in text and "serve shutdown -y" in text and "--wait-for-resources" in text
    assert "can never be met" not in text
    gpu = resources.Ask("training", {"CPU": 1.0, "GPU": 1.0}, 1)
    text = resources.unavailable_message(gpu, [{"CPU": 2.0}], {"CPU": 2.0}, {"CPU": 2.0})
    assert "no node with that much GPU: it can never be met here" in text


def test_custom_resources_are_asked_for_and_named_when_missing(monkeypatch):
    """A node type (--resources '{"gpu_node": 1}') is part of the ask: a cluster without
    such a node is told so, in the same words as CPUs and GPUs."""
    import argparse

    from stocktrend.serving.control import replica_ask

    assert resources.parse_resources('{"gpu_node": 1, "x": 0.5}') == {"gpu_node": 1.0, "x": 0.5}
    for bad in ("gpu_node", '{"gpu_node": -1}', "[1]"):
        with pytest.raises(argparse.ArgumentTypeError):
            resources.parse_resources(bad)
    nodes = [{"CPU": 2.0}, {"CPU": 2.0, "gpu_node": 1.0}]
    assert resources.units_that_fit({"CPU": 1, "gpu_node": 1}, nodes) == 1
    monkeypatch.setattr(resources, "holders", lambda: [])
    ask = resources.Ask("the search", {"CPU": 1.0, "GPU": 0.0, "gpu_node": 1.0}, 1, "trial")
    text = resources.unavailable_message(ask, [{"CPU": 2.0}], {"CPU": 2.0}, {"CPU": 2.0})
    assert "0 of 0 gpu_node free" in text and "no node with that much gpu_node" in text
    config = {"applications": [{"name": "a", "args": {"num_replicas": 2, "num_cpus": 0.5, "resources": {"serve_node": 1}}},
                               {"name": "b", "args": {"num_replicas": 1, "num_cpus": 1.0}}]}
    got = replica_ask(config)
    assert got.units == 3 and got.per_unit == {"CPU": 1.0, "GPU": 0.0, "serve_node": 1.0}


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "ray_jobs").glob("*.py")))
def test_every_entry_point_has_help_and_those_asking_for_resources_can_wait(name, repo_root):
    out = subprocess.run([sys.executable, str(repo_root / "ray_jobs" / f"{name}.py"), "--help"], capture_output=True,
                         text=True, timeout=120, cwd=repo_root)
    assert out.returncode == 0 and out.stdout.startswith("usage:"), out.stderr[-2000:]
    asks = name in ("audit_leakage", "train", "tune", "evaluate", "predict", "deploy", "retrain",
                    "compare_families")
    assert ("--wait-for-resources" in out.stdout) == asks


@pytest.mark.timeout(30)
def test_a_dead_heads_record_is_not_followed(tmp_path, monkeypatch):
    """A head killed without stopping leaves Ray's ray_current_cluster behind; joining it would
    retry a dead address for minutes, so connect() follows the record only when its port answers."""
    from stocktrend.cluster.connect import recorded_head
    from stocktrend.cluster.head import ray_temp_root

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    root = ray_temp_root()
    root.mkdir(parents=True)
    assert recorded_head() is None  # no record
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        (root / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
        assert recorded_head() == f"127.0.0.1:{port}"
    assert recorded_head() is None  # the same record once nothing listens there
