"""The sources' date formats, parsed to :class:`datetime.date`."""

from __future__ import annotations

import datetime as dt
import re

_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_MDY_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_ISO_DATETIME = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(Z|[+-]\d{2}:?\d{2})?)?")


def parse_date(text: str, fmt: str) -> dt.date:
    """Parse one source date; raises ValueError with the reason."""
    s = text.strip()
    if fmt == "iso":
        m = _ISO_DATE.fullmatch(s)
        if not m:
            raise ValueError(f"expected YYYY-MM-DD, got {text!r}")
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    if fmt == "mdy":
        m = _MDY_DATE.fullmatch(s)
        if not m:
            raise ValueError(f"expected M/D/YYYY, got {text!r}")
        return dt.date(int(m[3]), int(m[1]), int(m[2]))
    if fmt == "iso_datetime":
        m = _ISO_DATETIME.fullmatch(s)
        if not m:
            raise ValueError(f"expected 'YYYY-MM-DD[ HH:MM:SS[+00:00]]', got {text!r}")
        time, tz = m[2], m[3]
        if time is not None and dt.time.fromisoformat(time) != dt.time(0):
            raise ValueError(f"timestamp {text!r} is not midnight; its day is ambiguous")
        if tz not in (None, "Z") and tz.replace(":", "") not in ("+0000", "-0000"):
            raise ValueError(f"timestamp {text!r} is not UTC; its day is ambiguous")
        return dt.date.fromisoformat(m[1])
    raise ValueError(f"unknown date format {fmt!r}")
