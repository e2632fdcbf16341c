"""What the promotion log says about a retrain in progress.

A retrain whose challenger won the comparison enters the deployment as shadow (or a small
split) and is logged ``{"action": "retrain", "decision": "challenger", "observe_until": ...}``.
It is pending until an ``observation`` entry for that challenger ends it (promoted,
dropped, or abandoned because someone changed the route by hand). Every run of the retrain
job reads this first, so the job is idempotent: run it again and it either waits, finishes
the observation, or starts a new retrain.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

ENDS_OBSERVATION = ("promoted", "dropped", "abandoned")


def pending(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    for i in range(len(history) - 1, -1, -1):
        h = history[i]
        if h.get("action") == "retrain" and h.get("decision") == "challenger":
            ended = any(e.get("action") == "observation" and e.get("challenger") == h["challenger"]
                        and e.get("decision") in ENDS_OBSERVATION for e in history[i + 1:])
            return None if ended else h
    return None


def observation_over(entry: dict[str, Any], now: dt.datetime | None = None) -> bool:
    now = now or dt.datetime.now(dt.UTC)
    return now >= dt.datetime.fromisoformat(entry["observe_until"])


def parse_duration(text: str) -> dt.timedelta:
    """'30s', '15m', '6h', '10d' (calendar time; a 5-day label needs about a week to be known)."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    text = str(text).strip().lower()
    try:
        value, unit = float(text[:-1]), units[text[-1]]
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"duration {text!r}: give a number and one of s, m, h, d (e.g. 10d)") from None
    if value < 0:
        raise ValueError(f"duration {text!r} is negative")
    return dt.timedelta(**{unit: value})
