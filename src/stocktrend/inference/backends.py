"""Inference back-ends for a loaded TrendNet: one interface, several runtimes.

Every back-end maps float32 windows (N, L, F) to ``Outputs``: probabilities (N, C), attention
(N, L), and where the network has them the multi-task network's standardised log-volatility
forecast (N,) (the Predictor turns it back into a volatility) and the TFT-style network's
per-feature selection weights (N, F); None otherwise.

- ``torch``: eager PyTorch under ``inference_mode`` (the reference; always available).
- ``bf16``: eager PyTorch under bfloat16 autocast (pays only where the CPU has bf16 dot
  products; the benchmark says whether it does here).
- ``torch-int8``: ``torch.ao`` dynamic quantization of Linear and LSTM (or GRU) weights.
- ``onnx``: the network exported to ONNX (dynamic batch axis) run by ONNX Runtime.
- ``onnx-int8``: that graph quantized to INT8 (``quantize.py`` has the recipe and why).
- ``cuda``: on an NVIDIA GPU, requests padded to a few fixed batch sizes, each replayed from a
  captured CUDA graph (``cuda_graphs.py``).

ONNX files come from ``ray_jobs/export.py`` (``<version>/backends/``, each file's sha256
recorded next to the sha256 of the weights it was exported from, and checked on load);
when the artifact has none, the file is exported into a private temporary folder at load.
The setting ``auto`` picks, on the node that serves, the fastest back-end whose recorded
fidelity meets the goals on that node's CPU (``resolve_backend``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from stocktrend.data.sources import sha256_of

log = logging.getLogger(__name__)

BACKENDS = ("torch", "bf16", "torch-int8", "onnx", "onnx-int8")
GPU_BACKENDS = ("cuda",)  # need a GPU on the node: not in BACKENDS, which every node can run
SETTINGS = (*BACKENDS, *GPU_BACKENDS, "auto")  # `auto`: resolved on each serving node (resolve_backend)
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
EXPORT_DIR = "backends"
EXPORT_RECORD = "exports.json"
ONNX_OPSET = 17


class Outputs(NamedTuple):
    probs: np.ndarray  # (N, C)
    attention: np.ndarray  # (N, L)
    volatility: np.ndarray | None = None  # (N,) standardised log volatility
    feature_weights: np.ndarray | None = None  # (N, F)


class Backend(Protocol):
    name: str

    def __call__(self, x: np.ndarray) -> Outputs: ...


def output_names(model: nn.Module) -> list[str]:
    """The graph outputs of ``model`` (the ONNX file's names, in order: ``Outputs``' fields)."""
    return ["probs", "attention", *(["volatility"] if model.cfg.volatility_head else []),
            *(["feature_weights"] if model.cfg.family == "tft" else [])]


class _ProbsAndAttention(nn.Module):
    """What every back-end computes: softmax probabilities, the pooling weights and the
    network's optional outputs (``output_names``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.outputs(x)
        return (out.logits.softmax(dim=-1), out.attention,
                *(o for o in (out.volatility, out.feature_weights) if o is not None))


