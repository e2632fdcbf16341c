"""A scoring snapshot: one panel model's predictions for its whole universe on its latest
days, written by ``ray_jobs/score_universe.py`` and answered by ticker by the Serve
deployment (``POST /v1/predict/tickers``).

One snapshot is one JSON file, ``<model folder>/snapshots/<as_of>.json`` (on local disk or
object storage): written whole or not at all (a rename, or one PUT), so a reader never sees
half of one; a rerun for the same day replaces it. The newest is the latest ``as_of`` (ISO
dates sort as text). It holds the model version that scored it, the days scored, when it was
made, the instruments left out and why, and the predictions column by column:

    {"snapshot": {"model", "model_version", "as_of", "dates", "created", "horizon_days", "scored",
                  "universe", "left_out": {"<TICKER>": "<why>"}, ...},
     "predictions": {"ticker": [...], "date": [...], "p_up": [...], "p_down": [...][, "volatility": [...]]}}
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from stocktrend import storage

SNAPSHOTS = "snapshots"  # the folder beside a model's versions
NAME = re.compile(r"^\d{4}-\d{2}-\d{2}\.json$")


class SnapshotError(ValueError):
    """A snapshot file that cannot be read as one (named)."""


def snapshots_of(model_folder: str) -> str:
    """Where a model folder's snapshots live (a local path or an object-storage URI)."""
    return storage.join(model_folder, SNAPSHOTS)


def write_snapshot(folder: str, meta: dict[str, Any], columns: dict[str, list]) -> str:
    """Write one snapshot whole (atomically), named by its ``as_of``; returns its location."""
    location = storage.join(folder, f"{meta['as_of']}.json")
    storage.write_text(location, orjson.dumps({"snapshot": meta, "predictions": columns},
                                              option=orjson.OPT_SERIALIZE_NUMPY).decode())
    return location


@dataclass(frozen=True)
class Stamp:
    """What identifies one snapshot file's contents without reading it."""

    location: str
    size: int
    mtime_ns: int | None


def newest(folder: str) -> Stamp | None:
    """The newest snapshot file in ``folder`` (None: no folder, or none in it)."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(folder)
    infos = [i for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
             if i.type == pafs.FileType.File and NAME.match(i.base_name)]
    if not infos:
        return None
    latest = max(infos, key=lambda i: i.base_name)
    return Stamp(storage.join(folder, latest.base_name), latest.size, latest.mtime_ns)


@dataclass
class Snapshot:
    meta: dict[str, Any]
    stamp: Stamp
    # {ticker: {date: (p_up, p_down, volatility or None)}}
    rows: dict[str, dict[str, tuple[float, float, float | None]]] = field(default_factory=dict)

    @classmethod
    def read(cls, stamp: Stamp) -> Snapshot:
        try:
            doc = orjson.loads(storage.read_text(stamp.location))
            meta, cols = doc["snapshot"], doc["predictions"]
            vol = cols.get("volatility") or [None] * len(cols["ticker"])
            rows: dict[str, dict[str, tuple]] = {}
            for t, d, up, down, v in zip(cols["ticker"], cols["date"], cols["p_up"], cols["p_down"], vol, strict=True):
                rows.setdefault(t, {})[d] = (float(up), float(down), None if v is None else float(v))
            missing = [k for k in ("as_of", "model_version", "dates") if k not in meta]
            if missing:
                raise KeyError(f"snapshot.{missing[0]}")
            dt.date.fromisoformat(meta["as_of"])
        except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as err:
            raise SnapshotError(f"{stamp.location}: not a readable snapshot ({type(err).__name__}: {err})") from None
        return cls(meta, stamp, rows)

    @property
    def as_of(self) -> str:
        return self.meta["as_of"]

    def staleness_days(self, today: dt.date | None = None) -> int:
        """Calendar days from the snapshot's last scored day to today."""
        return ((today or dt.date.today()) - dt.date.fromisoformat(self.as_of)).days
