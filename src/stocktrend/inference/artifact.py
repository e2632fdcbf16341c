"""The model artifact on disk: layout, sha256 manifest, and verified loading.

    models/<name>/<version>/   weights.pt, model.json, preprocessing.json, training.json,
                               feature_distribution.json, manifest.json
    models/<name>/latest       a text file naming the current version (no symlinks:
                               artifacts may live on object storage)

Reports written later go in ``<version>/evaluation/``, outside the manifest. Loading
checks every manifest entry's sha256 and refuses a tampered or incomplete artifact;
weights load with ``torch.load(weights_only=True)``, which executes no pickled code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stocktrend.data.sources import sha256_of as file_sha256

MANIFEST = "manifest.json"
LATEST = "latest"
WEIGHTS = "weights.pt"
JSON_PARTS = ("model", "preprocessing", "training", "feature_distribution")
REQUIRED = (WEIGHTS, *(f"{p}.json" for p in JSON_PARTS))


class ArtifactError(ValueError):
    """The artifact is missing, incomplete, tampered with, or not an artifact."""


def resolve_version_dir(path: str | Path) -> Path:
    """Accept a version folder, or ``models/<name>`` (then follow its ``latest`` file)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    if path.is_file() and path.name == LATEST:
        path = path.parent
    latest = path / LATEST
    if latest.is_file():
        version = latest.read_text().strip()
        if not version or "/" in version or version.startswith("."):
            raise ArtifactError(f"{latest}: does not name a version folder (got {version!r})")
        target = path / version
        if not (target / MANIFEST).is_file():
            raise ArtifactError(f"{latest} names version {version!r}, but {target / MANIFEST} is missing")
        return target
    if not path.exists():
        raise ArtifactError(f"no model artifact at {path}")
    raise ArtifactError(f"{path} is neither a model version folder (no {MANIFEST}) nor a model folder (no {LATEST})")


def verify(version_dir: Path) -> dict[str, Any]:
    """Check the manifest against the files; return the manifest."""
    try:
        manifest = json.loads((version_dir / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{version_dir / MANIFEST}: unreadable manifest ({err})") from None
    files = manifest.get("files", {})
    missing = [f for f in REQUIRED if f not in files]
    if missing:
        raise ArtifactError(f"{version_dir}: manifest lacks required file(s) {missing}")
    for name, digest in files.items():
        path = version_dir / name
        if not path.is_file():
            raise ArtifactError(f"{version_dir}: file {name} listed in the manifest is missing")
        if file_sha256(path) != digest:
            raise ArtifactError(f"{path}: sha256 does not match the manifest (tampered or corrupted)")
    return manifest


def load_parts(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Verified (version_dir, manifest, {part: parsed json}) of an artifact."""
    version_dir = resolve_version_dir(path)
    manifest = verify(version_dir)
    parts = {p: json.loads((version_dir / f"{p}.json").read_text()) for p in JSON_PARTS}
    return version_dir, manifest, parts


def local_model_dir(location: str | Path) -> Path:
    """A model folder (or version folder) this process can open: a local path as it is; on
    object storage (``s3://bucket/models/<name>``) this node's mirror of it, refreshed on
    each call: ``latest`` read anew, every version folder not yet here copied (versions are
    immutable, so a copy never goes stale). A replica on any node serves from it."""
    import pyarrow.fs as pafs

    from stocktrend import storage
    from stocktrend.data.store import atomic_write_text

    if not storage.is_remote(location):
        return Path(storage.normalise(location))
    location = storage.normalise(location)
    fs, path = storage.filesystem(location)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    # `latest` first: a version published after this read is simply not served yet, where a
    # listing taken first could miss the very version `latest` names.
    latest = storage.read_text(storage.join(location, LATEST)) if storage.exists(storage.join(location, LATEST)) else None
    entries = {e.base_name: e.type for e in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))}
    if not entries:
        raise ArtifactError(f"no model artifact at {location}")
    if entries.get(MANIFEST) == pafs.FileType.File:  # a version folder: its model folder's mirror
        return local_model_dir(storage.parent(location)) / name
    local = storage.scratch("models") / storage.key_of(location) / name
    local.mkdir(parents=True, exist_ok=True)
    for version, kind in sorted(entries.items()):
        if kind != pafs.FileType.Directory or version.startswith("."):
            continue
        source = storage.join(location, version)
        if (local / version / MANIFEST).is_file() or not storage.exists(storage.join(source, MANIFEST)):
            continue  # mirrored already, or an upload in progress (its manifest goes last)
        storage.materialise(local / version, lambda tmp, source=source: storage.download_dir(source, tmp), MANIFEST)
    if latest is not None:
        atomic_write_text(local / LATEST, latest)
    return local
