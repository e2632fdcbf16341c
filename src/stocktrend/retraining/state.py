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


def oriented(pair: dict[str, Any], challenger: str, metric: str = "accuracy",
             higher_is_better: bool = True) -> dict[str, float | None]:
    """The paired difference of ``metric`` as the challenger's improvement over the champion
    (> 0: better), whichever order the outcome report paired them in."""
    d = pair[f"{metric}_a_minus_b"]
    sign = (1 if pair["a"] == challenger else -1) * (1 if higher_is_better else -1)
    flip = (lambda v: None if v is None else -v)
    if sign == 1:
        return {"point": d["point"], "low": d["low"], "high": d["high"]}
    return {"point": flip(d["point"]), "low": flip(d["high"]), "high": flip(d["low"])}


def judge_observation(pair: dict[str, Any] | None, challenger: str, need: int, out_of_time: bool,
                      metric: str = "cross_entropy", higher_is_better: bool = False
                      ) -> tuple[str, str, dict[str, float | None] | None]:
    """(decision, reason, improvement) from the realised outcomes both versions had on the same
    days, on the selection metric (the one the comparison block decided on): ``extended`` while
    fewer than ``need`` (``dropped`` once out of time: a challenger never proven live does not
    replace the champion), then ``dropped`` when the challenger was significantly worse live,
    else ``promoted``."""
    n = pair["n"] if pair else 0
    diff = oriented(pair, challenger, metric, higher_is_better) if pair else None
    if n < need:
        if out_of_time:
            return "dropped", (f"only {n} realised outcomes on the same days by the end of the longest observation, "
                               f"{need} needed: not proven live"), diff
        return "extended", f"{n} realised outcomes on the same days so far, {need} needed", diff
    if diff is None or diff["low"] is None or diff["high"] is None:
        return "promoted", (f"{n} realised outcomes on the same days (no interval: too few to resample); "
                            "promoted on the comparison block"), diff
    worse = diff["high"] < 0
    text = (f"{n} realised outcomes on the same days; {metric} improvement {diff['point']:+.3f} "
            f"[{diff['low']:+.3f}, {diff['high']:+.3f}]")
    return ("dropped", text + ": significantly worse live", diff) if worse else \
        ("promoted", text + ": not worse live", diff)
