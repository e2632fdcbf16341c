"""The dataset cache: each data config's dataset built once, under its fingerprint.

A run never trains on a stale file: the fingerprint covers the config, the feature code's
version and every source file's sha256 (``store.fingerprint``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from stocktrend import storage
from stocktrend.data.build import build_dataset
from stocktrend.data.config import DataConfig
from stocktrend.data.store import fingerprint, read_metadata

log = logging.getLogger(__name__)


def build_cached(cfg: DataConfig, cache_root: str | Path, **build) -> Path:
    """The dataset of ``cfg`` under ``cache_root/<fingerprint>/``, built once (``build``:
    ``build_dataset``'s options, e.g. ``use_ray``, ``progress``).

    Concurrent callers (Tune trials sharing a data config) serialise on a file lock; the
    first builds, the rest find the finished folder.
    """
    root = Path(cache_root).resolve()
    out = root / fingerprint(cfg)
    if (out / "metadata.json").is_file():
        return out
    with storage.locked(root / f".{out.name}.lock"):
        if not (out / "metadata.json").is_file():
            log.info("building dataset %s into the cache", out.name[:12])
            build_dataset(cfg, out, **build)
    return out


def build_published(cfg: DataConfig, location: str | Path, **build) -> tuple[dict, str]:
    """(the metadata, the location every node reads) of ``cfg``'s dataset, cached under
    ``location/<fingerprint>/``. A local location (one machine, or a shared file system) is
    the cache itself. On object storage a dataset already there is taken as it is; else it
    is built in this node's scratch folder and uploaded (one trial of the node at a time)."""
    if not storage.is_remote(location):
        local = build_cached(cfg, location, **build)
        return read_metadata(local), str(local)
    target = storage.join(location, fingerprint(cfg))
    with storage.locked(storage.scratch("datasets-built") / f".{storage.key_of(target)}.upload.lock"):
        if storage.exists(storage.join(target, "metadata.json")):
            return json.loads(storage.read_text(storage.join(target, "metadata.json"))), target
        local = build_cached(cfg, storage.scratch("datasets-built"), **build)
        return read_metadata(local), publish_dataset(local, location)


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
