"""LSTM or GRU in the recurrent block: parameters per block and inference latency, one run.

    python bench/rnn.py [--threads 2] [--rounds 30]  ->  bench/results/rnn.json

For the tiny and v2 presets (50 features, 30 days), both recurrent blocks with seeded random
weights (latency does not depend on what the weights learned): the parameter count per block,
and the median latency at batch 1 and 64 on the torch, ONNX fp32 and ONNX INT8 back-ends
(INT8 without calibration here: dynamic MatMul/Gemm, plus the LSTM where there is one; ONNX
Runtime has no INT8 GRU), over interleaved rounds so that both models see the same noise. The
ratio GRU/LSTM is the figure to read.
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
from stocktrend.models.network import TrendNet, parameter_counts  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")
BATCHES = (1, 64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds per (model, back-end, batch)")
    ap.add_argument("--presets", nargs="+", default=["tiny", "v2"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rnn.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out: dict = {"machine": machine_info(), "threads": args.threads, "rounds": args.rounds, "presets": {}}
    for name in args.presets:
        models, backends = {}, {}
        for rnn in ("lstm", "gru"):
            torch.manual_seed(0)
            cfg = preset(name, rnn=rnn)
            models[rnn] = (cfg, TrendNet(cfg).eval())
            for b in BACKENDS:
                backends[(rnn, b)] = make_backend(b, models[rnn][1], cfg.seq_len, cfg.n_features, args.threads)
        cfg = models["lstm"][0]
        inputs = {n: np.random.default_rng(n).standard_normal((n, cfg.seq_len, cfg.n_features)).astype(np.float32)
                  for n in BATCHES}
        medians = interleaved_medians(backends, inputs, args.rounds)
        entry = {"params": {rnn: parameter_counts(m) for rnn, (_, m) in models.items()}, "latency_ms": {}}
        for b in BACKENDS:
            for n in BATCHES:
                lstm, gru = (medians[((r, b), n)] for r in ("lstm", "gru"))
                entry["latency_ms"][f"{b}@{n}"] = {"lstm": lstm, "gru": gru, "gru_over_lstm": gru / lstm}
        out["presets"][name] = entry
        print(f"{name}: rnn block {entry['params']['lstm']['lstm']:,} (LSTM) vs {entry['params']['gru']['lstm']:,} "
              f"(GRU) parameters; " + ", ".join(f"{k} x{v['gru_over_lstm']:.2f}" for k, v in entry["latency_ms"].items()))
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
