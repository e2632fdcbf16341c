"""What serving a panel model by ticker costs as the universe grows: the daily scoring job's
time and memory, and the ticker endpoint's latency and throughput beside a no-op app.

    python bench/snapshot_scale.py [--sizes 400,3000] [--days 7560] [--train-names 30]
                                   [--out bench/results/snapshot_scale.json]
    python bench/snapshot_scale.py --model MODEL --market CONFIG --out ...   # a model and a market you have

Markets come from the known-answer generator (close panels, 30 years by default, drawn in
their own process). One tiny panel model is trained on the first --train-names instruments
of the first market; the scoring job (``ray_jobs/score_universe.py --universe``, in a fresh
process, with its own local Ray instance for ``--ray``) then scores each whole market, so the
job's cost is measured at each size with the same model. Memory is sampled from /proc as in
``bench/panel_scale.py``: the machine's memory in use above its level before the job, and the
largest process that started with it. The last market's snapshot is then served from a
private Ray head (loopback) beside the no-op application, with the same replica settings, and
loaded with tickers requests of 1 and of 100 instruments at concurrency 1 and 16; every answer
is checked (200).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402
from panel_scale import GENERATE, Sampler, run  # noqa: E402

TRAIN = """
import dataclasses, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from conftest import train_small_artifact
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.sources import table_columns
cfg = load_data_config(sys.argv[1])
date = cfg.sources[cfg.panel.source].columns["date"]
names = [c for c in table_columns(cfg.source_path(cfg.panel.source)) if c != date][:int(sys.argv[3])]
cfg = dataclasses.replace(cfg, seq_len=10, n_features=12,
                          panel=dataclasses.replace(cfg.panel, include=names, build="memory"))
work = Path(sys.argv[2])
build_dataset(cfg, work / "ds")
print(train_small_artifact(work / "ds", work / "models", "synthetic", "s1", 0, work / "run"))
"""
LOADS = [(1, 1, 1000), (1, 16, 2000), (100, 16, 400)]  # (tickers per request, concurrency, requests)


def score(model: Path, universe: Path, out: Path, ray: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **({"RAY_ADDRESS": "local"} if ray else {})}
    t0 = time.perf_counter()
    with Sampler() as mem:
        done = subprocess.run([sys.executable, str(ROOT / "ray_jobs" / "score_universe.py"), "--model", str(model),
                               "--universe", str(universe), "--out", str(out), "--quiet", *(["--ray"] if ray else [])],
                              capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"score_universe failed:\n{done.stderr[-3000:]}")
    snap = json.loads(next(out.glob("*.json")).read_text())["snapshot"]
    return {"seconds": round(seconds, 1), "machine_used_mib": round(mem.peak_used), "largest_process_mib":
            round(mem.peak_process), "largest_process_anon_mib": round(mem.peak_anon), "scored": snap["scored"],
            "universe": snap["universe"], "as_of": snap["as_of"], "snapshot_bytes": next(out.glob("*.json")).stat().st_size}


def serve(model: Path, snapshot: Path, tickers: list[str], work: Path) -> list[dict]:
    from stocktrend.cluster.head import PrivateRayHead
    from stocktrend.serving import control
    from stocktrend.serving.loadgen import load

    (model / "snapshots").mkdir(exist_ok=True)
    shutil.copy(snapshot, model / "snapshots" / snapshot.name)
    head = PrivateRayHead(work / "ray")
    rows = []
    try:
        head.up()
        base = control.load_config(control.DEFAULT_CONFIG)
        app = control.with_overrides({"applications": [{**base["applications"][0]}]}, None, {
            "model": str(model), "backend": "onnx", "num_replicas": 1, "num_cpus": 1.0,
            "prediction_log_dir": str(work / "predictions")}, {}, name="model", route_prefix="/model")
        noop = {"name": "noop", "route_prefix": "/noop", "import_path": "stocktrend.serving.noop:build",
                "args": {"num_replicas": 1, "num_cpus": 1.0}}
        control.deploy(head.dashboard, {"proxy_location": "HeadOnly", "http_options": {
            "host": "127.0.0.1", "port": head.serve_port}, "applications": [app["applications"][0], noop]}, timeout=240)
        url = f"http://127.0.0.1:{head.serve_port}"
        for per_request, concurrency, n in LOADS:
            bodies = [json.dumps({"tickers": tickers[i * per_request % len(tickers):][:per_request]}).encode()
                      for i in range(64)]
            for name, path in (("noop", "/noop/v1/predict"), ("model", "/model/v1/predict/tickers")):
                load(url + path, bodies, min(100, n), concurrency)  # warm-up (and the snapshot's first load)
                s = load(url + path, bodies, n, concurrency).summary()
                s.update(app=name, tickers_per_request=per_request, concurrency=concurrency)
                rows.append(s)
                print(json.dumps(s), flush=True)
                if s["ok"] != s["requests"]:
                    raise SystemExit(f"{name} {per_request} tickers c={concurrency}: {s['requests'] - s['ok']} failed")
        control.client(head.dashboard).delete_applications()
    finally:
        head.down()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="400,3000", help="universe sizes, comma-separated")
    ap.add_argument("--days", type=int, default=7560, help="trading days of each market (7,560: 30 years)")
    ap.add_argument("--train-names", type=int, default=30, help="instruments the tiny model is trained on")
    ap.add_argument("--model", help="a panel model to score with (default: train a tiny one on --train-names)")
    ap.add_argument("--market", help="a panel dataset config to score (default: generate one per --sizes)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "snapshot_scale.json"))
    args = ap.parse_args()
    from stocktrend.cluster.head import HEAD_ENV

    os.environ.update(HEAD_ENV)  # before anything imports Ray (machine_info does): it reads the auth mode then
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="st-snap-", dir="/tmp"))
    result = {"benchmark": "snapshot_scale", "machine": machine_info(), "days": args.days,
              "train_names": None if args.model else args.train_names, "jobs": [], "serve": None,
              "model": args.model, "market": args.market,
              "command": "python bench/snapshot_scale.py " + " ".join(sys.argv[1:])}
    if args.market:
        sizes = [0]
    try:
        model = Path(args.model).resolve() if args.model else None
        if model is not None:  # a private copy: the benchmark writes its snapshot beside the versions
            shutil.copytree(model, work / "model" / model.name)
            model = work / "model" / model.name
        for n in sizes:
            files = work / f"market-{n}"
            if args.market:
                config = Path(args.market).resolve()
            else:
                seconds, _ = run(GENERATE, str(n), str(args.days), str(files), "close_panel")
                print(f"{n} instruments generated in {float(seconds):.0f} s", flush=True)
                config = files / "close_panel.yaml"
            if model is None:
                line, _ = run(TRAIN, str(config), str(work / "train"), str(args.train_names), str(ROOT / "tests"))
                model = Path(line).parent
            for ray in (False, True):
                job = score(model, config, work / f"snap-{n}-{int(ray)}", ray)
                job.update(instruments=n or job["universe"], ray=ray)
                result["jobs"].append(job)
                print(json.dumps(job), flush=True)
            last = (job["instruments"], next((work / f"snap-{n}-1").glob("*.json")))
            if n != sizes[-1] and not args.market:
                shutil.rmtree(files)
        doc = json.loads(last[1].read_text())
        tickers = sorted(set(doc["predictions"]["ticker"]))
        result["serve"] = {"instruments": last[0], "rows": serve(model, last[1], tickers, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
