"""HTTP load against a local Serve deployment, beside a no-op Serve app and the raw model.

    python bench/serve_load.py [--model models/msft_quick] [--backend onnx] [--replicas 2]
                               [--modes default,throughput]
        ->  bench/results/serve_load.json

For each Serve mode (Serve's defaults; its throughput-optimized mode, the project's), a
private Ray head (loopback, free ports, the project's HAProxy ingress) with the model
application and a no-op application of the same replica settings; single-window and
16-window requests, as JSON and as .npy, at concurrency 1, 16 and 64 from a light asyncio
client (stocktrend.serving.loadgen). Every answer is checked (status 200). The raw model's
predictions/s with the same back-end and CPU count are measured in the same run, so Serve's
overhead is a ratio. Without a model at --model it trains a one-epoch tiny model first.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

from stocktrend.cluster.head import SERVE_ENV  # noqa: E402

# kind -> [(concurrency, requests)]; "_npy": the same windows as one .npy body (no JSON to parse)
LOADS = {"single": [(1, 1000), (16, 2000), (64, 3000)], "batched16": [(1, 200), (16, 400)],
         "single_npy": [(1, 1000), (16, 2000)], "batched16_npy": [(16, 400)]}
NPY = "application/x-npy"


def fallback_model(work: Path) -> Path:
    from stocktrend.data.cache import build_cached
    from stocktrend.data.config import load_data_config
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.config import TrainConfig
    from stocktrend.training.export import export_artifact
    from stocktrend.training.fit_local import fit_local

    data = build_cached(load_data_config(ROOT / "datasets" / "msft_v2.yaml"), ROOT / "datasets" / "cache")
    res = fit_local(data, model_config_from_metadata("tiny", read_metadata(data)),
                    TrainConfig(batch_size=64, accumulate_grad_batches=1, max_epochs=1), work / "run",
                    max_epochs=1, progress=False, accelerator="cpu", enable_model_summary=False)
    return export_artifact(res["best_checkpoint"], data, work / "models", "bench_tiny", history=res["history"])


def raw_throughput(model: str, backend: str, threads: int, windows: np.ndarray, seconds: float = 3.0) -> float:
    from stocktrend.inference.predictor import Predictor

    p = Predictor.from_artifact(model, backend, threads)
    x = windows[:64]
    p.backend(x)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        p.backend(x)
        times.append(time.perf_counter() - t)
    return len(x) / statistics.median(times)


# Serve's throughput-optimized mode (Ray 2.60): user code on the replica's own event loop (no
# thread hop into it), the router on the caller's loop, no log copy to stderr, GC frozen after
# start-up: the project's settings (stocktrend.cluster.head.SERVE_ENV, which keeps the log
# unbuffered). "default" is Serve's own behaviour (both behind the HAProxy ingress).
MODES = {"default": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}, "throughput": SERVE_ENV}


def npy_body(windows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(windows, dtype=np.float32))
    return buf.getvalue()


def request_bodies(p) -> tuple[dict[str, list[bytes]], np.ndarray]:
    """Per kind, 64 bodies cut from the model's validation windows: one window or 16, as
    JSON or as .npy."""
    from stocktrend.evaluation.report import artifact_dataset

    val = np.load(artifact_dataset(p.training, p.preprocessing) / "val_X.npy")
    starts = np.linspace(0, len(val) - 16, 64).astype(int)
    return {"single": [json.dumps({"windows": val[i : i + 1].tolist()}).encode() for i in starts],
            "batched16": [json.dumps({"windows": val[i : i + 16].tolist()}).encode() for i in starts],
            "single_npy": [npy_body(val[i : i + 1]) for i in starts],
            "batched16_npy": [npy_body(val[i : i + 16]) for i in starts]}, val


def deploy(head, p, backend: str, replicas: int, num_cpus: float, work: Path, noop: bool = True) -> str:
    """The model application (the project's serve/config.yaml, this model) at /model and,
    with ``noop``, the no-op application with the same replicas at /noop; the base URL."""
    from stocktrend.serving import control

    base = control.load_config(control.DEFAULT_CONFIG)
    model_app = control.with_overrides({"applications": [{**base["applications"][0]}]}, None, {
        "model": str(p.version_dir), "backend": backend, "num_replicas": replicas,
        "num_cpus": num_cpus, "max_windows_per_request": 64,
        "prediction_log_dir": str(work / "predictions")},  # logged as served, but not into the user's models
        {}, name="model", route_prefix="/model")
    noop_app = {"name": "noop", "route_prefix": "/noop", "import_path": "stocktrend.serving.noop:build",
                "args": {"num_replicas": replicas, "num_cpus": num_cpus}}
    config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": head.serve_port},
              "applications": [model_app["applications"][0], *([noop_app] if noop else [])]}
    control.deploy(head.dashboard, config, timeout=240)
    return f"http://127.0.0.1:{head.serve_port}"


def open_model(path: str, work: Path):
    from stocktrend.inference.predictor import Predictor

    model = Path(path)
    if not ((model / "latest").is_file() or (model / "manifest.json").is_file()):
        print(f"no model at {model}: training a one-epoch tiny model for the benchmark", flush=True)
        model = fallback_model(work)
    return Predictor.from_artifact(model)


def measure_mode(mode: str, p, args, work: Path, bodies: dict[str, list[bytes]]) -> list[dict]:
    """Every load against both applications on a fresh head started in ``mode``."""
    from stocktrend.cluster.head import PrivateRayHead
    from stocktrend.serving import control
    from stocktrend.serving.loadgen import load

    head = PrivateRayHead(work / f"ray-{mode}", extra_env=MODES[mode])
    rows = []
    try:
        head.up()
        url = deploy(head, p, args.backend, args.replicas, args.num_cpus, work)
        for app in ("noop", "model"):
            for kind, loads in LOADS.items():
                per_request = 16 if kind.startswith("batched16") else 1
                media = NPY if kind.endswith("_npy") else "application/json"
                for concurrency, n in loads:
                    n *= args.scale
                    target = f"{url}/{app}/v1/predict"
                    load(target, bodies[kind], min(100, n), concurrency, content_type=media)  # warm-up
                    s = load(target, bodies[kind], n, concurrency, content_type=media).summary()
                    s.update(mode=mode, app=app, kind=kind, concurrency=concurrency, windows_per_request=per_request,
                             predictions_per_s=round(s["requests_per_s"] * per_request, 1) if app == "model" else None)
                    rows.append(s)
                    print(json.dumps(s), flush=True)
                    if s["ok"] != s["requests"]:
                        raise SystemExit(f"{mode} {app} {kind} c={concurrency}: {s['requests'] - s['ok']} failed requests")
        control.client(head.dashboard).delete_applications()
    finally:
        head.down()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "msft_quick"))
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--num-cpus", type=float, default=0.5, help="CPU share per replica (threads: ceil of it)")
    ap.add_argument("--modes", default="default,throughput",
                    help=f"Serve modes to measure, each on its own head, in this order: {', '.join(MODES)}")
    ap.add_argument("--scale", type=int, default=2, help="multiply every load's request count")
    ap.add_argument("--name", default="serve_load", help="results file name (bench/results/NAME.json)")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in MODES]:
        ap.error(f"--modes: unknown {unknown}; choose from {list(MODES)}")
    import os

    from stocktrend.cluster.head import HEAD_ENV

    os.environ.update(HEAD_ENV)  # before anything imports Ray

    work = Path(tempfile.mkdtemp(prefix="st-bench-", dir="/tmp"))
    p = open_model(args.model, work)
    bodies, val = request_bodies(p)
    rows = [row for mode in modes for row in measure_mode(mode, p, args, work, bodies)]
    threads = max(1, int(np.ceil(args.num_cpus)))
    raw = raw_throughput(str(p.version_dir), args.backend, threads * args.replicas, val)
    # Like for like: the raw model on the replicas' total threads while the load client runs
    # (against a do-nothing server), as it runs during the HTTP measurement.
    body = work / "body.json"
    body.write_bytes(bodies["batched16"][0])
    client = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sink_client.py"), "--body", str(body),
                               "--concurrency", "16", "--seconds", "9"], stdout=subprocess.DEVNULL)
    time.sleep(1.5)
    raw_busy = raw_throughput(str(p.version_dir), args.backend, threads * args.replicas, val, seconds=5.0)
    client.wait(timeout=60)
    shutil.rmtree(work, ignore_errors=True)
    out = {"benchmark": "serve_load", "machine": machine_info(), "model": f"{p.name}/{p.version}",
           "params": sum(t.numel() for t in p.model.parameters()), "backend": args.backend,
           "replicas": args.replicas, "num_cpus_per_replica": args.num_cpus, "ingress": "HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1)",
           "modes": {m: MODES[m] for m in modes},
           "raw_model_predictions_per_s": raw, "raw_model_predictions_per_s_with_client": raw_busy,
           "raw_threads": threads * args.replicas, "rows": rows}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    print(f"raw model: {raw:.0f} predictions/s alone, {raw_busy:.0f}/s with the load client running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
