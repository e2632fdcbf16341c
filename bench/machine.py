"""The machine a benchmark ran on, recorded beside every figure."""

from __future__ import annotations

import datetime as dt
import os
import platform


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "lightning", "ray", "numpy", "onnxruntime"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