@contextlib.contextmanager
def mha_fastpath(enabled: bool):
    """The TransformerEncoder fast path inspects ``weight.device`` of its Linear layers,
    which dynamically quantized layers lack, and it cannot be traced to ONNX: both need
    it off. It is a process-wide switch, so restore it afterwards."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


class TorchBackend:
    def __init__(self, model: nn.Module, name: str = "torch", autocast_dtype: torch.dtype | None = None):
        self.name, self.net, self.dtype = name, _ProbsAndAttention(model).eval(), autocast_dtype

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> Outputs:
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype is not None):
            out = self.net(torch.from_numpy(x))
        return _outputs(output_names(self.net.model), [o.float().numpy() for o in out])


def _outputs(names: list[str], arrays: list[np.ndarray]) -> Outputs:
    return Outputs(**dict(zip(names, arrays, strict=True)))


class TorchInt8Backend(TorchBackend):
    def __init__(self, model: nn.Module):
        import copy

        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8
        )
        super().__init__(quantized, name="torch-int8")

    def __call__(self, x: np.ndarray) -> Outputs:
        with mha_fastpath(False):
            return super().__call__(x)


class OnnxBackend:
    def __init__(self, path: Path, name: str, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # ORT warns about every unused initializer otherwise
        self.name = name
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> Outputs:
        return _outputs(self.outputs, self.session.run(self.outputs, {"windows": np.ascontiguousarray(x, np.float32)}))


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is not there."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_has_vnni() -> bool:
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def exported_file(version_dir: Path, backend: str, weights_sha256: str) -> Path | None:
    """The verified exported file for ``backend``, or None when the artifact has none.

    Raises ValueError when a file is there but does not match its record or was exported
    from other weights: serving it would silently serve another model.
    """
    record_path = version_dir / EXPORT_DIR / EXPORT_RECORD
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    entry = record.get("files", {}).get(backend)
    if entry is None:
        return None
    path = version_dir / EXPORT_DIR / entry["file"]
    if record.get("weights_sha256") != weights_sha256:
        raise ValueError(f"{path}: exported from other weights than {version_dir}'s; rerun ray_jobs/export.py")
    if not path.is_file() or sha256_of(path) != entry["sha256"]:
        raise ValueError(f"{path}: missing or sha256 differs from {record_path} (tampered or corrupted)")
    return path


def make_backend(
    name: str, model: nn.Module, seq_len: int, n_features: int, threads: int,
    version_dir: Path | None = None, weights_sha256: str | None = None,
) -> Backend:
    if name not in (*BACKENDS, *GPU_BACKENDS):
        raise ValueError(f"unknown backend {name!r}; choose one of {list(BACKENDS + GPU_BACKENDS)}")
    if name == "cuda":
        from stocktrend.inference.cuda_graphs import GraphBackend

        return GraphBackend(model, seq_len, n_features)
    if name == "torch":
        return TorchBackend(model)
    if name == "bf16":
        return TorchBackend(model, name="bf16", autocast_dtype=torch.bfloat16)
    if name == "torch-int8":
        return TorchInt8Backend(model)
    path = exported_file(version_dir, name, weights_sha256) if version_dir is not None else None
    if path is not None:
        return OnnxBackend(path, name, threads)
    # No exported file: export now into a folder of our own, removed once ONNX Runtime's
    # session holds the graph (it does not read the file again).
    tmp = Path(tempfile.mkdtemp(prefix="stocktrend-onnx-"))
    try:
        log.info("no exported %s file in the artifact; exporting to %s", name, tmp)
        from stocktrend.inference.quantize import write_onnx_files

        files, _ = write_onnx_files(model, seq_len, n_features, tmp, int8=name == "onnx-int8")
        return OnnxBackend(files[name], name, threads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_backend(setting: str, version_dir: Path) -> tuple[str, str]:
    """The back-end to load for ``setting`` on this node, and why. ``auto``: the exported
    INT8 graph when its validation fidelity met the goals and, if it was quantized for VNNI
    (signed weights), this CPU has VNNI too (without it those kernels can saturate); else
    fp32 ONNX; on a node with a CUDA device, the ``cuda`` back-end."""
    if setting != "auto":
        return setting, f"{setting} asked for"
    if torch.cuda.is_available():
        return "cuda", (f"auto: this node has a CUDA device ({torch.cuda.get_device_name(0)}): padded batches "
                        "replayed from captured CUDA graphs")
    report_path = version_dir / EXPORT_DIR / "export_report.json"
    if not report_path.is_file():
        return "onnx", "auto: no exported INT8 graph with a fidelity report (ray_jobs/export.py writes one)"
    int8 = json.loads(report_path.read_text()).get("backends", {}).get("onnx-int8")
    if not int8:
        return "onnx", "auto: the export has no INT8 graph"
    margin = int8.get("margin_agreement")
    fidelity = (f"max |dp| {int8['max_abs_prob_diff']:.4f}, agreement beyond the margin "
                + ("n/a: no window beyond it" if margin is None else f"{margin:.4f}"))
    if not int8.get("meets_fidelity_goals"):
        return "onnx", f"auto: INT8 missed the fidelity goals on validation ({fidelity})"
    if int8.get("quantized_for_vnni") and not cpu_has_vnni():
        return "onnx", "auto: the INT8 graph has signed weights for VNNI and this CPU has no VNNI"
    return "onnx-int8", f"auto: INT8 meets the fidelity goals ({fidelity}) on this CPU"
