"""Exporting a TrendNet to ONNX and quantizing the graph to INT8: the export side of the
ONNX back-ends (ONNX Runtime's quantization tools are needed here only, not at serving).

Where the time of the v2 network goes under ONNX Runtime (2-core AMD EPYC with AVX-512
VNNI, per-operator profile, ``bench/onnx_profile.py``): in fp32 the bidirectional LSTM
(about half at batch 1), the transformer's MatMuls and the convolutions; in the earlier
all-dynamic INT8 graph, ``ConvInteger`` took 30% at batch 1 and 59% at batch 64, because
ONNX Runtime has no fast kernel for it. The recipe therefore:

- with calibration windows (the training split's, at ``ray_jobs/export.py``): static QDQ
  quantization of Conv and MatMul (per-channel INT8 weights, activation ranges from the
  calibration windows: QLinearConv/QLinearMatMul run on the VNNI kernels), then dynamic
  INT8 for the LSTM (ONNX Runtime cannot statically quantize it); where that misses the
  fidelity goals, the same with the MatMuls left in fp32 (``STATIC_RECIPES``). The
  classifier head's Gemms stay fp32: a few percent of the time, and on the tiny model
  quantizing them moved validation probabilities by 0.017 against 0.005 without;
- without (a replica quantizing in memory): dynamic INT8 of MatMul, Gemm and LSTM only,
  the convolutions left in fp32.

Signed weights (u8 x s8) are the fast path with VNNI; without VNNI that kernel can saturate
its 16-bit intermediate sums (6% of a small model's classes flipped on the AVX2 machine),
so there the weights are unsigned for dynamic quantization and reduced-range for static.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stocktrend.inference.backends import (
    ONNX_FILES,
    ONNX_OPSET,
    _ProbsAndAttention,
    cpu_has_vnni,
    mha_fastpath,
    output_names,
)

log = logging.getLogger(__name__)
CALIBRATION_BATCH = 32


def export_onnx(model: nn.Module, seq_len: int, n_features: int, path: Path) -> Path:
    """Export probabilities, attention (and a multi-task model's volatility) with a dynamic batch axis."""
    net = _ProbsAndAttention(model).eval()
    dummy = torch.zeros(2, seq_len, n_features)
    with mha_fastpath(False), torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The tracer's notes on shape checks and on LSTM batch sizes do not apply: the batch
        # axis is declared dynamic and the parity check runs on other batch sizes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (dummy,), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=["windows"], output_names=output_names(model),
            dynamic_axes={name: {0: "batch"} for name in ("windows", *output_names(model))},
        )
    return path


# Static recipes, fastest first (measured on the v2 network: `bench/onnx_profile.py`). The
# transformer's MatMuls in INT8 moved v2's validation probabilities by 0.011 whichever way
# they were quantized (static, dynamic, per-channel, more calibration), the convolutions
# alone by 0.005: the export keeps the fastest recipe that meets the fidelity goals.
STATIC_RECIPES = (("Conv", "MatMul"), ("Conv",))


def quantize_onnx_int8(src: Path, dst: Path, calibration: np.ndarray | None = None,
                       static_ops: tuple[str, ...] = STATIC_RECIPES[0]) -> dict:
    """Write the INT8 graph of ``src`` to ``dst``; return the recipe used (export_report.json)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    vnni = cpu_has_vnni()
    # ONNX Runtime quantizes an LSTM dynamically; it has no INT8 GRU, which stays fp32.
    rnn = "LSTM" if any(n.op_type == "LSTM" for n in onnx.load(str(src)).graph.node) else "GRU"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs generic advice on the root logger
    try:
        if calibration is None:
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8 if vnni else QuantType.QUInt8,
                             op_types_to_quantize=["MatMul", "Gemm", "LSTM"], per_channel=True)
            return {"recipe": "dynamic INT8 of MatMul, Gemm and LSTM (Conv kept fp32)" if rnn == "LSTM" else
                    "dynamic INT8 of MatMul and Gemm (Conv and the GRU kept fp32)", "quantized_for_vnni": vnni,
                    "calibration_windows": 0}
        batches = [{"windows": np.ascontiguousarray(calibration[i:i + CALIBRATION_BATCH], np.float32)}
                   for i in range(0, len(calibration), CALIBRATION_BATCH)]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter(batches)

            def get_next(self):
                return next(self.items, None)

        pre, static = dst.with_suffix(".pre.onnx"), dst.with_suffix(".qdq.onnx")
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # the Reshapes defeat symbolic shapes
            quantize_static(str(pre), str(static), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=not vnni, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            op_types_to_quantize=list(static_ops), calibrate_method=CalibrationMethod.MinMax)
            quantize_dynamic(str(static), str(dst), weight_type=QuantType.QInt8 if vnni else QuantType.QUInt8,
                             op_types_to_quantize=["LSTM"])
        finally:
            pre.unlink(missing_ok=True)
            static.unlink(missing_ok=True)
        return {"recipe": f"static QDQ INT8 of {' and '.join(static_ops)} (per-channel weights, MinMax ranges from "
                          f"the calibration windows) + " + ("dynamic INT8 LSTM" if rnn == "LSTM" else "the GRU in fp32")
                          + "; the rest fp32", "static_ops": list(static_ops),
                "quantized_for_vnni": vnni,
                "calibration_windows": int(len(calibration))}
    finally:
        root.setLevel(level)


def write_onnx_files(model: nn.Module, seq_len: int, n_features: int, out_dir: Path,
                     calibration: np.ndarray | None = None, static_ops: tuple[str, ...] = STATIC_RECIPES[0],
                     int8: bool = True) -> tuple[dict[str, Path], dict]:
    """The fp32 graph (and with ``int8`` the INT8 one) in ``out_dir``, and the INT8 recipe used."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"onnx": export_onnx(model, seq_len, n_features, out_dir / ONNX_FILES["onnx"])}
    if not int8:
        return files, {}
    files["onnx-int8"] = out_dir / ONNX_FILES["onnx-int8"]
    recipe = quantize_onnx_int8(files["onnx"], files["onnx-int8"], calibration, static_ops)
    log.info("INT8 graph: %s", recipe["recipe"])
    return files, recipe
