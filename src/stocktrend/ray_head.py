"""A Ray head of its own, on loopback and on free ports: for the tests and the benchmarks.

Started with ``ray start --head --block`` (killing that process group stops the whole
cluster it started, HAProxy included), so a test or benchmark never attaches to, nor stops,
a head a user left running on the default ports. Serve's HTTP ingress is the one the
project's own heads use (``ray_session.SERVE_ENV``), with HAProxy's fixed side ports
(metrics 9101, stats 8404) moved to free ones as well.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from stocktrend.ray_session import SERVE_ENV

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


class PrivateRayHead:
    """``up()`` starts it (lazily) and connects this process; ``down()`` stops it, so a test
    can exercise the standalone path (a script starting its own Ray): one cluster at a time."""

    def __init__(self, temp_dir: Path):
        self.temp_dir = temp_dir
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.log = temp_dir / "head.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['gcs']}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    def env(self) -> dict[str, str]:
        """Environment for CLI calls and jobs: the venv first on PATH, token auth on."""
        venv_bin = str(Path(sys.executable).parent)
        haproxy = {"RAY_SERVE_HAPROXY_METRICS_PORT": str(self.ports["haproxy_metrics"]),
                   "RAY_SERVE_HAPROXY_STATS_PORT": str(self.ports["haproxy_stats"])} if self.ports else {}
        return {**os.environ, **RAY_ENV, **SERVE_ENV, **haproxy, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}

    def up(self):
        os.environ.update(RAY_ENV)  # before Ray's import: it reads the auth mode then
        import ray

        if self.proc is None or self.proc.poll() is not None:
            self.temp_dir.mkdir(parents=True, exist_ok=True)
            names = ("gcs", "dashboard", "client", "agent_http", "agent_grpc", "metrics", "runtime_env", "serve",
                     "haproxy_metrics", "haproxy_stats")
            self.ports = dict(zip(names, free_ports(len(names))))
            cmd = [
                str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                "--node-ip-address", "127.0.0.1", "--port", str(self.ports["gcs"]),
                "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.ports["dashboard"]),
                "--ray-client-server-port", str(self.ports["client"]),
                "--dashboard-agent-listen-port", str(self.ports["agent_http"]),
                "--dashboard-agent-grpc-port", str(self.ports["agent_grpc"]),
                "--metrics-export-port", str(self.ports["metrics"]),
                "--runtime-env-agent-port", str(self.ports["runtime_env"]),
                "--num-cpus", "2", "--temp-dir", str(self.temp_dir / "ray"),
            ]
            self.proc = subprocess.Popen(cmd, env=self.env(), stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                         start_new_session=True)
        if not ray.is_initialized():
            os.environ.update(RAY_ENV)
            os.environ.pop("RAY_ADDRESS", None)
            deadline = time.monotonic() + 90
            while True:
                try:
                    ray.init(address=self.address, log_to_driver=False)
                    break
                except Exception:  # not up yet
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError(f"Ray head did not start; see {self.log}:\n{self.log.read_text()[-2000:]}") from None
                    time.sleep(1)
        return self

    def down(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:  # a graceful stop drains for up to 30 s; nothing here needs draining
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.proc = None




def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
