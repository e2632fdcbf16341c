"""The network families side by side: parameters per block and inference latency, one run.

    python bench/families.py [--threads 2] [--rounds 30]  ->  bench/results/families.json

Networks (50 features, 30 days, seeded random weights: latency does not depend on what the
weights learned): the v2 preset (CNN -> BiLSTM -> Transformer), the tft preset (the
Temporal-Fusion-style family at its CPU size), and both families at the tiny size; each with
and without the volatility head. Median latency at batch 1 and 64 on the torch, ONNX fp32 and
ONNX INT8 (dynamic, uncalibrated) back-ends, over interleaved rounds so that every network
sees the same noise. Ratios against v2 are the figures to read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine_info  # noqa: E402
from timing import interleaved_medians  # noqa: E402

from stocktrend.inference.backends import make_backend  # noqa: E402
from stocktrend.models.config import preset  # noqa: E402
from stocktrend.models.network import build_network, parameter_counts  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")
BATCHES = (1, 64)
NETWORKS = {  # name -> (preset, overrides)
    "v2": ("v2", {}), "v2+vol": ("v2", {"volatility_head": True}),
    "tft": ("tft", {}), "tft+vol": ("tft", {"volatility_head": True}),
    "tiny": ("tiny", {}), "tiny-tft": ("tiny", {"family": "tft"}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds per (network, back-end, batch)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "families.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets, runs = {}, {}
    for name, (base, overrides) in NETWORKS.items():
        torch.manual_seed(0)
        cfg = preset(base, **overrides)
        nets[name] = build_network(cfg).eval()
        for b in BACKENDS:
            runs[(name, b)] = make_backend(b, nets[name], cfg.seq_len, cfg.n_features, args.threads)
    cfg = preset("v2")
    inputs = {n: np.random.default_rng(n).standard_normal((n, cfg.seq_len, cfg.n_features)).astype(np.float32)
              for n in BATCHES}
    medians_by_key = interleaved_medians(runs, inputs, args.rounds)
    out: dict = {"machine": machine_info(), "threads": args.threads, "rounds": args.rounds, "networks": {}}
    def medians(name: str) -> dict[str, float]:
        return {f"{b}@{n}": medians_by_key[((name, b), n)] for b in BACKENDS for n in BATCHES}

    v2 = medians("v2")
    for name, net in nets.items():
        lat = medians(name)
        out["networks"][name] = {"params": parameter_counts(net), "latency_ms": lat,
                                 "latency_over_v2": {k: v / v2[k] for k, v in lat.items()}}
        print(f"{name:9s} {out['networks'][name]['params']['total']:>11,} params; "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in lat.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
