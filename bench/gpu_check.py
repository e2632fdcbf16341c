"""GPU check: v2 epochs with plain Lightning on one GPU, and batched inference throughput.

Runs with PYTHONPATH=src where PyTorch, Lightning and torchmetrics are installed (no Ray
needed). Uses datasets/npy when present, else random data of the real shape (N, 30, 50).
Prints epoch time and samples/s, and writes bench/results/gpu_check.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402


def random_dataset(root: Path, n_train=5400, n_val=630, seq_len=30, k=50) -> Path:
    rng = np.random.default_rng(0)
    day = np.datetime64("2000-01-03")
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        x = rng.standard_normal((n, seq_len, k)).astype(np.float32)
        y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, n)]
        dates = np.busday_offset(day, np.arange(n), roll="forward").astype("datetime64[D]")
        day = np.busday_offset(dates[-1], 40)
        for name, arr in (("X", x), ("y", y), ("dates", dates)):
            np.save(root / f"{split}_{name}.npy", arr)
        splits[split] = {"n": n, "class_counts": y.sum(0).astype(int).tolist()}
    meta = {"seq_len": seq_len, "horizon": 5, "n_classes": 2, "features": {"selected": [f"f{i}" for i in range(k)]},
            "splits": splits}
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


def main() -> int:
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.models.network import TrendNet
    from stocktrend.training.config import TrainConfig
    from stocktrend.training.fit_local import fit_local

    if not torch.cuda.is_available():
        print("no CUDA device visible; this check needs an NVIDIA GPU", file=sys.stderr)
        return 1
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    tmp = Path(tempfile.mkdtemp())
    real = ROOT / "datasets" / "npy"
    dataset = real if (real / "metadata.json").is_file() else random_dataset(tmp)
    model_cfg = model_config_from_metadata("v2", read_metadata(dataset))
    out = {"device": torch.cuda.get_device_name(0), "dataset": "real" if dataset == real else "random", "epochs": epochs}
    for precision in ("32-true", "bf16-mixed"):
        train_cfg = TrainConfig(max_epochs=epochs, precision=precision)
        t0 = time.perf_counter()
        res = fit_local(dataset, model_cfg, train_cfg, tmp / precision, progress=False)
        seconds = time.perf_counter() - t0
        n = read_metadata(dataset)["splits"]["train"]["n"]
        out[precision] = {"seconds": seconds, "epoch_s": seconds / epochs, "train_samples_per_s": n * epochs / seconds,
                          "best_val_ce": res["best_score"]}
    model = TrendNet(model_cfg).cuda().eval()
    for batch in (1, 64, 1024):
        x = torch.randn(batch, model_cfg.seq_len, model_cfg.n_features, device="cuda")
        with torch.inference_mode():
            for _ in range(10):
                model(x)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            reps = 50
            for _ in range(reps):
                model(x)
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / reps
        out[f"inference_batch_{batch}"] = {"latency_ms": dt * 1e3, "samples_per_s": batch / dt}
    out["machine"] = machine_info()
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "gpu_check.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
