"""Starting the project's Ray heads: the user's persistent one (``make head``, ``deploy.py``)
and the private ones of the tests and benchmarks, through one command line.

Every head runs with token authentication (it protects a head whose internal ports listen
on the node's address), Serve's HAProxy ingress and no usage stats. Before it starts, the
token is created if missing, the ports are checked, and Ray session folders of earlier runs
beyond the newest few are removed, so the system temp folder stays bounded.

    python -m stocktrend.cluster up [--port 6379] [--dashboard-port 8265] ...   (cluster/__main__.py)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stocktrend.cluster import processes
from stocktrend.cluster.auth import SHOW_TOKEN_COMMAND, ensure_token
from stocktrend.cluster.ports import HeadPorts, PortInUse, check_free, free_ports, holder, holder_pid

log = logging.getLogger(__name__)

# Environment of every head the project starts (and so of every job and replica on it).
# HAProxy ingress (a Ray 2.60 feature flag): HTTP goes from HAProxy straight to the replicas
# instead of through the Python proxy actor; measured here it halves latency and quadruples
# throughput (docs/BENCHMARKS.md), and the reliability suite runs with it.
# How the project runs Serve, on every head and node it starts (the manifests, cluster.yaml and
# the image carry the same; a test checks them): the HAProxy ingress, and Serve's throughput-
# optimized mode (user code on the replica's own event loop, no log copy to stderr, gRPC
# between deployments, GC frozen after start-up), measured against Serve's defaults in
# bench/serve_load.py (docs/BENCHMARKS.md). Except its log buffer: it holds a replica's
# INFO and WARNING lines until 1,000 have gathered (a quiet replica's never reach the file,
# a crash loses them), and the request line it was made for is sampled here instead
# (ServeArgs.request_log_every).
SERVE_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
             "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1"}
HEAD_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", **SERVE_ENV}
KEEP_SESSIONS = 3


class HeadError(RuntimeError):
    pass


def ray_executable() -> str:
    ray = Path(sys.executable).parent / "ray"
    return str(ray) if ray.exists() else "ray"


def ray_temp_root() -> Path:
    """Ray's temp root as Ray computes it (``RAY_TMPDIR``, else ``TMPDIR`` on Linux, else /tmp)."""
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir())


