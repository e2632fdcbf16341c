"""Which processes of this machine belong to which Ray head, read from /proc (Linux).

Ray's own `ray stop` ends every Ray process of the machine, found by name: the user's head,
and with it the private heads of a running `make test` or benchmark. The project stops one
head at a time instead (`make stop`, the tests' private heads): the processes whose command
line names the head's session folder or its node id, and everything they started (agents,
workers, job drivers, Serve's HAProxy).

Serve's HAProxy is not on Ray's list, so `ray stop` leaves it running with the head's Serve
port and HAProxy's side ports taken. It is recognised by its config file, which Serve keeps in
a folder named after the node (``<dir>/<node id>/haproxy.cfg``): one whose node no raylet of
this machine runs any more belongs to a head that is gone and is cleared; one of a live head
is never touched.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

NODE_ID = re.compile(r"[0-9a-f]{56}")


@dataclasses.dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    argv: tuple[str, ...]
    started: int = 0  # clock ticks after boot: with the pid, names one process (pids are reused)

    @property
    def text(self) -> str:
        return " ".join(self.argv)

    def arg(self, name: str) -> str | None:
        """The value of ``name=value`` or ``name value`` in the command line."""
        for i, a in enumerate(self.argv):
            if a.startswith(f"{name}="):
                return a[len(name) + 1:]
            if a == name and i + 1 < len(self.argv):
                return self.argv[i + 1]
        return None


def _read(pid: int) -> Proc | None:
    base = Path("/proc") / str(pid)
    try:
        argv = tuple(a.decode(errors="replace") for a in (base / "cmdline").read_bytes().split(b"\0") if a)
        stat = (base / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ... starttime ...": comm may hold spaces and parentheses, so the
    # fields are counted after the last ")" (state is field 3, ppid 4, starttime 22).
    fields = stat.rsplit(")", 1)[1].split()
    if not argv or fields[0] == "Z":  # kernel threads; zombies are gone for our purposes
        return None
    return Proc(pid, int(fields[1]), argv, int(fields[19]))


def snapshot() -> dict[int, Proc]:
    """Every live process this user can read."""
    procs = {}
    for entry in Path("/proc").glob("[0-9]*"):
        proc = _read(int(entry.name))
        if proc is not None:
            procs[proc.pid] = proc
    return procs


def is_raylet(p: Proc) -> bool:
    return Path(p.argv[0]).name == "raylet"


def live_node_ids(procs: dict[int, Proc]) -> set[str]:
    """Node ids of the raylets running on this machine."""
    return {p.arg("--node_id") for p in procs.values() if is_raylet(p) and p.arg("--node_id")}


def haproxy_node(p: Proc) -> str | None:
    """The node id of a Serve HAProxy (its config is ``<dir>/<node id>/<file>``), else None."""
    config = p.arg("-f")
    if "haproxy" not in Path(p.argv[0]).name or not config:
        return None
    node = Path(config).parent.name
    return node if NODE_ID.fullmatch(node) else None


def stale_haproxies(procs: dict[int, Proc] | None = None) -> list[Proc]:
    """Serve HAProxies whose node no longer runs on this machine (left by `ray stop`)."""
    procs = snapshot() if procs is None else procs
    live = live_node_ids(procs)
    return [p for p in procs.values() if (node := haproxy_node(p)) and node not in live]


@dataclasses.dataclass
class HeadProcesses:
    session_dir: str
    node_ids: set[str]
    procs: dict[int, Proc]

    def describe(self) -> str:
        return f"{len(self.procs)} processes of {Path(self.session_dir).name}"


def head_processes(gcs_pid: int, procs: dict[int, Proc] | None = None) -> HeadProcesses:
    """The processes of the head whose GCS server is ``gcs_pid``: those naming its session
    folder or node id, and their descendants (workers' command lines are rewritten to
    ``ray::...``, but they are the raylet's children)."""
    procs = snapshot() if procs is None else procs
    gcs = procs.get(gcs_pid)
    if gcs is None:
        raise ProcessLookupError(f"no process {gcs_pid}")
    session = gcs.arg("--session-dir") or str(Path(gcs.arg("--log_dir") or "").parent)
    if not session or session == ".":
        raise ValueError(f"process {gcs_pid} names no Ray session folder: {gcs.text[:200]}")
    # Ray's own processes name the session in a flag (--session_dir=, --logs-dir=, ...): a
    # `tail -f` of its logs does not, and is not the head's to stop.
    members = {p.pid for p in procs.values()
               if any(a.startswith("--") and f"{session}/" in f"{a}/" for a in p.argv)}
    nodes = {procs[pid].arg("--node_id") for pid in members if is_raylet(procs[pid])} - {None}
    nodes |= {gcs.arg("--node-id")} - {None}
    members |= {p.pid for p in procs.values() if any(n in p.text for n in nodes)}  # client server, HAProxy
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in members:
                members.add(child)
                todo.append(child)
    members.discard(os.getpid())
    return HeadProcesses(session, nodes, {pid: procs[pid] for pid in members})


def _alive(p: Proc) -> bool:
    """Whether ``p`` still runs (and holds its sockets): the same process, not a reused pid
    (workers retitle themselves, so the start time is the identity, not argv). A process
    whose main thread is a zombie while other threads run (HAProxy, stopping) still holds
    its ports: alive until its last thread is gone."""
    base = Path("/proc") / str(p.pid)
    try:
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
        if int(fields[19]) != p.started:
            return False
        return fields[0] != "Z" or len(os.listdir(base / "task")) > 1
    except (OSError, IndexError, ValueError):
        return False


def terminate(procs: list[Proc], grace_s: float) -> list[Proc]:
    """SIGTERM, up to ``grace_s`` to exit, then SIGKILL; returns those that could not be signalled."""
    failed: list[Proc] = []
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        pending = [p for p in procs if p not in failed and _alive(p)]
        for p in pending:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                failed.append(p)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p) for p in pending if p not in failed):
            time.sleep(0.1)
    return failed


def stop_head_processes(head: HeadProcesses, grace_s: float = 10.0) -> list[Proc]:
    """Stop one head, in Ray's own order: raylets first (their agents fate-share with them),
    then the rest, the GCS server last; then any HAProxy of its node that outlived it."""
    procs = list(head.procs.values())
    raylets = [p for p in procs if is_raylet(p)]
    gcs = [p for p in procs if Path(p.argv[0]).name == "gcs_server"]
    rest = [p for p in procs if p not in raylets and p not in gcs]
    failed = terminate(raylets, grace_s / 2) + terminate(rest, grace_s / 2) + terminate(gcs, grace_s / 2)
    leftovers = [p for p in snapshot().values() if haproxy_node(p) in head.node_ids]
    return failed + terminate(leftovers, 2.0)


def clear_stale_haproxies() -> list[Proc]:
    """Stop every Serve HAProxy whose head is gone; returns those stopped."""
    stale = stale_haproxies()
    for p in stale:
        log.warning("stopping Serve's HAProxy (pid %d) left by a Ray head that no longer runs (node %s…): "
                    "`ray stop` does not stop it", p.pid, haproxy_node(p)[:12])
    failed = terminate(stale, 3.0)
    for p in failed:
        log.error("could not stop HAProxy pid %d (another user's?): %s", p.pid, p.text[:200])
    return [p for p in stale if p not in failed]
