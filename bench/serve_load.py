"""HTTP load against a local Serve deployment, beside a no-op Serve app and the raw model.

    python bench/serve_load.py [--model models/msft_quick] [--backend onnx] [--replicas 2]
        ->  bench/results/serve_load.json

Starts a private Ray head (loopback, free ports, the project's HAProxy ingress), deploys the
model application and a no-op application with the same replica settings, and sends
single-window and 16-window requests at concurrency 1, 16 and 64 from a light asyncio
client (stocktrend.serving.loadgen). Every answer is checked (status 200). The raw model's
predictions/s with the same back-end and CPU count are measured in the same run, so Serve's
overhead is a ratio. Without a model at --model it trains a one-epoch tiny model first.
"""

from __future__ import annotations

import argparse
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

LOADS = {"single": [(1, 300), (16, 2000), (64, 3000)], "batched16": [(1, 100), (16, 400)]}


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "msft_quick"))
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--num-cpus", type=float, default=0.5, help="CPU share per replica (threads: ceil of it)")
    ap.add_argument("--name", default="serve_load", help="results file name (bench/results/NAME.json)")
    args = ap.parse_args()
    import os

    from stocktrend.cluster.head import HEAD_ENV, PrivateRayHead

    os.environ.update(HEAD_ENV)  # before anything imports Ray
    from stocktrend.inference.predictor import Predictor
    from stocktrend.serving import control
    from stocktrend.serving.loadgen import load

    work = Path(tempfile.mkdtemp(prefix="st-bench-", dir="/tmp"))
    model = Path(args.model)
    if not ((model / "latest").is_file() or (model / "manifest.json").is_file()):
        print(f"no model at {model}: training a one-epoch tiny model for the benchmark", flush=True)
        model = fallback_model(work)
    p = Predictor.from_artifact(model)
    from stocktrend.evaluation.report import artifact_dataset

    val = np.load(artifact_dataset(p.training, p.preprocessing) / "val_X.npy")
    starts = np.linspace(0, len(val) - 16, 64).astype(int)
    single = [json.dumps({"windows": val[i : i + 1].tolist()}).encode() for i in starts]
    batched = [json.dumps({"windows": val[i : i + 16].tolist()}).encode() for i in starts]

    head = PrivateRayHead(work / "ray")
    try:
        head.up()
        base = control.load_config(control.DEFAULT_CONFIG)
        template = {**base["applications"][0]}
        model_app = control.with_overrides({"applications": [template]}, None, {
            "model": str(p.version_dir), "backend": args.backend, "num_replicas": args.replicas,
            "num_cpus": args.num_cpus, "max_windows_per_request": 64,
            "prediction_log_dir": str(work / "predictions")},  # logged as served, but not into the user's models
            {}, name="model", route_prefix="/model")
        noop_app = {"name": "noop", "route_prefix": "/noop", "import_path": "stocktrend.serving.noop:build",
                    "args": {"num_replicas": args.replicas, "num_cpus": args.num_cpus}}
        config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": head.serve_port},
                  "applications": [model_app["applications"][0], noop_app]}
        control.deploy(head.dashboard, config, timeout=240)
        url = f"http://127.0.0.1:{head.serve_port}"
        rows = []
        for app in ("noop", "model"):
            for kind, loads in LOADS.items():
                bodies, per_request = (single, 1) if kind == "single" else (batched, 16)
                for concurrency, n in loads:
                    load(f"{url}/{app}/v1/predict", bodies, min(50, n), concurrency)  # warm-up
                    s = load(f"{url}/{app}/v1/predict", bodies, n, concurrency).summary()
                    s.update(app=app, kind=kind, concurrency=concurrency, windows_per_request=per_request,
                             predictions_per_s=round(s["requests_per_s"] * per_request, 1) if app == "model" else None)
                    rows.append(s)
                    print(json.dumps(s), flush=True)
                    if s["ok"] != s["requests"]:
                        raise SystemExit(f"{app} {kind} c={concurrency}: {s['requests'] - s['ok']} failed requests")
        control.client(head.dashboard).delete_applications()
    finally:
        head.down()
    threads = max(1, int(np.ceil(args.num_cpus)))
    raw = raw_throughput(str(p.version_dir), args.backend, threads * args.replicas, val)
    # Like for like: the raw model on the replicas' total threads while the load client runs
    # (against a do-nothing server), as it runs during the HTTP measurement.
    body = work / "body.json"
    body.write_bytes(batched[0])
    client = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sink_client.py"), "--body", str(body),
                               "--concurrency", "16", "--seconds", "9"], stdout=subprocess.DEVNULL)
    time.sleep(1.5)
    raw_busy = raw_throughput(str(p.version_dir), args.backend, threads * args.replicas, val, seconds=5.0)
    client.wait(timeout=60)
    shutil.rmtree(work, ignore_errors=True)
    out = {"benchmark": "serve_load", "machine": machine_info(), "model": f"{p.name}/{p.version}",
           "params": sum(t.numel() for t in p.model.parameters()), "backend": args.backend,
           "replicas": args.replicas, "num_cpus_per_replica": args.num_cpus, "ingress": "HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1)",
           "raw_model_predictions_per_s": raw, "raw_model_predictions_per_s_with_client": raw_busy,
           "raw_threads": threads * args.replicas, "rows": rows}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    print(f"raw model: {raw:.0f} predictions/s alone, {raw_busy:.0f}/s with the load client running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
