"""Inference back-ends of the v2 network: latency and throughput per batch size, FLOPs, share of peak.

    python bench/inference.py [--threads 2] [--model models/msft_v2]  ->  bench/results/inference.json

Back-ends: eager PyTorch, TorchScript (traced), bf16 autocast, torch dynamic INT8, ONNX Runtime
fp32 and INT8 (the exported recipe: static QDQ calibrated on training windows + dynamic LSTM),
all in one run on the same inputs. The network is the trained v2 artifact when one exists
(its validation windows then measure INT8's fidelity: the largest probability difference
and the class agreement beyond that margin), else the v2 preset with seeded random weights
on the default dataset's validation windows. FLOPs per sample are counted by torch's FlopCounterMode (matrix products
and convolutions; the LSTM, which it does not see, is added analytically); the CPU's peak is
measured in the same run by a large fp32 matrix product, so "share of peak" is a ratio of
two figures from the same minute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

from stocktrend.inference.backends import (  # noqa: E402
    OnnxBackend,
    TorchBackend,
    TorchInt8Backend,
    _ProbsAndAttention,
    cpu_flags,
    cpu_has_vnni,
    mha_fastpath,
)
from stocktrend.inference.quantize import write_onnx_files  # noqa: E402

BATCHES = (1, 16, 64, 256)


class TracedBackend:
    """TorchScript: the probabilities-and-attention module traced once."""

    def __init__(self, net: torch.nn.Module, example: np.ndarray):
        with mha_fastpath(False), torch.no_grad():
            self.traced = torch.jit.trace(_ProbsAndAttention(net).eval(), torch.from_numpy(example),
                                          check_trace=False, strict=False)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, attention = self.traced(torch.from_numpy(x))
        return probs.numpy(), attention.numpy()


def timed(fn, x: np.ndarray, min_seconds: float, min_calls: int) -> list[float]:
    fn(x)  # warm-up (lazy init, allocator)
    fn(x)
    out, t_end = [], time.perf_counter() + min_seconds
    while len(out) < min_calls or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out


def flops_per_sample(model: torch.nn.Module, seq_len: int, n_features: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, seq_len, n_features))
    counted = counter.get_total_flops()
    lstm = 0
    for m in model.modules():
        if isinstance(m, torch.nn.LSTM):
            dirs = 2 if m.bidirectional else 1
            for layer in range(m.num_layers):
                inp = m.input_size if layer == 0 else m.hidden_size * dirs
                lstm += dirs * seq_len * 2 * 4 * m.hidden_size * (inp + m.hidden_size)
    counted_has_lstm = any("lstm" in str(k).lower() for k in counter.get_flop_counts().get("Global", {}))
    total = counted + (0 if counted_has_lstm else lstm)
    return {"total": int(total), "counted_by_torch": int(counted), "lstm_analytic": int(lstm)}


def peak_gflops(threads: int, n: int = 2048, seconds: float = 3.0) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = timed(lambda _: torch.mm(a, b), None, seconds, 5)
    return 2 * n**3 / statistics.median(times) / 1e9


def load_network(model_path: str | None, threads: int):
    """(network, validation windows, source description)."""
    from stocktrend.inference.predictor import Predictor

    path = Path(model_path) if model_path else ROOT / "models" / "msft_v2"
    if (path / "latest").is_file() or (path / "manifest.json").is_file():
        from stocktrend.evaluation.report import artifact_dataset

        p = Predictor.from_artifact(path, threads=threads)
        data = artifact_dataset(p.training, p.preprocessing)
        return p.model, np.load(data / "val_X.npy"), f"trained artifact {p.name}/{p.version}"
    from stocktrend.data.cache import build_cached
    from stocktrend.data.config import load_data_config
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.models.network import TrendNet

    data = build_cached(load_data_config(ROOT / "datasets" / "msft_v2.yaml"), ROOT / "datasets" / "cache")
    torch.manual_seed(0)
    net = TrendNet(model_config_from_metadata("v2", read_metadata(data))).eval()
    return net, np.load(data / "val_X.npy"), "v2 preset, seeded random weights (no trained v2 artifact here)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", help="a v2 artifact (default models/msft_v2 when present)")
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per (backend, batch)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    net, val, source = load_network(args.model, args.threads)
    seq_len, n_features = val.shape[1], val.shape[2]
    params = sum(p.numel() for p in net.parameters())
    rng = np.random.default_rng(0)
    inputs = {b: val[rng.integers(0, len(val), b)].astype(np.float32) for b in BATCHES}

    backends = {"eager": TorchBackend(net), "bf16": TorchBackend(net, "bf16", torch.bfloat16),
                "torch-int8": TorchInt8Backend(net)}
    backends["torchscript"] = TracedBackend(net, inputs[16])
    onnx_dir = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    from stocktrend.data.cache import build_cached
    from stocktrend.data.config import load_data_config
    from stocktrend.inference.export import calibration_windows

    data = build_cached(load_data_config(ROOT / "datasets" / "msft_v2.yaml"), ROOT / "datasets" / "cache")
    files, recipe = write_onnx_files(net, seq_len, n_features, onnx_dir, calibration_windows(data))
    backends["onnx"] = OnnxBackend(files["onnx"], "onnx", args.threads)
    backends["onnx-int8"] = OnnxBackend(files["onnx-int8"], "onnx-int8", args.threads)
    # The export's second recipe (the transformer's MatMuls left fp32), for when the first misses fidelity.
    from stocktrend.inference.quantize import STATIC_RECIPES, quantize_onnx_int8

    conv_only = quantize_onnx_int8(files["onnx"], onnx_dir / "model.int8.conv.onnx", calibration_windows(data),
                                   STATIC_RECIPES[1])
    backends["onnx-int8 (MatMul fp32)"] = OnnxBackend(onnx_dir / "model.int8.conv.onnx", "onnx-int8", args.threads)

    print(f"{source}: {params:,} parameters; timing {list(backends)}", flush=True)
    native_bf16 = "avx512_bf16" in cpu_flags()
    ref = backends["eager"](val)[0]
    results = {}
    for name, fn in backends.items():
        probs = fn(val[:256])[0] if name == "bf16" and not native_bf16 else fn(val)[0]
        ref_n = ref[: len(probs)]
        diff = float(np.abs(probs - ref_n).max())
        same, beyond = probs.argmax(1) == ref_n.argmax(1), np.abs(ref_n[:, 1] - 0.5) > diff
        row = {"max_abs_prob_diff": diff, "agreement_windows": len(probs), "class_agreement": float(same.mean()),
               "margin_agreement": float(same[beyond].mean()) if beyond.any() else None,
               "windows_beyond_margin": int(beyond.sum()), "batches": {}}
        row["meets_fidelity_goals"] = bool(diff <= 0.01 and (row["margin_agreement"] is None
                                                            or row["margin_agreement"] >= 0.999))
        for b in BATCHES:
            if name == "bf16" and not native_bf16 and b > 16:
                continue  # emulated bf16 is ~5x slower than fp32 here: large batches would only burn minutes
            t = timed(fn, inputs[b], args.seconds, 20 if b == 1 else 5)
            row["batches"][b] = {"p50_ms": 1e3 * float(np.percentile(t, 50)), "p99_ms": 1e3 * float(np.percentile(t, 99)),
                                 "samples_per_s": b / statistics.median(t), "calls": len(t)}
        results[name] = row
        print(f"{name:12s} " + "  ".join(f"b{b}: {r['p50_ms']:.2f} ms {r['samples_per_s']:.0f}/s"
                                         for b, r in row["batches"].items()), flush=True)
    flops = flops_per_sample(net, seq_len, n_features)
    peak = peak_gflops(args.threads)
    torch.set_num_threads(args.threads)
    for row in results.values():
        best = max(r["samples_per_s"] for r in row["batches"].values())
        row["best_samples_per_s"] = best
        row["gflops_achieved"] = best * flops["total"] / 1e9
        row["share_of_fp32_peak"] = row["gflops_achieved"] / peak
    out = {"benchmark": "inference", "machine": machine_info(), "threads": args.threads, "network": source,
           "params": params, "seq_len": seq_len, "n_features": n_features, "validation_windows": len(val),
           "flops_per_sample": flops, "fp32_matmul_peak_gflops": peak, "cpu_vnni": cpu_has_vnni(),
           "cpu_bf16": native_bf16, "int8_recipe": recipe, "int8_recipe_matmul_fp32": conv_only,
           "backends": results}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "inference.json").write_text(json.dumps(out, indent=2))
    print(f"{flops['total'] / 1e6:.0f} MFLOP/sample; fp32 matmul peak {peak:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