def prune_sessions(temp_root: Path, keep: int = KEEP_SESSIONS, min_age_s: float = 24 * 3600) -> list[Path]:
    """Remove Ray session folders beyond the newest ``keep`` that nothing has written to for
    ``min_age_s`` (never the current one: a head that has run for days keeps writing logs).
    Ray itself never deletes them; each holds the logs of one cluster's life."""
    latest = temp_root / "session_latest"
    current = latest.resolve() if latest.is_symlink() else None
    sessions = sorted((p for p in temp_root.glob("session_2*") if p.is_dir() and p.resolve() != current),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    removed = [p for p in sessions[max(0, keep - (current is not None)):] if now - _last_write(p) > min_age_s]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    if removed:
        log.info("removed %d old Ray session folders from %s", len(removed), temp_root)
    return removed


def _last_write(session: Path) -> float:
    logs = session / "logs"
    return max([session.stat().st_mtime, *(p.stat().st_mtime for p in logs.iterdir())] if logs.is_dir()
               else [session.stat().st_mtime])


def start_command(ports: HeadPorts, temp_dir: Path | None = None, num_cpus: float | None = None,
                  block: bool = False, node_ip: str | None = None) -> list[str]:
    """``ray start --head``; the dashboard on loopback; ``node_ip`` 127.0.0.1 keeps every port
    of a private head on loopback (a user's head listens on the node's address, as Ray does)."""
    cmd = [ray_executable(), "start", "--head", "--dashboard-host", "127.0.0.1", "--disable-usage-stats",
           *ports.start_args()]
    if node_ip:
        cmd += ["--node-ip-address", node_ip]
    if temp_dir is not None:
        cmd += ["--temp-dir", str(temp_dir)]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if block:
        cmd.append("--block")
    return cmd


def haproxy_env(base: Path) -> dict[str, str]:
    """Serve's HAProxy keeps its config, sockets and state in /tmp/haproxy-serve/<node id>/
    unless told otherwise: the private heads keep them in their own folder, which goes
    with them (each user head leaves ~80 KB there)."""
    return {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock")}


def head_env(ports: HeadPorts, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a head and of the CLI calls made against it: the venv's Python
    first on PATH (jobs run `python` from it), token mode, HAProxy on the head's ports."""
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, **HEAD_ENV, **ports.env(), **(extra or {}),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}


def _already_running(ports: HeadPorts) -> str | None:
    """A Ray head on the GCS or dashboard port (what ``make head`` twice should find)."""
    for port in (ports.gcs, ports.dashboard):
        who = port and holder(port)
        if who and ("gcs_server" in who or "ray/dashboard" in who):
            return who
    return None


def start_head(ports: HeadPorts | None = None, num_cpus: float | None = None, timeout: float = 120) -> str:
    """Start a persistent head on this machine (it outlives this process: `make stop` ends
    it) unless one is running; return its dashboard URL. Serve's HAProxy left behind by a head
    that no longer runs (Ray's own `ray stop` does not stop it) is cleared first: it would
    hold the Serve port and HAProxy's side ports."""
    ports = ports or HeadPorts()
    dashboard = f"http://127.0.0.1:{ports.dashboard}"
    running = _already_running(ports)
    if running:
        log.info("a Ray head is already running (%s)", running)
        return dashboard
    ensure_token()
    cleared = processes.clear_stale_haproxies()
    how = "python -m stocktrend.cluster up {flag} <another port> (with make: make head HEAD_ARGS='{flag} <another port>')"
    deadline = time.monotonic() + (10 if cleared else 0)
    while True:  # the ports of a stopped HAProxy are free once its last thread has gone
        try:
            check_free(ports, how)
            break
        except PortInUse:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
    prune_sessions(ray_temp_root())
    cmd = start_command(ports, num_cpus=num_cpus)
    log.info("starting a Ray head: %s", " ".join(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True, env=head_env(ports), timeout=timeout)
    if out.returncode != 0:
        raise HeadError(f"`ray start --head` failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return dashboard


def find_head(gcs_port: int) -> processes.HeadProcesses | None:
    """The processes of the Ray head whose GCS server listens on ``gcs_port``, or None when
    no Ray head does (HeadError when another program holds the port)."""
    pid = holder_pid(gcs_port)
    if pid is None:
        return None
    try:
        found = processes.head_processes(pid)
    except (ProcessLookupError, ValueError) as err:
        raise HeadError(f"port {gcs_port} is held by {holder(gcs_port) or f'pid {pid}'}, not a Ray head: {err}") from None
    return found


def stop_head(gcs_port: int = HeadPorts.gcs, grace_s: float = 10.0) -> str:
    """Stop the Ray head on ``gcs_port`` and everything it started (Serve, jobs, HAProxy),
    and no other: a private head of a running `make test` or benchmark is never touched (as
    Ray's own `ray stop`, which stops every Ray process of the machine, would). Serve HAProxies
    of heads that are gone are cleared too. Returns what was done, in a line."""
    head = find_head(gcs_port)
    stale = processes.clear_stale_haproxies()
    said = f"; cleared {len(stale)} HAProxy left by a head that is gone" if stale else ""
    if head is None:
        return f"no Ray head on port {gcs_port}{said}"
    failed = processes.stop_head_processes(head, grace_s)
    current = ray_temp_root() / "ray_current_cluster"  # where `ray.init(address="auto")` looks
    try:
        if current.read_text().strip().endswith(f":{gcs_port}"):
            current.unlink()
    except OSError:
        pass
    if failed:
        raise HeadError(f"could not stop {len(failed)} processes of the head on port {gcs_port}: "
                        + ", ".join(f"pid {p.pid}" for p in failed))
    return f"stopped the Ray head on port {gcs_port} ({head.describe()}){said}"


def login_lines(dashboard: str) -> list[str]:
    """What a person needs to get into a token-mode head."""
    return [
        f"Ray dashboard: {dashboard} (token authentication: the page asks for the token)",
        f"  print the token:  .venv/bin/{SHOW_TOKEN_COMMAND}",
        "  Ray's own CLI in a new shell (ray status, ray job submit, serve status): source .venv/bin/activate",
        "  stop the head and everything on it: make stop",
    ]


class PrivateRayHead:
    """A head of the tests' and benchmarks' own, on free loopback ports, in its own temp
    folder: they never attach to, nor stop, a head the user left running. Started with
    ``--block`` in a new process group, so killing that group stops the whole cluster it
    started, HAProxy included. ``up()`` starts it (lazily) and connects this process;
    ``down()`` stops it, so a test can exercise a script that starts its own Ray."""

    START_ATTEMPTS = 3
    # How long a stopping Serve replica keeps answering behind HAProxy. Ray holds ingress
    # replicas for 30 s so that load balancers in front of a cluster can deregister them;
    # a private head has none (its HAProxy, on the same node, drops the replica at its next
    # reload, well within this), and 30 s per deleted application was a fifth of the suite.
    SERVE_DRAIN_S = 5

    def __init__(self, temp_dir: Path, num_cpus: int = 2, extra_env: dict[str, str] | None = None):
        self.temp_dir = temp_dir
        self.num_cpus = num_cpus
        self.extra_env = extra_env or {}  # e.g. Serve's constants, read by each of its processes at import
        self.proc: subprocess.Popen | None = None
        self.ports = HeadPorts.free()
        self.serve_port = free_ports(1)[0]  # Serve's HTTP, for the deployments made on it
        self.log = temp_dir / "head.log"
        # HAProxy's unix sockets need a path far shorter than the 108-byte limit (it appends
        # to their names): a folder of their own directly under /tmp, removed by down().
        self.haproxy_dir = Path(tempfile.mkdtemp(prefix="sthap", dir="/tmp"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports.gcs}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports.dashboard}"

    def env(self) -> dict[str, str]:
        """For CLI calls and jobs against this head. Ray's workers get a temp folder inside
        ours (Lightning's per-run checkpoint folders land there, and go with it), and a Ray
        temp root that is this head's own: Ray's state API, called inside Ray's own actors
        (Ray Train's placement-group cleaner among them), finds "the" cluster through the
        address file there; with the user's head also on the machine it would otherwise find
        two, fail, and leave a dead training run's placement group holding its CPUs."""
        return head_env(self.ports, {"TMPDIR": str(self.temp_dir / "tmp"), "RAY_TMPDIR": str(self.temp_dir),
                                     "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(self.SERVE_DRAIN_S),
                                     **haproxy_env(self.haproxy_dir), **self.extra_env})

    def _start(self) -> None:
        (self.temp_dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.haproxy_dir.mkdir(exist_ok=True)
        for attempt in range(1, self.START_ATTEMPTS + 1):
            cmd = start_command(self.ports, self.temp_dir / "ray", self.num_cpus, block=True, node_ip="127.0.0.1")
            self.proc = subprocess.Popen(cmd, env=self.env(), stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                         start_new_session=True)
            time.sleep(2)
            text = self.log.read_text()
            if self.proc.poll() is None or "address already in use" not in text.lower() or attempt == self.START_ATTEMPTS:
                return
            # A free port was taken between our probe and Ray's bind: new ports, again.
            log.warning("Ray head on taken ports (attempt %d): retrying on others", attempt)
            self.ports = HeadPorts.free()

    def up(self):
        os.environ.update(HEAD_ENV)  # before Ray's import: it reads the auth mode then
        import ray

        if self.proc is None or self.proc.poll() is not None:
            ensure_token()
            self._start()
        if not ray.is_initialized():
            os.environ.update(HEAD_ENV)
            os.environ.pop("RAY_ADDRESS", None)
            deadline = time.monotonic() + 90
            while True:
                try:
                    ray.init(address=self.address, log_to_driver=False)
                    break
                except Exception:  # not up yet
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise HeadError(f"Ray head did not start; see {self.log}:\n{self.log.read_text()[-2000:]}") from None
                    time.sleep(1)
        return self

    def down(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.proc is not None and self.proc.poll() is None:
            try:  # what the process group below misses: workers run in groups of their own
                family = find_head(self.ports.gcs)
            except HeadError:
                family = None
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:  # a graceful stop drains for up to 30 s; nothing here needs draining
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            if family is not None:
                processes.stop_head_processes(family, grace_s=2.0)
        self.proc = None
        shutil.rmtree(self.haproxy_dir, ignore_errors=True)
