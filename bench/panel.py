"""The 20-stock panel: build time, memory and size against materialised windows, training
throughput, and the rank-IC table of the panel search's best model.

    python bench/panel.py [--model models/stocks20_panel]  ->  bench/results/panel.json

Build: `build_dataset` of datasets/stocks20.yaml three times, each in a fresh process
(median time, peak resident memory of that process); the size of the stored dataset against
what the same windows would take materialised as float32. Training: samples/s of one epoch
of the tiny preset over the panel (plain Lightning, batch 256, windows cut per batch from the
memory-mapped matrix), beside the single-stock default's materialised windows, same run. IC:
the walk-forward and test-split reports of the panel search's exported model, when present
(`python ray_jobs/tune.py --space search_spaces/panel.yaml` makes it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

BUILD = """
import json, resource, sys, time
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
t = time.perf_counter()
meta = build_dataset(load_data_config(sys.argv[1]), sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "size": meta.get("size"), "windows": {s: meta["splits"][s]["n"] for s in meta["splits"]}}))
"""


def build_figures(config: Path, work: Path, runs: int = 3) -> dict:
    rows = []
    for i in range(runs):
        out = subprocess.run([sys.executable, "-c", BUILD, str(config), str(work / f"ds{i}")], capture_output=True,
                             text=True, timeout=600, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    disk = sum(p.stat().st_size for p in (work / "ds0").iterdir()) / 1e6
    return {"seconds_median": statistics.median(r["seconds"] for r in rows),
            "peak_rss_mib_max": max(r["peak_rss_mib"] for r in rows), "disk_mb": disk,
            "materialised_windows_mb": rows[0]["size"]["materialised_windows_mb"] if rows[0]["size"] else None,
            "windows": rows[0]["windows"], "dataset": str(work / "ds0")}


def train_samples_per_s(dataset: Path, work: Path) -> float:
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.config import TrainConfig
    from stocktrend.training.fit_local import fit_local

    meta = read_metadata(dataset)
    train_cfg = TrainConfig(batch_size=256, accumulate_grad_batches=1, max_epochs=1)
    t = time.perf_counter()
    fit_local(dataset, model_config_from_metadata("tiny", meta), train_cfg, work / f"run-{dataset.name}", max_epochs=1,
              progress=False, accelerator="cpu", enable_model_summary=False)
    return (meta["splits"]["train"]["n"] + meta["splits"]["val"]["n"]) / (time.perf_counter() - t)


def reports(model: Path) -> dict:
    out = {}
    if not (model / "latest").is_file():
        return out
    version = model / (model / "latest").read_text().strip()
    for key, path in (("test", version / "evaluation" / "report.json"),
                      ("walk_forward", version / "evaluation" / "walk_forward" / "report.json")):
        if path.is_file():
            r = json.loads(path.read_text())
            out[key] = {"rank_ic": r["rank_ic"], "verdict": r["verdict"], "headline": r["headline"],
                        "test": {k: r["test"][k] for k in ("windows", "dates")}, "pooled": r["test"]["pooled"],
                        "backtest": r["backtest"], "label": r.get("label")}
    out["model"] = f"{model.name}/{version.name}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "stocks20_panel"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from stocktrend.data.cache import build_cached
    from stocktrend.data.config import load_data_config

    work = Path(tempfile.mkdtemp(prefix="bench-panel-"))
    build = build_figures(ROOT / "datasets" / "stocks20.yaml", work)
    single = build_cached(load_data_config(ROOT / "datasets" / "msft_v2.yaml"), ROOT / "datasets" / "cache")
    training = {"panel_samples_per_s": train_samples_per_s(Path(build["dataset"]), work),
                "single_stock_samples_per_s": train_samples_per_s(single, work)}
    out = {"benchmark": "panel", "machine": machine_info(), "build": build, "training_tiny_batch_256": training,
           "reports": reports(Path(args.model))}
    (ROOT / "bench" / "results" / "panel.json").write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps({k: v for k, v in out.items() if k != "reports"}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
