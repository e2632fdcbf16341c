"""The ``cuda`` back-end: requests padded to a few fixed batch sizes, one captured CUDA graph each.

Why: on a GPU the network is bound by kernel launches and Python, not by the card (one H100:
eager batch-1 inference 6.1 ms, the same network replayed from a captured CUDA graph 0.81 ms;
see docs/BENCHMARKS.md). A graph replays fixed shapes only, so a request of n windows runs as
chunks of the largest bucket and a last chunk padded with zeros up to the smallest bucket that
holds it; the padding rows are computed and dropped. In eval mode every row is computed on
its own (BatchNorm uses its running statistics, attention stays within a window), so padding
changes no answer: the CPU tests check exactly that with capture off.

Each bucket's graph is captured on first use, after a warm-up on a side stream (PyTorch's
recipe). A capture that fails (an operator that cannot be captured, a fast path that syncs with
the host) is logged with its reason, kept in ``capture_misses`` and that bucket runs eagerly:
a miss costs speed, never an answer.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

from stocktrend.inference.backends import Outputs, _ProbsAndAttention, output_names

log = logging.getLogger(__name__)
BUCKETS = (1, 8, 32, 128, 512)


def bucket_for(n: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket holding ``n`` rows (the largest when none does)."""
    return next((b for b in buckets if b >= n), buckets[-1])


def chunks(n: int, buckets: tuple[int, ...] = BUCKETS) -> list[tuple[int, int, int]]:
    """(start, stop, bucket) covering rows 0..n: full chunks of the largest bucket, then the rest
    in the smallest bucket that holds it."""
    out, start, top = [], 0, buckets[-1]
    while n - start > top:
        out.append((start, start + top, top))
        start += top
    if n > start:
        out.append((start, n, bucket_for(n - start, buckets)))
    return out


class GraphBackend:
    """``device``: "cuda" in service; "cpu" with ``capture=False`` runs the same padding and
    chunking eagerly (the tests' way of checking them without a GPU)."""

    def __init__(self, model: nn.Module, seq_len: int, n_features: int, device: str = "cuda",
                 buckets: tuple[int, ...] = BUCKETS, capture: bool | None = None):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("the cuda back-end needs an NVIDIA GPU, and this node has none "
                             "(torch.cuda.is_available() is False); use onnx or auto")
        self.name = "cuda" if self.device.type == "cuda" else f"padded-{self.device.type}"
        self.seq_len, self.n_features, self.buckets = seq_len, n_features, tuple(sorted(buckets))
        self.capture = self.device.type == "cuda" if capture is None else capture
        # A copy: the Predictor's own network stays on the CPU (ONNX export, parity checks).
        self.net = _ProbsAndAttention(copy.deepcopy(model)).to(self.device).eval()
        self.names = output_names(model)
        self.graphs: dict[int, tuple] = {}  # bucket -> (graph, static input, static outputs)
        self.capture_misses: dict[int, str] = {}

    def _capture(self, bucket: int) -> tuple | None:
        static = torch.zeros(bucket, self.seq_len, self.n_features, device=self.device)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):  # warm-up: lazy initialisation (cuDNN plans) stays out of the graph
                    self.net(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                outs = self.net(static)
        except Exception as err:  # noqa: BLE001 - any failure to capture falls back to eager
            self.capture_misses[bucket] = f"{type(err).__name__}: {err}"
            log.warning("CUDA graph capture at batch %d failed, running it eagerly: %s", bucket, err)
            return None
        return graph, static, outs

    def _run(self, x: torch.Tensor, bucket: int) -> tuple[torch.Tensor, ...]:
        if self.capture and bucket not in self.capture_misses:
            if bucket not in self.graphs:
                captured = self._capture(bucket)
                if captured is not None:
                    self.graphs[bucket] = captured
            if bucket in self.graphs:
                graph, static, outs = self.graphs[bucket]
                static.copy_(x)
                graph.replay()
                return outs
        with torch.inference_mode():
            return self.net(x)

    def __call__(self, x: np.ndarray) -> Outputs:
        parts: list[list[np.ndarray]] = [[] for _ in self.names]
        for start, stop, bucket in chunks(len(x), self.buckets):
            padded = torch.zeros(bucket, self.seq_len, self.n_features, device=self.device)
            padded[: stop - start] = torch.from_numpy(np.ascontiguousarray(x[start:stop], np.float32))
            for k, out in enumerate(self._run(padded, bucket)):
                parts[k].append(out[: stop - start].float().cpu().numpy())  # copies out of the static buffer
        return Outputs(**{n: np.concatenate(p) for n, p in zip(self.names, parts, strict=True)})
