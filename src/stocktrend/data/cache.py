"""The dataset cache: each data config's dataset built once, under its fingerprint.

A run never trains on a stale file: the fingerprint covers the config, the feature code's
version and every source file's sha256 (``store.fingerprint``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path

from stocktrend.data.build import build_dataset
from stocktrend.data.config import DataConfig
from stocktrend.data.store import fingerprint

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
