"""Each reliability test prints its figure; with STOCKTREND_RELIABILITY_OUT set (``make
reliability``) it is also merged into that JSON file, which bench/report.py quotes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def record(name: str, **figures) -> None:
    print(f"RELIABILITY {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    out = os.environ.get("STOCKTREND_RELIABILITY_OUT")
    if not out:
        return
    path = Path(out)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = {**figures, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
