"""The scoring snapshots a replica answers by ticker (``POST /v1/predict/tickers``).

A panel model's predictions for its whole universe are computed once a day by
``ray_jobs/score_universe.py`` (``inference/snapshot.py`` has the file's layout): a client
asks for tickers, not for the bars of every instrument of the universe. Each replica holds the
newest snapshot of each model it serves and looks for a newer one at most every
``snapshot_poll_s``, in the background: the file is read and parsed off the request path and
swapped in whole, so requests during a reload are answered from the old snapshot or the new
one, never from neither. Only the first request for a model waits for its first load.

``/v1/monitoring`` reports the held snapshot (its day, staleness, version) and raises
``snapshot_stale`` past ``alerts.snapshot_max_age_days``, ``snapshot_version`` when the
champion is not the version that scored it, and ``snapshot_unreadable`` when the newest file
could not be read (the previous one keeps answering).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from typing import Any

import orjson

from stocktrend.inference.snapshot import Snapshot, SnapshotError, newest, snapshots_of
from stocktrend.serving.wire import ApiError

log = logging.getLogger(__name__)
MAX_TICKER_CHARS = 32
MAX_TICKER_BYTES = 6 * MAX_TICKER_CHARS + 2  # one ticker in JSON, every character \uXXXX-escaped, quoted


def _shown(value: Any) -> str:
    """A bad value as an error message shows it: a string's start, else its type (a value
    nested a thousand deep must not be turned into text)."""
    return repr(value[:40]) if isinstance(value, str) else f"a {type(value).__name__}"


class Snapshots:
    def __init__(self, model_folders: dict[str, str], poll_s: float):
        self.folders = {name: snapshots_of(loc) for name, loc in model_folders.items()}
        self.poll_s = poll_s
        self.held: dict[str, Snapshot] = {}
        self.errors: dict[str, str] = {}  # model -> why its newest snapshot could not be read
        self.checked: dict[str, float] = {}
        self.refreshing: dict[str, asyncio.Task] = {}

    async def current(self, name: str) -> Snapshot:
        """The newest snapshot of ``name`` held here; a check for a newer one is started when
        the last is ``poll_s`` old (awaited only while none is held)."""
        if time.monotonic() - self.checked.get(name, -math.inf) >= self.poll_s and name not in self.refreshing:
            self.checked[name] = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._refresh(name))
            self.refreshing[name] = task
            task.add_done_callback(lambda _: self.refreshing.pop(name, None))
        held = self.held.get(name)
        if held is None and name in self.refreshing:
            await asyncio.shield(self.refreshing[name])
            held = self.held.get(name)
        if held is None:
            why = f" ({self.errors[name]})" if name in self.errors else ""
            raise ApiError(404, "snapshot", f"no scoring snapshot of {name!r} in {self.folders[name]}{why}; write one "
                                            f"with: python ray_jobs/score_universe.py --model <its model folder>")
        return held

    async def _refresh(self, name: str) -> None:
        try:
            stamp = await asyncio.to_thread(newest, self.folders[name])
            held = self.held.get(name)
            if stamp is None or (held is not None and held.stamp == stamp):
                self.errors.pop(name, None)  # a file that failed to load is gone, or was never there
                return
            snap = await asyncio.to_thread(Snapshot.read, stamp)
            self.held[name] = snap  # one assignment: a request sees the old snapshot or the new one
            self.errors.pop(name, None)
            log.info("snapshot of %s loaded: %s (%s, %d instruments)", name, stamp.location, snap.as_of,
                     snap.meta.get("scored", len(snap.rows)))
        except (SnapshotError, OSError) as err:
            self.errors[name] = str(err)
            log.warning("snapshot of %s not loaded: %s", name, err)
        except Exception:  # a background task: nothing may escape it unseen
            self.errors[name] = "unexpected error reading the snapshot (see the replica's log)"
            log.exception("snapshot of %s not loaded", name)

    async def status(self, name: str, champion: str, max_age_days: float) -> dict[str, Any] | None:
        """What ``/v1/monitoring`` says of the model's snapshot, with its alerts (None: the model
        has no snapshot and none failed to load)."""
        try:
            await self.current(name)
        except ApiError:
            pass
        held, error = self.held.get(name), self.errors.get(name)
        if held is None and error is None:
            return None
        alerts = []
        out: dict[str, Any] = {"folder": self.folders[name], "error": error}
        if held is not None:
            age = held.staleness_days()
            out.update({k: held.meta.get(k) for k in ("as_of", "dates", "created", "model_version", "scored",
                                                      "universe")})
            out.update({"location": held.stamp.location, "staleness_days": age,
                        "left_out": len(held.meta.get("left_out") or {})})
            if age > max_age_days:
                alerts.append({"name": "snapshot_stale", "value": age, "reference": max_age_days,
                               "message": f"the newest snapshot is of {held.as_of}, {age} days ago (more than "
                                          f"{max_age_days:g}): has the daily scoring job stopped?"})
            if held.meta["model_version"] != champion:
                alerts.append({"name": "snapshot_version", "value": held.meta["model_version"], "reference": champion,
                               "message": f"the snapshot was scored by {held.meta['model_version']}, the champion is "
                                          f"{champion}: rerun ray_jobs/score_universe.py"})
        if error is not None:
            alerts.append({"name": "snapshot_unreadable", "value": None, "reference": None,
                           "message": f"the newest snapshot could not be read: {error}"})
        out["alerts"] = alerts
        return out


def tickers_request(body: dict[str, Any], most: int) -> tuple[list[str], str | None]:
    """The tickers (upper case, each once, in the order asked) and the day of a tickers request."""
    tickers, as_of = body["tickers"], body.get("as_of")
    if not isinstance(tickers, list) or not tickers:
        raise ApiError(422, "tickers", "must be a non-empty list of ticker strings")
    if len(tickers) > most:
        raise ApiError(413, "tickers", f"{len(tickers)} tickers; at most {most} per request (max_tickers_per_request)")
    bad = next((i for i, t in enumerate(tickers) if not isinstance(t, str) or not t.strip()
                or len(t) > MAX_TICKER_CHARS), None)
    if bad is not None:
        raise ApiError(422, f"tickers[{bad}]", f"must be a ticker string of 1 to {MAX_TICKER_CHARS} characters, got "
                                               f"{_shown(tickers[bad])}")
    if as_of is not None:
        try:
            as_of = dt.date.fromisoformat(as_of).isoformat() if isinstance(as_of, str) else None
        except ValueError:
            as_of = None
        if as_of is None:
            raise ApiError(422, "as_of", f"must be a date as YYYY-MM-DD, got {_shown(body.get('as_of'))}")
    return list(dict.fromkeys(t.strip().upper() for t in tickers)), as_of


def tickers_body(name: str, snap: Snapshot, tickers: list[str], as_of: str | None) -> tuple[bytes, int]:
    """The answer from ``snap``: one prediction per ticker on ``as_of`` (default: the
    snapshot's last day); 404 naming every ticker, or the day, it does not hold."""
    day = as_of or snap.as_of
    if day not in snap.meta["dates"]:
        raise ApiError(404, "as_of", f"the snapshot of {name!r} holds {snap.meta['dates']}, not {day}")
    left_out = snap.meta.get("left_out") or {}
    missing = [t for t in tickers if day not in snap.rows.get(t, {})]
    if missing:
        named = "; ".join(f"{t}: {left_out[t]}" if t in left_out else
                          (f"{t}: no prediction on {day}" if t in snap.rows else f"{t}: not in the universe")
                          for t in missing[:20])
        more = f" (and {len(missing) - 20} more)" if len(missing) > 20 else ""
        raise ApiError(404, "tickers", f"{len(missing)} of {len(tickers)} ticker(s) not in the snapshot of {day}: "
                                       f"{named}{more}")
    rows = []
    for t in tickers:
        up, down, vol = snap.rows[t][day]
        rows.append({"ticker": t, "date": day, "direction": "up" if up > down else "down", "p_up": up, "p_down": down,
                     "confidence": max(up, down), **({"volatility": vol} if vol is not None else {})})
    return orjson.dumps({
        "model": name, "model_version": snap.meta["model_version"], "as_of": day,
        "horizon_days": snap.meta.get("horizon_days"),
        "snapshot": {"as_of": snap.as_of, "created": snap.meta.get("created"), "staleness_days": snap.staleness_days()},
        "predictions": rows}), len(rows)
