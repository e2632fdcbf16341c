"""Where runs, datasets and models live when more than one node reads them.

A *location* is a local folder (one machine, or a shared file system mounted at the same
path on every node) or an object-storage URI (``s3://bucket/prefix``, ``gs://...``), read
and written through ``pyarrow.fs`` exactly as Ray Train's own storage layer does; an S3
endpoint and credentials come from the usual ``AWS_*`` environment variables.

The rule this module serves: a process Ray places on some node (a Tune trial, a Train
worker, a Serve replica, a batch-scoring actor) never reads the driver's working tree. What
it needs travels through the run's storage location or Ray's object store, and a remote
location is fetched into a node-local scratch folder (``<temp>/stocktrend/<kind>/``) once,
keyed by the location, before anything opens it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)
COMPLETE = ".complete"  # written last into a fetched folder: a half-fetched one is never used


def is_remote(location: str | Path) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def normalise(location: str | Path) -> str:
    """A URI as given (no trailing slash); a local path absolute (Ray needs that)."""
    text = str(location)
    if is_remote(text):
        base, sep, query = text.partition("?")
        return base.rstrip("/") + sep + query
    return str(Path(text.removeprefix("file://")).expanduser().resolve())


def join(location: str | Path, *parts: str) -> str:
    text = normalise(location)
    if not is_remote(text):
        return str(Path(text, *parts))
    base, sep, query = text.partition("?")
    return "/".join([base, *(p.strip("/") for p in parts)]) + sep + query


def parent(location: str | Path) -> str:
    text = normalise(location)
    if not is_remote(text):
        return str(Path(text).parent)
    base, sep, query = text.partition("?")
    return base.rsplit("/", 1)[0] + sep + query


def filesystem(location: str | Path):
    """(pyarrow filesystem, path in it) of a location."""
    import pyarrow.fs as pafs

    text = normalise(location)
    if not is_remote(text):
        return pafs.LocalFileSystem(), text
    return pafs.FileSystem.from_uri(text)


class RemotePath:
    """A file or folder on object storage where the data code takes a ``Path`` (a source in a
    dataset config may be ``s3://...``): its URI as ``str()``, its name and suffix, whether it
    is there and is a file or a folder, its bytes as a stream, and a folder's files."""

    def __init__(self, uri: str):
        self.uri = normalise(uri)

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"RemotePath({self.uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.uri == self.uri

    def __lt__(self, other) -> bool:
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash(self.uri)

    @property
    def name(self) -> str:
        return self.uri.partition("?")[0].rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    def is_absolute(self) -> bool:
        return True

    def _type(self):
        fs, path = filesystem(self.uri)
        return fs.get_file_info(path).type

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self._type() == pafs.FileType.Directory

    def open(self):
        """A seekable binary stream of the file (pandas and pyarrow read it as a local file)."""
        fs, path = filesystem(self.uri)
        return fs.open_input_file(path)

    def files(self) -> list[tuple[str, RemotePath]]:
        """A folder's files, recursively: (path relative to it, the file), in order."""
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri)
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        return sorted((f.path[len(root):].lstrip("/"), RemotePath(location_of(self.uri, f.path)))
                      for f in found if f.type == pafs.FileType.File)


def location_of(storage: str | Path, fs_path: str) -> str:
    """The location of ``fs_path``, a path in ``storage``'s file system as Ray reports it
    (a checkpoint's ``path``: ``bucket/key`` for s3, without the scheme)."""
    text = normalise(storage)
    if not is_remote(text):
        return fs_path
    scheme = text.split("://", 1)[0]
    query = text.partition("?")[2]
    return f"{scheme}://{fs_path.lstrip('/')}" + (f"?{query}" if query else "")


def exists(location: str | Path) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(location: str | Path) -> str:
    if not is_remote(location):
        return Path(normalise(location)).read_text()
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(location: str | Path, text: str) -> None:
    """Whole or not at all: a local file by rename, an object by one PUT (atomic in S3)."""
    if not is_remote(location):
        from stocktrend.data.store import atomic_write_text

        atomic_write_text(Path(normalise(location)), text)
        return
    fs, path = filesystem(location)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def upload_dir(local_dir: Path, location: str | Path, last: str | None = None) -> None:
    """Copy a local folder to a location; ``last`` (a file name in it) goes after the rest, so
    a reader that checks for it never sees a half-copied folder."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    local = pafs.LocalFileSystem()
    fs.create_dir(path, recursive=True)
    for item in sorted(Path(local_dir).rglob("*")):
        rel = item.relative_to(local_dir).as_posix()
        if item.is_dir() or rel == last:
            continue
        pafs.copy_files(str(item), f"{path}/{rel}", source_filesystem=local, destination_filesystem=fs)
    if last and (Path(local_dir) / last).is_file():
        pafs.copy_files(str(Path(local_dir) / last), f"{path}/{last}", source_filesystem=local,
                        destination_filesystem=fs)


def download_dir(location: str | Path, local_dir: Path) -> None:
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no folder at {location}")
    local_dir.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local_dir), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


def key_of(location: str | Path) -> str:
    """A short, stable folder name for a location's local copy."""
    return hashlib.sha256(normalise(location).encode()).hexdigest()[:20]


def scratch(kind: str) -> Path:
    """This node's own folder for fetched copies (outside any repository: the temp folder)."""
    folder = Path(tempfile.gettempdir()) / "stocktrend" / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path``: processes of one node take turns."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def materialise(out: Path, write: Callable[[Path], None], marker: str = COMPLETE) -> Path:
    """``out``, written once by ``write(tmp)`` into a temporary sibling and renamed into place
    whole; concurrent callers on the node wait on a lock and find the finished folder, so none
    ever reads half of one. ``marker`` (a file name in ``out``) says it is complete."""
    if (out / marker).is_file():
        return out
    with locked(out.parent / f".{out.name}.lock"):
        if not (out / marker).is_file():
            tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
            try:
                write(tmp)
                if not (tmp / marker).is_file():
                    (tmp / marker).write_text("")
                shutil.rmtree(out, ignore_errors=True)
                os.replace(tmp, out)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return out


def fetch_dir(location: str | Path, kind: str) -> Path:
    """A local folder holding ``location``'s files: the folder itself when local, else this
    node's copy, fetched once. For immutable folders: a dataset by fingerprint, a model
    version, a checkpoint."""
    if not is_remote(location):
        return Path(normalise(location))
    text = normalise(location)
    out = materialise(scratch(kind) / key_of(text), lambda tmp: download_dir(text, tmp))
    log.debug("%s is at %s", text, out)
    return out


@contextlib.contextmanager
def staged(location: str | Path) -> Iterator[Path]:
    """A local folder to write ``location``'s files into: the location itself when local,
    else a temporary folder uploaded to it when the block ends without an error."""
    if not is_remote(location):
        path = Path(normalise(location))
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="stocktrend-stage-") as tmp:
        yield Path(tmp)
        upload_dir(Path(tmp), location)
