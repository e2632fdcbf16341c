"""Record a trained artifact's validation figures as a benchmark result.

    python bench/record_artifact.py models/msft_v2 v2_training  ->  bench/results/v2_training.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2
    from stocktrend.inference.artifact import load_parts

    version_dir, manifest, parts = load_parts(sys.argv[1])
    t = parts["training"]
    epochs = len(t["history"])
    out = {"benchmark": sys.argv[2], "artifact": str(version_dir.relative_to(ROOT) if version_dir.is_relative_to(ROOT)
                                                     else version_dir),
           "engine": t.get("engine"), "epochs_run": epochs, "train_seconds": t.get("train_seconds"),
           "seconds_per_epoch": (t.get("train_seconds") or 0) / max(1, epochs), "best_epoch": t["best_epoch"],
           "selection_metric": t["selection_metric"], "val_metrics": t["val_metrics"],
           "params": None, "machine": machine_info()}
    from stocktrend.config_io import config_from_dict
    from stocktrend.models.config import ModelConfig  # noqa: F401
    from stocktrend.models.network import TrendNet, parameter_counts

    out["params"] = parameter_counts(TrendNet(config_from_dict(ModelConfig, parts["model"])))["total"]
    path = ROOT / "bench" / "results" / f"{sys.argv[2]}.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
