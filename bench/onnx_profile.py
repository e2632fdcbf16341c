"""Where the v2 network's time goes under ONNX Runtime, per operator, for each graph recipe.

    python bench/onnx_profile.py [--threads 2] [--model models/msft_v2]  ->  bench/results/onnx_profile.json

Graphs: fp32; the earlier all-dynamic INT8 (every Conv, MatMul, Gemm and the LSTM, weights
quantized once, activations per call); dynamic INT8 without the convolutions (what a replica
quantizes in memory); static QDQ Conv/MatMul + dynamic LSTM calibrated on training windows
(what `ray_jobs/export.py` writes). For each, at batch 1 and 64: the median latency over
interleaved rounds (this machine is shared and noisy), ONNX Runtime's profiler's share of
kernel time per operator type, and fidelity against the float model on validation windows.
The network is the trained v2 artifact when one exists, else the v2 preset with seeded
random weights (then fidelity says little: its probabilities sit near 0.5).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from inference import load_network  # noqa: E402
from machine import machine_info  # noqa: E402

BATCHES = (1, 64)
ROUNDS = 5


def session(path: Path, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = threads, 1, 3
    if profile_prefix:
        o.enable_profiling, o.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def op_shares(path: Path, x: np.ndarray, threads: int, work: Path) -> dict[str, float]:
    s = session(path, threads, str(work / f"{path.stem}_{len(x)}"))
    for _ in range(10 if len(x) == 1 else 3):
        s.run(None, {"windows": x})
    events = json.loads(Path(s.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values()) or 1
    return {k: round(v / total, 4) for k, v in per_op.most_common(10)}


def graphs(net, seq_len: int, n_features: int, calibration: np.ndarray, work: Path) -> dict[str, Path]:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from stocktrend.inference.backends import cpu_has_vnni
    from stocktrend.inference.quantize import STATIC_RECIPES, export_onnx, quantize_onnx_int8

    fp32 = export_onnx(net, seq_len, n_features, work / "fp32.onnx")
    old = work / "dynamic_all.onnx"
    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(str(fp32), str(old), weight_type=QuantType.QInt8 if cpu_has_vnni() else QuantType.QUInt8)
    quantize_onnx_int8(fp32, work / "dynamic_no_conv.onnx")
    quantize_onnx_int8(fp32, work / "static_qdq.onnx", calibration)
    quantize_onnx_int8(fp32, work / "static_qdq_conv.onnx", calibration, STATIC_RECIPES[1])
    return {"fp32": fp32, "int8 dynamic, all ops (before)": old, "int8 dynamic, no Conv (in-memory fallback)":
            work / "dynamic_no_conv.onnx", "int8 static QDQ + dynamic LSTM (exported)": work / "static_qdq.onnx",
            "int8 static QDQ Conv only + dynamic LSTM (exported when the first misses fidelity)":
                work / "static_qdq_conv.onnx"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", help="a v2 artifact (default models/msft_v2 when present)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from stocktrend.data.cache import build_cached
    from stocktrend.data.config import load_data_config
    from stocktrend.inference.backends import OnnxBackend
    from stocktrend.inference.export import calibration_windows

    net, val, source = load_network(args.model, args.threads)
    data = build_cached(load_data_config(ROOT / "datasets" / "msft_v2.yaml"), ROOT / "datasets" / "cache")
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    files = graphs(net, val.shape[1], val.shape[2], calibration_windows(data), work)
    rng = np.random.default_rng(0)
    inputs = {b: val[rng.integers(0, len(val), b)].astype(np.float32) for b in BATCHES}
    sessions = {name: session(p, args.threads) for name, p in files.items()}
    times: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    for _ in range(ROUNDS):  # interleaved: every graph sees the same machine weather
        for name, s in sessions.items():
            for b, x in inputs.items():
                for _ in range(3):
                    s.run(None, {"windows": x})
                t = []
                for _ in range(20 if b == 1 else 3):
                    t0 = time.perf_counter()
                    s.run(None, {"windows": x})
                    t.append(time.perf_counter() - t0)
                times[(name, b)].append(statistics.median(t))
    ref = OnnxBackend(files["fp32"], "onnx", args.threads)(val)[0]
    rows = {}
    for name, path in files.items():
        got = OnnxBackend(path, name, args.threads)(val)[0]
        diff = float(np.abs(got - ref).max())
        beyond = np.abs(ref[:, 1] - 0.5) > diff
        same = got.argmax(1) == ref.argmax(1)
        rows[name] = {
            "batches": {str(b): {"p50_ms": 1e3 * statistics.median(times[(name, b)]),
                                 "samples_per_s": b / statistics.median(times[(name, b)]),
                                 "op_shares": op_shares(path, inputs[b], args.threads, work)} for b in BATCHES},
            "max_abs_prob_diff": diff, "class_agreement": float(same.mean()),
            "margin_agreement": float(same[beyond].mean()) if beyond.any() else None,
        }
        print(name, json.dumps({b: (round(r["p50_ms"], 2), round(r["samples_per_s"])) for b, r in rows[name]["batches"].items()}),
              f"max|dp| {diff:.4f}", flush=True)
    out = {"benchmark": "onnx_profile", "machine": machine_info(), "threads": args.threads, "network": source,
           "rounds": ROUNDS, "graphs": rows}
    (ROOT / "bench" / "results" / "onnx_profile.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
