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
    from stocktrend.inference.backends import cpu_flags

    flags = sorted(f for f in cpu_flags() if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                                     "amx_tile", "amx_int8", "amx_bf16"))
    return {"cpu": cpu, "cores": os.cpu_count(), "flags": flags, "python": platform.python_version(),
            "versions": versions, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
