"""GPU check stages that need Ray, run one at a time by bench/gpu_check.sh.

    python bench/gpu_ray.py serve [--allow-cpu]          -> bench/results/gpu_serve.json
    python bench/gpu_ray.py ray_train [--epochs 3] [--allow-cpu]   -> gpu_ray_train.json
    python bench/gpu_ray.py packed_trials [--allow-cpu]  -> gpu_packed_trials.json

``serve``: a v2 model (one epoch on the real msft_v2 dataset) deployed on a private head with
the ``cuda`` back-end (0.25 GPU, captured CUDA graphs) beside a no-op application of the same
replica settings; single-window requests one at a time against both (goal: the model's p50 at
most the no-op's + 1 ms), then batched requests against the back-end alone in this process at
the same batch sizes (goal: over HTTP at least 2/3 of it). Every answer is checked (200).
``ray_train``: in one process, the bare eager loop (AdamW, cross-entropy, clipping) at batch 64,
then the v2 recipe through Ray Train on one GPU worker (the DevicePlan: the effective batch of
64 in one step); training steps timed per epoch apart from validation (the history's
``time_train_s``). Goal: ≥ 1.25x the bare loop's samples/s on the 5,400 training windows.
``packed_trials``: four smoke-search trials at 0.25 GPU each, each bound to its share of the
card's memory.

Without CUDA a stage refuses (exit 1) unless ``--allow-cpu``: a dry run on the CPU (tiny
network, torch back-end, no GPU shares) that checks the script, not the card. Each stage
writes its JSON as each part finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from gpu_check import RESULTS, bare_loop, device_or_refuse, header, write_json  # noqa: E402


def real_dataset(work: Path) -> Path:
    from stocktrend.data.cache import build_cached
    from stocktrend.data.config import load_data_config

    return build_cached(load_data_config(ROOT / "datasets" / "msft_v2.yaml"), work / "cache")


def trained_artifact(dataset: Path, preset: str, accelerator: str, work: Path) -> Path:
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.config import TrainConfig
    from stocktrend.training.export import export_artifact
    from stocktrend.training.fit_local import fit_local

    res = fit_local(dataset, model_config_from_metadata(preset, read_metadata(dataset)), TrainConfig(max_epochs=1),
                    work / "fit", max_epochs=1, progress=False, accelerator=accelerator, enable_model_summary=False)
    return export_artifact(res["best_checkpoint"], dataset, work / "models", f"gpu_{preset}", history=res["history"])


class Workspace:
    """A stage's scratch folder and its private Ray head (loopback, free ports), both gone
    when the stage ends, however it ends."""

    def __init__(self, prefix: str):
        self.dir, self.head = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")), None

    def start_head(self):
        from stocktrend.cluster.head import HEAD_ENV, PrivateRayHead

        os.environ.update(HEAD_ENV)
        self.head = PrivateRayHead(self.dir / "ray", num_cpus=min(8, os.cpu_count() or 2)).up()
        return self.head

    def stop_head(self) -> None:
        if self.head is not None:
            self.head.down()
            self.head = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_head()
        shutil.rmtree(self.dir, ignore_errors=True)


def show(out: dict[str, Any]) -> None:
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2, default=str))


# -- serve -------------------------------------------------------------------------------


def backend_rate(version_dir: Path, backend: str, x: np.ndarray, seconds: float = 3.0) -> dict[str, Any]:
    from stocktrend.inference.predictor import Predictor

    p = Predictor.from_artifact(version_dir, backend)
    p.backend(x)  # first use: captures this batch size's graph
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        p.backend(x)
        times.append(time.perf_counter() - t)
    misses = getattr(p.backend, "capture_misses", {})
    return {"predictions_per_s": round(len(x) / statistics.median(times), 1),
            "median_ms": round(statistics.median(times) * 1e3, 3), "capture_misses": {str(k): v for k, v in misses.items()}}


def serve(args: argparse.Namespace) -> int:
    dev = device_or_refuse(args.allow_cpu)
    if dev is None:
        return 1
    dry = dev.type != "cuda"
    from stocktrend.serving import control
    from stocktrend.serving.loadgen import load

    path = Path(args.out or RESULTS / "gpu_serve.json")
    out = header(dev, "serve")
    with Workspace("gpu_serve_") as ws:
        work = ws.dir
        dataset = real_dataset(work)
        version_dir = trained_artifact(dataset, "tiny" if dry else "v2", dev.type, work)
        backend, gpus = ("torch", 0.0) if dry else ("cuda", 0.25)
        out.update({"model": "tiny (dry run)" if dry else "v2, one epoch", "backend": backend, "num_gpus": gpus})
        write_json(path, out)
        val = np.load(dataset / "val_X.npy")
        starts = np.linspace(0, len(val) - 1, 64).astype(int)
        single = [json.dumps({"windows": val[i : i + 1].tolist()}).encode() for i in starts]
        head = ws.start_head()
        base = control.load_config(control.DEFAULT_CONFIG)
        common = {"num_replicas": 1, "num_cpus": 0.25 if dry else 2.0}  # both apps fit the head's CPUs
        app = control.with_overrides({"applications": [base["applications"][0]]}, None, {
            **common, "model": str(version_dir), "backend": backend, "num_gpus": gpus, "max_batch_size": 512,
            "max_windows_per_request": 512, "prediction_log_dir": str(work / "predictions")},
            {}, name="model", route_prefix="/model")["applications"][0]
        noop = {"name": "noop", "route_prefix": "/noop", "import_path": "stocktrend.serving.noop:build", "args": common}
        control.deploy(head.dashboard, {"proxy_location": "HeadOnly", "applications": [app, noop],
                                        "http_options": {"host": "127.0.0.1", "port": head.serve_port}}, timeout=90)
        url = f"http://127.0.0.1:{head.serve_port}"
        n = 60 if dry else 500
        single_rows = {}
        for name in ("noop", "model"):
            load(f"{url}/{name}/v1/predict", single, 50, 1)  # warm-up (the model's first graphs)
            s = load(f"{url}/{name}/v1/predict", single, n, 1).summary()
            if s["ok"] != s["requests"]:
                raise SystemExit(f"{name}: {s['requests'] - s['ok']} failed requests")
            single_rows[name] = s
        out["single_window"] = {**single_rows, "model_minus_noop_p50_ms": round(
            single_rows["model"]["p50_ms"] - single_rows["noop"]["p50_ms"], 3)}
        out["single_window"]["goal_met"] = out["single_window"]["model_minus_noop_p50_ms"] <= 1.0
        write_json(path, out)
        batched = {}
        for batch in (64, 256) if not dry else (16,):
            bodies = [json.dumps({"windows": val[i : i + batch].tolist()}).encode()
                      for i in np.linspace(0, len(val) - batch, 16).astype(int)]
            load(f"{url}/model/v1/predict", bodies, 20, 4)
            s = load(f"{url}/model/v1/predict", bodies, 40 if dry else 400, 4).summary()
            if s["ok"] != s["requests"]:
                raise SystemExit(f"batched {batch}: {s['requests'] - s['ok']} failed requests")
            batched[str(batch)] = {"http": {**s, "predictions_per_s": round(s["requests_per_s"] * batch, 1)}}
            out["batched"] = batched
            write_json(path, out)
        control.client(head.dashboard).delete_applications()
        ws.stop_head()
        for batch, row in batched.items():  # the back-end alone, same process kind, card now free
            row["backend_alone"] = backend_rate(version_dir, backend, val[: int(batch)])
            row["http_over_backend"] = round(row["http"]["predictions_per_s"] / row["backend_alone"]["predictions_per_s"], 3)
            row["goal_met"] = row["http_over_backend"] >= 2 / 3
            write_json(path, out)
    show(out)
    return 0


# -- ray_train ---------------------------------------------------------------------------


def ray_train_stage(args: argparse.Namespace) -> int:
    dev = device_or_refuse(args.allow_cpu)
    if dev is None:
        return 1
    dry = dev.type != "cuda"
    import torch

    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.config import TrainConfig
    from stocktrend.training.ray_train import ray_train

    path = Path(args.out or RESULTS / "gpu_ray_train.json")
    out = header(dev, "ray_train")
    with Workspace("gpu_raytrain_") as ws:
        work = ws.dir
        dataset = real_dataset(work)
        meta = read_metadata(dataset)
        n_train = meta["splits"]["train"]["n"]
        model_cfg = model_config_from_metadata("tiny" if dry else "v2", meta)
        epochs = 1 if dry else args.epochs
        out.update({"preset": "tiny" if dry else "v2", "n_train": n_train, "epochs": epochs})
        if dev.type == "cuda":
            torch.set_float32_matmul_precision("high")  # as the DevicePlan does on CUDA
        out["bare_loop"] = bare_loop(model_cfg, dev, (64,), 3 if dry else 50, 1 if dry else 10)
        write_json(path, out)
        ws.start_head()
        t0 = time.perf_counter()
        res = ray_train(dataset, model_cfg, TrainConfig(max_epochs=epochs, early_stopping_patience=epochs + 1),
                        work / "runs", "gpu", use_gpu=not dry)
        wall = time.perf_counter() - t0
        history = res["history"]
        timed = [h["time_train_s"] for h in history if "time_train_s" in h]
        steady = timed[1:] or timed  # the first epoch pays cuDNN planning and warm-up
        rate = round(n_train * len(steady) / sum(steady), 1) if steady else None
        bare = out["bare_loop"]["fp32-tf32_batch_64"]["samples_per_s"]
        out["ray_train"] = {
            "wall_s": round(wall, 1), "train_s_per_epoch": [round(h.get("time_train_s", float("nan")), 3) for h in history],
            "val_s_per_epoch": [round(h.get("time_val_s", float("nan")), 3) for h in history],
            "val_ce_per_epoch": [h.get("val_ce") for h in history], "train_samples_per_s": rate,
            "over_bare_loop_64": round(rate / bare, 3) if rate and bare else None,
        }
        out["ray_train"]["goal_met"] = (out["ray_train"]["over_bare_loop_64"] or 0) >= 1.25
        write_json(path, out)
    show(out)
    return 0


# -- packed_trials -----------------------------------------------------------------------


def packed_trials(args: argparse.Namespace) -> int:
    dev = device_or_refuse(args.allow_cpu)
    if dev is None:
        return 1
    dry = dev.type != "cuda"
    from stocktrend.tuning.run import SearchOptions, run_search
    from stocktrend.tuning.space import load_space

    path = Path(args.out or RESULTS / "gpu_packed_trials.json")
    out = header(dev, "packed_trials")
    with Workspace("gpu_trials_") as ws:
        work = ws.dir
        ws.start_head()
        opts = SearchOptions(num_samples=4, max_concurrent=4, gpus_per_trial=0.0 if dry else 0.25,
                             cpus_per_trial=0.25 if dry else 1)
        t0 = time.perf_counter()
        results = run_search(load_space(ROOT / "search_spaces" / "smoke.yaml"), opts, work / "runs", "packed")
        out["trials"] = {"n": len(results), "errors": results.num_errors, "gpus_per_trial": opts.gpus_per_trial,
                         "wall_s": round(time.perf_counter() - t0, 1),
                         "best_val_ce": [round(float(r.metrics.get("val_ce", float("nan"))), 4) for r in results]}
        out["goal_met"] = results.num_errors == 0 and len(results) == 4
        write_json(path, out)
    show(out)
    return 0


STAGES = {"serve": serve, "ray_train": ray_train_stage, "packed_trials": packed_trials}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("--epochs", type=int, default=3, help="ray_train: epochs (the first pays warm-up)")
    ap.add_argument("--allow-cpu", action="store_true", help="a dry run on the CPU when no GPU is visible")
    ap.add_argument("--out", help="results file (default: bench/results/gpu_<stage>.json)")
    args = ap.parse_args(argv)
    return STAGES[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
