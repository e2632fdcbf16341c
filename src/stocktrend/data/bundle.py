"""A data config's input files as one object, for processes that cannot read the driver's disk.

A Tune trial may run on any node of a cluster, and a node other than the driver's has no
copy of the repository's ``datasets/``. The driver reads every file a data config names
(sources, a panel's member files) once into a ``SourceBundle``; Tune hands it to every trial
through Ray's object store; a trial writes it into its node's scratch folder once and
points the config there. File names are kept, so the dataset's fingerprint (config, file
names, sha256 of contents) is the one the driver computes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from stocktrend.config_io import config_from_dict, config_to_dict
from stocktrend.data.config import DataConfig
from stocktrend.storage import RemotePath, materialise, scratch


@dataclasses.dataclass(frozen=True)
class SourceBundle:
    root: str  # the common folder of the files on the driver
    files: dict[str, bytes]  # path relative to root -> contents

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for rel in sorted(self.files):
            h.update(rel.encode() + b"\0" + hashlib.sha256(self.files[rel]).digest())
        return h.hexdigest()[:20]


def input_files(cfg: DataConfig) -> list[Path]:
    """The config's files on the driver's disk (one on object storage is read where it is)."""
    files = [p for p in (cfg.source_path(k) for k in sorted(cfg.sources)) if not isinstance(p, RemotePath)]
    if cfg.panel is not None:
        from stocktrend.data.panel import member_files

        files += list(member_files(cfg).values())
    return sorted(set(files))


def bundle_sources(cfg: DataConfig) -> SourceBundle:
    files = input_files(cfg)
    if not files:
        return SourceBundle("/", {})
    # One level above the files' common folder, so every folder keeps its name (a folder
    # panel's name is part of the fingerprint).
    root = Path(os.path.commonpath([str(f.parent) for f in files])).parent
    return SourceBundle(str(root), {f.relative_to(root).as_posix(): f.read_bytes() for f in files})


def unpack(bundle: SourceBundle) -> Path:
    """The bundle's files in this node's scratch folder, written once (``storage.materialise``:
    concurrent trials on the node wait, and none reads half of it)."""

    def write(tmp: Path) -> None:
        for rel, content in bundle.files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(content)

    return materialise(scratch("sources") / bundle.digest, write)


def rebase(cfg: DataConfig, bundle: SourceBundle, local_root: Path) -> DataConfig:
    """``cfg`` with every input path moved from the bundle's root to ``local_root``."""
    root = Path(bundle.root)

    def moved(path: Path | RemotePath) -> str:
        return str(path) if isinstance(path, RemotePath) else str(local_root / path.relative_to(root))

    data = config_to_dict(cfg)
    for key in data["sources"]:
        data["sources"][key]["path"] = moved(cfg.source_path(key))
    if cfg.panel is not None:
        base = Path(cfg.base_dir)
        if cfg.panel.files:
            data["panel"]["files"] = {t: moved(p if Path(p).is_absolute() else (base / p).resolve())
                                      for t, p in ((t, Path(p)) for t, p in cfg.panel.files.items())}
        if cfg.panel.folder:
            folder = Path(cfg.panel.folder)
            data["panel"]["folder"] = moved(folder if folder.is_absolute() else (base / folder).resolve())
    data["base_dir"] = str(local_root)
    return config_from_dict(DataConfig, data, "data config (rebased onto this node's copy of its sources)")


def localise(cfg: DataConfig, bundle: SourceBundle) -> DataConfig:
    """``cfg`` (any overrides of the bundled base config) reading this node's copy."""
    return rebase(cfg, bundle, unpack(bundle))
