"""The dataset cache: each data config's dataset built once, under its fingerprint.

A run never trains on a stale file: the fingerprint covers the config, the feature code's
version and every source file's sha256 (``store.fingerprint``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path

from stocktrend import storage
from stocktrend.data.build import build_dataset
from stocktrend.data.config import DataConfig
from stocktrend.data.store import fingerprint, read_metadata

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_cached(cfg: DataConfig, cache_root: str | Path) -> Path:
    """The dataset of ``cfg`` under ``cache_root/<fingerprint>/``, built once.

    Concurrent callers (Tune trials sharing a data config) serialise on a file lock; the
    first builds, the rest find the finished folder.
    """
    root = Path(cache_root).resolve()
    out = root / fingerprint(cfg)
    if (out / "metadata.json").is_file():
        return out
    with _locked(root / f".{out.name}.lock"):
        if not (out / "metadata.json").is_file():
            log.info("building dataset %s into the cache", out.name[:12])
            build_dataset(cfg, out)
    return out


def build_published(cfg: DataConfig, location: str | Path) -> tuple[Path, str]:
    """(a local copy, the location every node reads) of ``cfg``'s dataset, cached under
    ``location/<fingerprint>/``. A local location (one machine, or a shared file system) is
    the cache itself; on object storage the dataset is built in this node's scratch folder
    and uploaded once."""
    if not storage.is_remote(location):
        local = build_cached(cfg, location)
        return local, str(local)
    local = build_cached(cfg, storage.scratch("datasets-built"))
    return local, publish_dataset(local, location)


def publish_dataset(local: Path, location: str | Path) -> str:
    """Where nodes read the dataset folder ``local``: itself when ``location`` is local, else
    ``location/<fingerprint>/``, uploaded once with ``metadata.json`` last (what a reader
    checks for, so a half-uploaded dataset is never taken for one)."""
    if not storage.is_remote(location):
        return str(Path(local).resolve())
    target = storage.join(location, read_metadata(local)["fingerprint"])
    if not storage.exists(storage.join(target, "metadata.json")):
        storage.upload_dir(Path(local), target, last="metadata.json")
        log.info("dataset %s uploaded to %s", Path(local).name, target)
    return target
