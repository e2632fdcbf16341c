"""Ports a Ray head needs, checked before it starts: a port already taken gets a message that
names the port, its role, who holds it (on Linux) and the flag that moves it."""

from __future__ import annotations

import dataclasses
import os
import random
import socket
from pathlib import Path


class PortInUse(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class HeadPorts:
    """Every fixed port of a head. Defaults are Ray's own (the user's head); ``None`` lets Ray
    pick. HAProxy (Serve's ingress on the project's heads) binds two more side ports, which
    Ray moves only through environment variables."""

    gcs: int | None = 6379
    dashboard: int | None = 8265
    client: int | None = 10001
    agent_http: int | None = 52365
    agent_grpc: int | None = None
    metrics: int | None = None
    runtime_env: int | None = None
    haproxy_metrics: int | None = 9101
    haproxy_stats: int | None = 8404
    # HAProxy's backup server: Serve's Python proxy, on a fixed port. A second head on the
    # machine cannot bind it, and its HAProxy then sends requests to the first head's proxy
    # whenever its own replica is marked down (as during a route change under traffic): one
    # head answered with another head's model. Every head needs its own.
    serve_fallback_http: int | None = 8500
    serve_fallback_grpc: int | None = 9500
    # The first of a block of REPLICA_BLOCK ports for Serve's replicas behind HAProxy (HTTP,
    # then gRPC); None: Ray's 30000-31000 and 40000-41000. Each Serve controller hands these
    # out without knowing about another head's (a taken one is retried), so private heads
    # take a block of their own, well clear of a user's head.
    serve_replicas: int | None = None

    FLAGS = {  # role, `ray start` flag (or environment variable)
        "gcs": ("Ray GCS", "--port"),
        "dashboard": ("Ray dashboard", "--dashboard-port"),
        "client": ("Ray client server", "--ray-client-server-port"),
        "agent_http": ("dashboard agent", "--dashboard-agent-listen-port"),
        "agent_grpc": ("dashboard agent gRPC", "--dashboard-agent-grpc-port"),
        "metrics": ("metrics export", "--metrics-export-port"),
        "runtime_env": ("runtime-env agent", "--runtime-env-agent-port"),
        "haproxy_metrics": ("Serve HAProxy metrics", "RAY_SERVE_HAPROXY_METRICS_PORT"),
        "haproxy_stats": ("Serve HAProxy stats", "RAY_SERVE_HAPROXY_STATS_PORT"),
        "serve_fallback_http": ("Serve fallback proxy (HAProxy's backup)", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"),
        "serve_fallback_grpc": ("Serve fallback proxy, gRPC", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"),
        "serve_replicas": ("Serve replicas' direct ingress (first of a block)", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"),
    }
    REPLICA_BLOCK = 200

    @classmethod
    def free(cls) -> HeadPorts:
        """All on ports free right now (the tests' and benchmarks' private heads)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "serve_replicas"]
        # Between Ray's worker ports (10002-19999) and the ephemeral range (32768-).
        block = random.randrange(20000, 30000 - cls.REPLICA_BLOCK, cls.REPLICA_BLOCK)
        return cls(**dict(zip(names, free_ports(len(names)))), serve_replicas=block)

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name)]

    def start_args(self) -> list[str]:
        return [arg for name, port in self.items() if self.FLAGS[name][1].startswith("--")
                for arg in (self.FLAGS[name][1], str(port))]

    def env(self) -> dict[str, str]:
        out = {self.FLAGS[name][1]: str(port) for name, port in self.items() if not self.FLAGS[name][1].startswith("--")}
        if self.serve_replicas:
            half = self.REPLICA_BLOCK // 2
            out.update({"RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(self.serve_replicas + half - 1),
                        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(self.serve_replicas + half),
                        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(self.serve_replicas + 2 * half - 1)})
        return out


def port_taken(port: int) -> bool:
    """Whether a program listens on ``port`` (SO_REUSEADDR: a port in TIME_WAIT after
    `make stop` is free for Ray's servers, and so is free here)."""
    for host in ("0.0.0.0", "127.0.0.1"):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return True
    return False


def holder_pid(port: int) -> int | None:
    """The pid of the process listening on ``port``, on Linux; None elsewhere or when none does."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:  # no IPv6 table on this machine, say
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cols[9])
    targets = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(os.readlink(fd) in targets for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def holder(port: int) -> str | None:
    """The process listening on ``port`` ("pid 123: gcs_server ..."), on Linux; None elsewhere."""
    pid = holder_pid(port)
    if pid is None:
        return None
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    return f"pid {pid}: {cmd[:120]}"


def check_free(ports: HeadPorts, how_to_move: str) -> None:
    """Raise PortInUse naming the first taken port; ``how_to_move`` says where flags go."""
    for name, port in ports.items():
        if port_taken(port):
            role, flag = ports.FLAGS[name]
            who = holder(port)
            move = (how_to_move.format(flag=flag, port=port) if flag.startswith("--")
                    else f"{flag}=<another port> in the environment (e.g. {flag}=0 lets the OS pick)")
            raise PortInUse(f"port {port} ({role}) is already in use{f' by {who}' if who else ''}. "
                            f"Stop that program, or move the port: {move}")


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free now on every address, as ``port_taken`` checks them: a port that
    loopback would give may be held on another address (a Ray agent listening on the node's),
    and a head started on it fails. Another program may still take one before Ray binds it: the
    caller retries on a start that fails with a taken port (``PrivateRayHead.up``)."""
    ports: list[int] = []
    for _ in range(50):
        socks = [socket.socket() for _ in range(n - len(ports))]
        try:
            for s in socks:
                s.bind(("0.0.0.0", 0))
            fresh = [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
        ports += [p for p in fresh if p not in ports and not port_taken(p)]
        if len(ports) >= n:
            return ports[:n]
    raise OSError(f"could not find {n} free ports")