"""One retrain per model folder at a time: an exclusive, non-blocking ``flock``.

The lock file ``models/<name>/.retrain.lock`` says who holds it (host, pid, since). The
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
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".retrain.lock"


class ModelLocked(RuntimeError):
    pass


@contextlib.contextmanager
def model_lock(model_dir: Path) -> Iterator[None]:
    path = Path(model_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise ModelLocked(f"{model_dir}: another retrain is running ({holder}); this one does nothing") from None
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
