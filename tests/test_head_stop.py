"""`make stop` stops its own head and nothing else; a head stopped by Ray's own
`ray stop --force` leaves Serve's HAProxy behind, and the next start clears it.

Two heads run side by side, as on a user's machine during `make test`: the session's
private head, with Serve (and so its HAProxy) started on it, and a "user" head started
through the same command line as `make head`, in a Ray temp folder of its own. `ray stop`
itself cannot run here: it would stop every Ray process of the machine, the session's head
included (which is the point). Its effect on one head is reproduced instead: SIGKILL to
every process of that head that is on Ray's list, which leaves HAProxy running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stocktrend.cluster import processes
from stocktrend.cluster.head import find_head, haproxy_env, head_env
from stocktrend.cluster.ports import HeadPorts, free_ports, port_taken

pytestmark = [pytest.mark.ray, pytest.mark.slow]

START_SERVE = """
import sys, ray
from ray import serve
ray.init(address=sys.argv[1], log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})
"""


class UserHead:
    """A head as `make head` starts it (`python -m stocktrend.cluster up`), on free ports and in
    a Ray temp folder of its own, with Serve started on it."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.ports = HeadPorts.free()
        self.serve_port = free_ports(1)[0]
        self.tmp = Path(tempfile.mkdtemp(prefix="uh", dir="/tmp"))  # short: Ray's socket paths
        self.hap = Path(tempfile.mkdtemp(prefix="uhh", dir="/tmp"))  # HAProxy's, shorter still

    def env(self) -> dict[str, str]:
        return {**head_env(self.ports), "RAY_TMPDIR": str(self.tmp), **haproxy_env(self.hap)}

    def cli(self, action: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stocktrend.cluster", action, *self.ports.start_args()],
                              cwd=self.repo, env=self.env(), capture_output=True, text=True, timeout=timeout)

    def up_with_serve(self) -> processes.HeadProcesses:
        out = self.cli("up")
        for _ in range(2):  # a port free when chosen was taken since (by the session's own head's agents): others
            if out.returncode == 0 or "is already in use" not in out.stderr:
                break
            self.ports, self.serve_port = HeadPorts.free(), free_ports(1)[0]
            out = self.cli("up")
        assert out.returncode == 0, out.stdout + out.stderr
        serve = subprocess.run([sys.executable, "-c", START_SERVE, f"127.0.0.1:{self.ports.gcs}", str(self.serve_port)],
                               env=self.env(), capture_output=True, text=True, timeout=180)
        assert serve.returncode == 0, serve.stderr[-3000:]
        return wait_for_haproxy(self.ports.gcs, self.serve_port)

    def cleanup(self) -> None:
        self.cli("down")
        subprocess.run(["rm", "-rf", str(self.tmp), str(self.hap)], check=False)


def haproxies(head: processes.HeadProcesses) -> list[processes.Proc]:
    return [p for p in head.procs.values() if processes.haproxy_node(p)]


def wait_for_haproxy(gcs_port: int, serve_port: int, timeout: float = 90) -> processes.HeadProcesses:
    """The head's processes once its HAProxy answers on the Serve port."""
    deadline = time.monotonic() + timeout
    while True:
        head = find_head(gcs_port)
        if head and haproxies(head) and healthy(serve_port):
            return head
        assert time.monotonic() < deadline, f"no HAProxy answering on {serve_port}"
        time.sleep(0.5)


def healthy(serve_port: int) -> bool:
    """Whether HAProxy answers HTTP on the Serve port (503 with no application yet is an answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{serve_port}/-/healthz", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def core(head: processes.HeadProcesses) -> list[processes.Proc]:
    """The processes a head lives by: GCS, raylet, dashboard (workers come and go on their
    own, and HAProxy is replaced by a new process at each reload of its config)."""
    return [p for p in head.procs.values() if Path(p.argv[0]).name in ("gcs_server", "raylet")
            or any(a.endswith("dashboard/dashboard.py") for a in p.argv)]


def serving(head: processes.HeadProcesses, serve_port: int) -> bool:
    """An HAProxy of the head's node runs and answers on its Serve port."""
    return any(processes.haproxy_node(p) in head.node_ids for p in processes.snapshot().values()) and healthy(serve_port)


def alive(procs) -> list[processes.Proc]:
    now = processes.snapshot()
    return [p for p in procs if p.pid in now and now[p.pid].argv == p.argv]


@pytest.fixture(scope="module")
def session_serve(ray_module, ray_head):
    """Serve, and so its HAProxy, on the session's private head (as the Serve modules leave it:
    running, with no application)."""
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": ray_head.serve_port})
    return wait_for_haproxy(ray_head.ports.gcs, ray_head.serve_port)


@pytest.fixture
def user_head(repo_root):
    head = UserHead(repo_root)
    yield head
    head.cleanup()


@pytest.mark.timeout(300)
def test_make_stop_stops_its_own_head_and_leaves_another_running(session_serve, user_head, ray_head):
    import ray

    mine = user_head.up_with_serve()
    assert haproxies(mine) and not set(mine.procs) & set(session_serve.procs)
    out = user_head.cli("down")  # what `make stop HEAD_ARGS=...` runs
    assert out.returncode == 0 and f"stopped the Ray head on port {user_head.ports.gcs}" in out.stdout, out.stderr
    assert alive(mine.procs.values()) == []  # workers and HAProxy included
    assert not port_taken(user_head.ports.gcs) and not port_taken(user_head.serve_port)
    assert not port_taken(user_head.ports.haproxy_metrics)
    # The session's head is whole: every process, its HAProxy answering, the cluster usable.
    assert len(core(session_serve)) == 3 and alive(core(session_serve)) == core(session_serve)
    assert serving(session_serve, ray_head.serve_port)
    assert ray.get(ray.remote(lambda: 42).options(num_cpus=0).remote()) == 42
    again = user_head.cli("down")
    assert again.returncode == 0 and f"no Ray head on port {user_head.ports.gcs}" in again.stdout


@pytest.mark.timeout(300)
def test_a_head_starts_after_ray_stop_force_left_haproxy_running(session_serve, user_head, ray_head):
    mine = user_head.up_with_serve()
    (orphan,) = haproxies(mine)
    # `ray stop --force` on this head alone: SIGKILL to what Ray's list names (not HAProxy).
    for p in mine.procs.values():
        if p.pid != orphan.pid:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 30
    while port_taken(user_head.ports.gcs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive([orphan]) and port_taken(user_head.ports.haproxy_metrics)  # what stopped `make head`
    assert orphan.pid in {p.pid for p in processes.stale_haproxies()}
    assert not {processes.haproxy_node(p) for p in processes.stale_haproxies()} & session_serve.node_ids  # live: not stale

    started = user_head.cli("up")  # `make head`, as `make quickstart` runs it
    assert started.returncode == 0, started.stdout + started.stderr
    assert "left by a Ray head that no longer runs" in started.stderr
    assert not alive([orphan])
    assert alive(core(session_serve)) == core(session_serve)
    assert serving(session_serve, ray_head.serve_port)
