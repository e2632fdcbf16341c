"""Locks on a model folder: one retrain at a time, and one writer of its routes at a time.

``model_lock``: one retrain per model folder, an exclusive, non-blocking ``flock`` on
``models/<name>/.retrain.lock``. ``routes_lock``: every writer of a model's routes, ``latest``
and promotion log (promote.py, the retrain job's log entries, an alert's retrain) takes
``models/<name>/.routes.lock`` in turn, waiting for it up to a timeout; a move of a Serve
deployment's config also takes a lock named after the Ray dashboard it goes through, so two
promotions of different models of one deployment cannot lose each other's change.

A lock file says who holds it (host, pid, since). The
kernel drops the lock when the holder exits, however it exits, so a crashed job never
leaves the folder locked. It covers processes on one machine and, on NFS v4 (or v3 with
lockd), processes on machines sharing the folder. It does NOT cover object storage
(S3, GCS) or file systems mounted without lock support (many FUSE mounts): there two
jobs can run at once, so schedule a single retrain per model (one cron line, or one
RayCronJob whose schedule leaves each run time to finish).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".retrain.lock"
ROUTES_LOCK_FILE = ".routes.lock"


class ModelLocked(RuntimeError):
    pass


@contextlib.contextmanager
def model_lock(model_dir: Path) -> Iterator[None]:
    with _flock(Path(model_dir) / LOCK_FILE, 0.0, f"{model_dir}: another retrain is running ({{holder}}); "
                                                   "this one does nothing"):
        yield


@contextlib.contextmanager
def routes_lock(model_dir: Path, dashboard: str | None = None, timeout_s: float = 120.0) -> Iterator[None]:
    """The model folder's routes lock and, when a deployment is to move, the deployment's."""
    with _flock(Path(model_dir) / ROUTES_LOCK_FILE, timeout_s,
                f"{model_dir}: another promotion holds its routes ({{holder}}) for more than {timeout_s:g} s"):
        if dashboard is None:
            yield
            return
        key = hashlib.sha256(dashboard.rstrip("/").encode()).hexdigest()[:16]
        with _flock(Path(tempfile.gettempdir()) / f"stocktrend-serve-config-{key}.lock", timeout_s,
                    f"the Serve config of {dashboard} is being changed ({{holder}}) for more than {timeout_s:g} s"):
            yield


@contextlib.contextmanager
def _flock(path: Path, timeout_s: float, busy: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, waited for up to ``timeout_s`` (0: not at all);
    ModelLocked with ``busy`` (its ``{holder}`` filled in) when it is not had in time."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
                    raise ModelLocked(busy.format(holder=holder)) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since {since}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
