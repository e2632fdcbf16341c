"""The bare training step (forward, loss, backward, clipping, AdamW) and its capture in one
CUDA graph, for measuring what capture would give; Lightning's fit does not use it.

Why only measured: a captured step replays fixed tensors, so the whole Lightning step
(hooks, closure, OneCycle's Python-side LR, logging) would have to move inside it, and
torch.compile (which would capture for us, mode="reduce-overhead") breaks its graph at
nn.LSTM. bench/gpu_check.py times the eager and the captured bare step side by side, and
records a miss with its reason. The capture follows PyTorch's whole-network recipe (and
inference/cuda_graphs.py): warm-up on a side stream, then capture; AdamW is built
``capturable`` with a tensor learning rate, which LR schedulers update in place.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bare_step(model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer, clip: float | None) -> Step:
    """One eager optimizer step on a batch (x, y); returns the loss (not read back)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        return loss

    return step


@dataclasses.dataclass
class Capture:
    """``step`` replays the captured graph on a new batch of the captured shape; None on a miss."""

    captured: bool
    reason: str
    step: Step | None = None
    optimizer: torch.optim.Optimizer | None = None


def capturable_adamw(model: nn.Module, lr: float, **kw: Any) -> torch.optim.Optimizer:
    """AdamW whose step can be captured: state and LR on the device. Fused where this PyTorch
    accepts fused with capturable, else the multi-tensor form."""
    device = next(model.parameters()).device
    lr_t = torch.tensor(lr, device=device)
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr_t, capturable=True, fused=True, **kw)
    except (RuntimeError, ValueError) as err:
        log.info("fused capturable AdamW refused (%s); using the multi-tensor one", err)
        return torch.optim.AdamW(model.parameters(), lr=lr_t, capturable=True, **kw)


def capture_train_step(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, lr: float = 1e-3,
                       clip: float | None = 1.0, warmup: int = 3, **adamw_kw: Any) -> Capture:
    """Capture one whole training step of ``model`` (in train mode) at the shape of (x, y).

    Warm-up steps (on a side stream, so lazy initialisation such as cuDNN plans stays out of
    the graph) train the model on (x, y). Any failure is a miss: its reason is returned and
    logged, never raised; the model should then be rebuilt before further use.
    """
    if x.device.type != "cuda":
        return Capture(False, f"not captured: CUDA graphs need a CUDA device (this step runs on {x.device.type})")
    try:
        optimizer = capturable_adamw(model, lr, **adamw_kw)
        static_x, static_y = x.clone(), y.clone()
        step = bare_step(model, loss_fn, optimizer, clip)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)  # grads are allocated inside the graph's pool
        with torch.cuda.graph(graph):
            static_loss = loss_fn(model(static_x), static_y)
            static_loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
            optimizer.step()
    except Exception as err:  # noqa: BLE001 - a miss is reported with its reason, not raised
        first = (str(err).strip().splitlines() or [""])[0][:300]
        log.warning("training step capture failed: %s: %s", type(err).__name__, first)
        return Capture(False, f"not captured: {type(err).__name__}: {first}")

    def replay(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()
        return static_loss

    return Capture(True, f"captured: forward, backward, clipping and AdamW at batch {len(x)} in one CUDA graph",
                   replay, optimizer)


def explain_compile(fn: Callable, *args: Any) -> dict[str, Any]:
    """What torch.compile's tracer makes of ``fn(*args)``: graphs, graph breaks and their
    reasons (torch._dynamo.explain; traces only, compiles nothing)."""
    try:
        import torch._dynamo as dynamo

        dynamo.reset()
        out = dynamo.explain(fn)(*args)
        reasons = []
        for br in out.break_reasons:
            text = str(getattr(br, "reason", br)).strip().splitlines()
            reasons.append(text[0][:300] if text else "")
        return {"graphs": int(out.graph_count), "graph_breaks": int(out.graph_break_count),
                "break_reasons": sorted(set(reasons))[:10]}
    except Exception as err:  # noqa: BLE001 - a report, not a requirement
        return {"error": f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"}
    finally:
        try:
            import torch._dynamo as dynamo

            dynamo.reset()
        except Exception:  # noqa: BLE001
            pass
