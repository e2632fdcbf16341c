"""Training a panel model as the universe grows: Ray Train samples/s and memory per worker on
built panel datasets of different sizes, with the same epoch budget (``--epoch-windows``: each
worker draws that many training windows per epoch, whatever the universe).

    python bench/panel_train_scale.py --datasets SMALL_DIR,LARGE_DIR [--epoch-windows 20000] [--epochs 2]
        [--workers 2] [--preset tiny] [--out bench/results/panel_train_scale.json]
    python bench/panel_train_scale.py --datasets ... --batches dates --epoch-dates 1000 --batch-size 20
        [--rank-weight 1] --out bench/results/panel_train_scale_dates.json

With ``--batches dates`` each batch is one date's cross-section (at most ``--batch-size`` of its
windows) and each worker's epoch ``--epoch-dates`` dates of its own shard; the windows an epoch
trains are counted from the dataset's dates (each date's windows, capped at the batch size).

Each run is ``ray_jobs/train.py`` in a fresh process (its own local Ray, start-up included in
its wall time). Throughput is read from the artifact's own history: windows per epoch over the
epoch's training seconds (validation apart), per worker; validation runs over every validation
window, so its time grows with the universe by design. Memory is sampled as in
``panel_scale.py``: the largest process the run started (a Train worker holds its split's
(instrument, day) index and labels; the feature matrices are memory-mapped, shared by the
workers through the page cache, never copied per worker) and the machine's memory in use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402
from panel_scale import Sampler  # noqa: E402


def train_once(dataset: Path, work: Path, args) -> dict:
    budget = (["--epoch-windows", str(args.epoch_windows)] if args.batches == "windows" else
              ["--batches", "dates", "--epoch-dates", str(args.epoch_dates), "--rank-weight", str(args.rank_weight)])
    cmd = [sys.executable, str(ROOT / "ray_jobs" / "train.py"), "--preset", args.preset, "--dataset", str(dataset),
           "--epochs", str(args.epochs), *budget, "--num-workers", str(args.workers), "--cpus-per-worker", "1",
           "--storage-path", str(work / "runs"), "--models", str(work / "models"), "--name", "scale",
           *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]
    with Sampler() as mem:
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": "local"})
    if done.returncode != 0:
        raise RuntimeError(f"training on {dataset} failed:\n{done.stderr[-3000:]}")
    training = json.loads(next((work / "models" / "scale").glob("*/training.json")).read_text())
    history = training["history"]
    meta = json.loads((dataset / "metadata.json").read_text())
    train_s = [h["time_train_s"] for h in history if "time_train_s" in h]
    val_s = [h["time_val_s"] for h in history if "time_val_s" in h]
    last = train_s[-1]  # the first epoch also pays for the workers' first touches of the data
    windows = args.epoch_windows if args.batches == "windows" else windows_per_epoch(dataset, meta, args)
    return {"dataset": str(dataset), "instruments": len(meta["tickers"]),
            "days": len(np.load(dataset / "calendar.npy")),
            "train_windows": meta["splits"]["train"]["n"], "val_windows": meta["splits"]["val"]["n"],
            "epochs": len(history), "train_seconds_per_epoch": train_s, "val_seconds_per_epoch": val_s,
            "windows_per_epoch_per_worker": windows, "samples_per_s_per_worker": windows / last,
            "peak_process_mib": mem.peak_process, "peak_process_anon_mib": mem.peak_anon,
            "machine_peak_mib": mem.peak_used,
            "anon_mib_by_process": {k: round(v) for k, v in sorted(mem.anon_by_kind.items(), key=lambda kv: -kv[1])[:6]}}


def windows_per_epoch(dataset: Path, meta: dict, args) -> float:
    """What a worker's epoch of ``epoch_dates`` date batches trains: the mean windows of a date
    with two or more (capped at the batch size), times the dates it draws."""
    sys.path.insert(0, str(ROOT / "src"))
    from stocktrend.training.date_batches import date_runs

    originals = sum(meta["splits"]["train"]["class_counts_before_balancing"])
    sizes = np.diff(date_runs(np.load(dataset / "train_index.npy", mmap_mode="r")[:originals, 1]))
    sizes = np.minimum(sizes[sizes >= 2], args.batch_size or 16)
    return float(sizes.mean()) * min(args.epoch_dates, -(-len(sizes) // args.workers))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", required=True, help="built panel dataset folders, comma-separated, smallest first")
    ap.add_argument("--epoch-windows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batches", choices=["windows", "dates"], default="windows")
    ap.add_argument("--epoch-dates", type=int, default=1000, help="with --batches dates: dates per worker per epoch")
    ap.add_argument("--rank-weight", type=float, default=1.0, help="with --batches dates: the rank-IC loss's weight")
    ap.add_argument("--batch-size", type=int, help="windows per batch (default: the recipe's, 16)")
    ap.add_argument("--keep-model", help="copy the model trained on the last dataset here (models/<name> layout)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "panel_train_scale.json"))
    args = ap.parse_args()
    rows = []
    for d in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as work:
            row = train_once(Path(d).resolve(), Path(work), args)
            if args.keep_model:
                shutil.rmtree(args.keep_model, ignore_errors=True)
                shutil.copytree(Path(work) / "models" / "scale", args.keep_model)
        rows.append(row)
        print(f"{row['instruments']:5d} instruments: {row['samples_per_s_per_worker']:7.0f} windows/s per worker "
              f"(training {row['train_seconds_per_epoch']} s, validation {row['val_seconds_per_epoch']} s per epoch), "
              f"largest process {row['peak_process_anon_mib']:6.0f} MiB anonymous, machine "
              f"+{row['machine_peak_mib']:6.0f} MiB", flush=True)
    ratio = rows[-1]["samples_per_s_per_worker"] / rows[0]["samples_per_s_per_worker"]
    result = {"benchmark": "panel_train_scale", "machine": machine_info(), "preset": args.preset,
              "epoch_windows": args.epoch_windows, "epochs": args.epochs, "workers": args.workers, "rows": rows,
              "batches": args.batches, "epoch_dates": args.epoch_dates, "rank_weight": args.rank_weight,
              "batch_size": args.batch_size or 16,
              "largest_to_smallest_samples_per_s": ratio,
              "command": "python bench/panel_train_scale.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"samples/s at {rows[-1]['instruments']} instruments / at {rows[0]['instruments']}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
