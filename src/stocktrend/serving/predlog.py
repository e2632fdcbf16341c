"""The durable prediction log: every answer (and every shadow score), append-only, beside the model.

    models/<name>/predictions/<replica>.<n>.jsonl      (or <prediction_log_dir>/<name>/predictions/)

One JSON line per request and version: when, which request and client, the version and its
role (champion, challenger, shadow, pinned), the day the window ends (``as_of``, known for
bars requests), the instrument, and p_up per window. Realised outcomes are scored from
these files later (``ray_jobs/score_outcomes.py``), when the labels exist, h trading days on.

Off the request's path: a request appends a dict in memory; a background task writes the
lines every ``flush_s`` in a thread, with fsync (a replica that dies loses at most its last
``flush_s`` of records, and a failed write loses that batch: it is logged), one file per replica (no two writers share a file, so
no locks and no interleaved lines), and starts the next file past ``max_bytes``. Files are
only ever appended to, and none is ever deleted here (a retention rule is the owner's call:
old files are old outcomes); a line cut by a crash is skipped by the reader.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)
FOLDER = "predictions"


class PredictionLog:
    def __init__(self, model_dirs: dict[str, Path], replica: str, flush_s: float, max_bytes: int,
                 enabled: bool = True):
        self.model_dirs, self.flush_s, self.max_bytes, self.enabled = model_dirs, flush_s, max_bytes, enabled
        self.replica = re.sub(r"[^A-Za-z0-9_-]", "_", replica) or "replica"
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, Path] = {}
        self.task: asyncio.Task | None = None

    def add(self, name: str, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.pending.setdefault(name, []).append(record)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._loop())

    async def flush(self) -> None:
        pending, self.pending = self.pending, {}
        if pending:
            await asyncio.to_thread(self._write, pending)

    def _target(self, name: str) -> Path:
        """This replica's current file for ``name``; the next one once it holds ``max_bytes``."""
        path = self.files.get(name)
        if path is None or not path.is_file() or path.stat().st_size >= self.max_bytes:  # moved away: a new one
            folder = self.model_dirs[name] / FOLDER
            folder.mkdir(parents=True, exist_ok=True)
            pattern = re.compile(rf"{re.escape(self.replica)}\.(\d+)\.jsonl")
            taken = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
            path = folder / f"{self.replica}.{max(taken, default=-1) + 1:05d}.jsonl"
            path.touch()
            self.files[name] = path
        return path

    def _write(self, pending: dict[str, list[dict[str, Any]]]) -> None:
        for name, records in pending.items():
            data = b"".join(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in records)
            try:
                with open(self._target(name), "ab") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                self.files.pop(name, None)  # a part-written line stays behind in that file, not before the next
                raise

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception:  # a full disk must not break serving; the next flush retries new records
                log.exception("could not write the prediction log")


def read_log(model_dir: Path) -> list[dict[str, Any]]:
    """Every complete line of a model folder's prediction logs (a line cut by a crash is skipped)."""
    out = []
    for path in sorted((Path(model_dir) / FOLDER).glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                log.warning("%s: skipped an incomplete line", path)
    return out
