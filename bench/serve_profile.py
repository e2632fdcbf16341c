"""Where a model replica's time goes per request: py-spy samples of the replica under HTTP load.

    python bench/serve_profile.py [--model models/msft_quick] [--concurrency 1] [--seconds 12]
        ->  bench/results/serve_profile.json

One replica (1 CPU) of the model application on a private head in the project's Serve mode,
single-window requests from the light client for ``--seconds`` while py-spy samples every
thread of the replica (``--nonblocking``: the process is never paused, so the load is what
it would be unprofiled). Each sample is charged to the first frame of the stack that a
category below names (our request path, the model, Serve, the web stack), and samples per
second become milliseconds of a thread's time per request. Threads run in parallel, so the
categories add up to CPU time per request, not to latency.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402
from serve_load import MODES, deploy, open_model, request_bodies  # noqa: E402

# (category, pattern on "function (file)"), first match from the leaf up wins: the most
# specific pieces first, the broad owners (Serve, asyncio) last.
CATEGORIES = [
    ("model back-end (onnxruntime / torch)", r"onnxruntime|/torch/|backends\.py"),
    ("json parse of the windows", r"windows_from_json|json_object|orjson.*loads|\bloads \("),
    ("answer body", r"predictions_body"),
    ("request log line", r"_answer .*app\.py|logging/__init__|request_log|serve/_private/logging_utils"),
    ("monitoring records", r"monitor\.py|RecordBuffer|metrics\.py|ray/util/metrics"),
    ("prediction log", r"predlog\.py"),
    ("batching (@serve.batch)", r"batching\.py|serve/batching\.py"),
    ("replica models / routes", r"replica_models\.py|routes\.py"),
    ("other request-path code (app.py, wire.py, access.py)", r"stocktrend/serving/"),
    ("FastAPI / Starlette / pydantic", r"fastapi|starlette|pydantic"),
    ("Serve replica & HTTP (uvicorn, h11, direct ingress)", r"ray/serve|uvicorn|h11|httptools"),
    ("asyncio event loop", r"asyncio"),
    ("Ray core (gRPC, metrics, GCS)", r"/ray/|grpc"),
]


# Leaf frames of a thread that waits: an event loop in epoll, a pool worker on its queue.
# py-spy cannot always tell a thread blocked in C from one running, so these are set apart.
WAITING = re.compile(r"_run_user_code_event_loop|_run_router_event_loop|Thread\.run \(threading|"
                     r"_worker \(concurrent/futures/thread|Worker\.main_loop|run_forever|_run_once|select \(")


def categorise(stack: str) -> str:
    frames = stack.split(";")
    if WAITING.search(frames[-1]):
        return "waiting (event loops and pool threads idle)"
    for frame in reversed(frames):  # leaf first
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return "other (threads' idle or unresolved frames)"


def replica_pid(deployment: str) -> int:
    from ray.util.state import list_actors

    from stocktrend.cluster import resources

    actors = list_actors(address=resources.state_address(), filters=[("state", "=", "ALIVE")], detail=True)
    pids = [a.pid for a in actors if a.class_name.startswith("ServeReplica:model:") and a.class_name.endswith(deployment)]
    if len(pids) != 1:
        raise SystemExit(f"expected one {deployment} replica of the model application, found {pids}")
    return pids[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "msft_quick"))
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rate", type=int, default=500, help="py-spy samples per second per thread")
    ap.add_argument("--mode", default="throughput", choices=list(MODES))
    ap.add_argument("--name", default="serve_profile", help="results file name (bench/results/NAME.json)")
    args = ap.parse_args()
    import os

    from stocktrend.cluster.head import HEAD_ENV, PrivateRayHead
    from stocktrend.serving.config import PREDICTOR_DEPLOYMENT

    os.environ.update(HEAD_ENV)
    from stocktrend.serving.loadgen import load

    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    work = Path(tempfile.mkdtemp(prefix="st-prof-", dir="/tmp"))
    p = open_model(args.model, work)
    single = request_bodies(p)[0]["single"]
    head = PrivateRayHead(work / "ray", extra_env=MODES[args.mode])
    try:
        head.up()
        url = deploy(head, p, args.backend, 1, 1.0, work, noop=False) + "/model/v1/predict"
        load(url, single, 500, args.concurrency)  # warm-up
        pid = replica_pid(PREDICTOR_DEPLOYMENT)
        raw = work / "profile.txt"
        # Enough requests to outlast the sampling window; py-spy starts first.
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(r=load(url, single, 10**7, args.concurrency,
                                                                      duration_s=args.seconds)))
        spy_proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                                     "--rate", str(args.rate), "--format", "raw", "--nonblocking", "--threads",
                                     "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        runner.start()
        runner.join()
        _, err = spy_proc.communicate(timeout=60)
        if spy_proc.returncode != 0 or not raw.is_file():
            raise SystemExit(f"py-spy failed: {err.decode()[-2000:]}")
        summary = result["r"].summary()
    finally:
        head.down()
    by_category: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        by_category[categorise(stack)] += int(count)
        leaves[stack.split(";")[-1]] += int(count)
    requests = summary["ok"]
    per_request = {k: round(v / args.rate * 1e3 / requests, 4) for k, v in by_category.most_common()}
    top = [{"frame": f, "ms_per_request": round(v / args.rate * 1e3 / requests, 4)} for f, v in leaves.most_common(25)]
    shutil.rmtree(work, ignore_errors=True)
    out = {"benchmark": "serve_profile", "machine": machine_info(), "model": f"{p.name}/{p.version}",
           "backend": args.backend, "mode": args.mode, "concurrency": args.concurrency, "seconds": args.seconds,
           "rate": args.rate, "load": summary, "ms_per_request_by_category": per_request, "top_leaf_frames": top}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({"load": summary, "ms_per_request_by_category": per_request}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
