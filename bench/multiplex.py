"""The cost of serving many models from one deployment (Ray Serve multiplexing).

    python bench/multiplex.py [--model models/msft_quick] [--backend onnx]
        ->  bench/results/multiplex.json

On a private Ray head, one replica each (the same CPU share), single-window requests:

- ``one``: a deployment serving one model;
- ``several``: a deployment serving four (copies of the same artifact under four names, so the
  network is the same and only the serving path differs), every request for one of them
  (the cost of holding several) and requests cycling through all four (the cost of
  switching: a batch holds one model's requests only);
- ``cold``: one model with four more versions that clients pin as ``m0/<version>``, one pinned
  version cached at most, requests cycling through them, so every request loads its version
  (verification, weights, the back-end) before it is answered; beside the offline load time
  of the same artifact. (Routed versions are held apart from that cache, never unloaded.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402
from serve_load import fallback_model  # noqa: E402

NAMES = ["m0", "m1", "m2", "m3"]
PINNED = ["p0", "p1", "p2", "p3"]  # more versions of m0, for the cold case


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "msft_quick"))
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--num-cpus", type=float, default=0.5, help="CPU share of each deployment's replica (three deployments)")
    args = ap.parse_args()
    import os

    from stocktrend.cluster.head import HEAD_ENV, PrivateRayHead

    os.environ.update(HEAD_ENV)  # before anything imports Ray
    from stocktrend.evaluation.report import artifact_dataset
    from stocktrend.inference.predictor import Predictor
    from stocktrend.serving import control
    from stocktrend.serving.loadgen import load

    work = Path(tempfile.mkdtemp(prefix="st-bench-mux-", dir="/tmp"))
    model = Path(args.model)
    if not ((model / "latest").is_file() or (model / "manifest.json").is_file()):
        print(f"no model at {model}: training a one-epoch tiny model for the benchmark", flush=True)
        model = fallback_model(work)
    p = Predictor.from_artifact(model)
    for name in NAMES:  # four model folders holding the same version
        shutil.copytree(p.version_dir, work / "models" / name / p.version_dir.name,
                        ignore=shutil.ignore_patterns("evaluation", "backends"))
        (work / "models" / name / "latest").write_text(p.version_dir.name + "\n")
    for version in PINNED:  # the same artifact under other version names (the manifest says which)
        target = work / "models" / "m0" / version
        shutil.copytree(p.version_dir, target, ignore=shutil.ignore_patterns("evaluation", "backends"))
        manifest = json.loads((target / "manifest.json").read_text())
        (target / "manifest.json").write_text(json.dumps({**manifest, "version": version}))
    loads_offline = []
    for _ in range(3):
        t0 = time.perf_counter()
        Predictor.from_artifact(work / "models" / "m0", args.backend, max(1, int(np.ceil(args.num_cpus))))
        loads_offline.append((time.perf_counter() - t0) * 1e3)
    val = np.load(artifact_dataset(p.training, p.preprocessing) / "val_X.npy")
    bodies = [json.dumps({"windows": val[i : i + 1].tolist()}).encode() for i in np.linspace(0, len(val) - 1, 64)
              .astype(int)]
    folders = [str(work / "models" / n) for n in NAMES]
    common = {"backend": args.backend, "num_replicas": 1, "num_cpus": args.num_cpus, "prediction_log": False}
    apps = {"one": {"model": folders[0]},
            "several": {"model": folders[0], "models": folders[1:], "max_models_per_replica": 4},
            "cold": {"model": folders[0], "max_pinned_models_per_replica": 1, "pinnable_versions": ["*"]}}
    head = PrivateRayHead(work / "ray")
    rows = []
    try:
        head.up()
        base = control.load_config(control.DEFAULT_CONFIG)
        template = {**base["applications"][0]}
        config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": head.serve_port},
                  "applications": [control.with_overrides({"applications": [template]}, None, {**common, **a}, {},
                                                          name=n, route_prefix=f"/{n}")["applications"][0]
                                   for n, a in apps.items()]}
        control.deploy(head.dashboard, config, timeout=300)
        url = f"http://127.0.0.1:{head.serve_port}"
        cases = [("one", "one model served", None, [(1, 300), (16, 2000)]),
                 ("several", "four served, all requests for one", ["model=m0"], [(1, 300), (16, 2000)]),
                 ("several", "four served, requests cycling through all four", [f"model={n}" for n in NAMES],
                  [(1, 300), (16, 2000)]),
                 ("cold", "four pinned versions, one cached at most: every request loads its version",
                  [f"model=m0/{v}" for v in PINNED], [(1, 40)])]
        for app, label, queries, loads in cases:
            for concurrency, n in loads:
                if app != "cold":
                    load(f"{url}/{app}/v1/predict", bodies, min(100, n), concurrency, queries=queries)  # warm-up
                s = load(f"{url}/{app}/v1/predict", bodies, n, concurrency, queries=queries).summary()
                s.update(app=app, case=label, concurrency=concurrency)
                rows.append(s)
                print(json.dumps(s), flush=True)
                if s["ok"] != s["requests"]:
                    raise SystemExit(f"{label} c={concurrency}: {s['requests'] - s['ok']} failed requests")
        control.client(head.dashboard).delete_applications()
    finally:
        head.down()
        shutil.rmtree(work, ignore_errors=True)
    out = {"benchmark": "multiplex", "machine": machine_info(), "model": f"{p.name}/{p.version}",
           "backend": args.backend, "num_cpus_per_replica": args.num_cpus,
           "offline_load_ms": {"median": statistics.median(loads_offline), "all": loads_offline}, "rows": rows}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "multiplex.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
