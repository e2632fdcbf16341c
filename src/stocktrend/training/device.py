"""How a run uses its device: the DevicePlan, chosen per device type with its reason, and
what to do when the device runs out of memory.

Why: on a GPU the recipe is bound by kernel launches and Python, not by the card. One H100
(docs/BENCHMARKS.md, GPU section), a bare loop of AdamW, cross-entropy and clipping on the v2
network: batch 16/64/512 ran 640/2,186/18,020 samples/s in fp32 and 508/1,796/15,091 with bf16
autocast (slower: the extra casts are more launches); plain Lightning at 16 x 4 accumulated
ran 432 samples/s. So on CUDA the plan keeps fp32 (TF32 matmuls allowed), runs the effective
batch as one step, keeps the data on the card, uses the fused AdamW and keeps metrics on the
card until the epoch ends. On the CPU the plan is exactly the config: nothing changes there.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch

from stocktrend.training.config import TrainConfig

logger = logging.getLogger(__name__)

DeviceType = Literal["cpu", "cuda", "mps"]
T = TypeVar("T")

MEASURED_PRECISION = (
    "fp32 with TF32 matmuls: measured faster than bf16 autocast on an H100 (bare v2 loop at batch 16/64/512: "
    "fp32 640/2,186/18,020 samples/s, bf16 508/1,796/15,091; the step is launch-bound, and autocast adds casts)"
)
# The whole Lightning step (hooks, closure, OneCycle, logging) runs eagerly; bench/gpu_check.py
# measures what capturing the bare step would give (training/graph_step.py).
STEP_NOT_CAPTURED = ("training step not captured: Lightning's fit loop (hooks, closure, LR scheduler, logging) runs "
                     "eagerly, and torch.compile breaks its graph at nn.LSTM; bench/gpu_check.py measures the bare step's "
                     "CUDA-graph capture")


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """What a run does on its device. ``micro_batch`` x ``accumulate`` is the effective batch."""

    device_type: DeviceType
    precision: str  # Lightning's precision string
    micro_batch: int  # the batch one forward/backward sees
    accumulate: int  # micro-batches per optimizer step
    fused_optimizer: bool  # AdamW(fused=True)
    device_data: bool  # train/val tensors live on the device; batches are indexed there
    deferred_metrics: bool  # epoch metrics gathered on the device, updated at the epoch's end (no per-step sync)
    matmul_precision: str | None  # torch.set_float32_matmul_precision; None leaves PyTorch's default
    reason: str

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.accumulate

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "effective_batch": self.effective_batch}


def resolve_device_type(accelerator: str = "auto") -> DeviceType:
    """The device a Lightning ``accelerator`` string lands on here: "auto" and "gpu" take CUDA,
    then Apple's MPS, then (auto only) the CPU, as Lightning does."""
    acc = str(accelerator).lower()
    if acc == "cpu":
        return "cpu"
    if acc in ("cuda", "mps"):
        return acc  # type: ignore[return-value]
    if acc not in ("auto", "gpu"):
        raise ValueError(f"accelerator {accelerator!r}: the training plan knows cpu, cuda, mps, gpu and auto")
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    if acc == "gpu":
        raise ValueError("accelerator 'gpu' asked for, but this machine has neither CUDA nor MPS")
    return "cpu"


def plan_for(device_type: str, train_cfg: TrainConfig) -> DevicePlan:
    """The plan for a device type ("cpu", "cuda", "mps"); the config's own precision always wins."""
    if device_type == "cpu":
        return DevicePlan("cpu", train_cfg.precision, train_cfg.batch_size, train_cfg.accumulate_grad_batches,
                          fused_optimizer=False, device_data=False, deferred_metrics=False, matmul_precision=None,
                          reason="cpu: the config as written (batch, accumulation, precision, DataLoader)")
    if device_type not in ("cuda", "mps"):
        raise ValueError(f"no training plan for device type {device_type!r}; known: cpu, cuda, mps")
    cuda = device_type == "cuda"
    parts = [device_type + ":"]
    if train_cfg.precision == "32-true":
        parts.append(MEASURED_PRECISION if cuda else "fp32 (bf16 autocast on MPS is not measured here)")
    else:
        parts.append(f"precision {train_cfg.precision} because the config says so (the measured choice on an H100 is "
                     f"fp32: bf16 autocast was slower there)")
    effective = train_cfg.batch_size * train_cfg.accumulate_grad_batches
    if train_cfg.gpu_single_step and train_cfg.batches == "dates":
        micro, accumulate = train_cfg.batch_size, train_cfg.accumulate_grad_batches
        parts.append(f"{micro} x {accumulate} accumulated: a date batch is one cross-section of at most batch_size "
                     "windows, on every device")
    elif train_cfg.gpu_single_step:
        micro, accumulate = effective, 1
        if train_cfg.accumulate_grad_batches > 1:
            parts.append(f"the effective batch {effective} ({train_cfg.batch_size} x {train_cfg.accumulate_grad_batches}) "
                         f"as one step: accumulation was a laptop's memory workaround and costs 3-4x in launches")
    else:
        micro, accumulate = train_cfg.batch_size, train_cfg.accumulate_grad_batches
        parts.append(f"{micro} x {accumulate} accumulated, as the config keeps (gpu_single_step false)")
    parts.append("fused AdamW" if cuda else "plain AdamW")
    parts.append("data on the device, metrics gathered there until the epoch ends (no per-step host sync)")
    if cuda:
        parts.append(STEP_NOT_CAPTURED)
    return DevicePlan(device_type, train_cfg.precision, micro, accumulate,  # type: ignore[arg-type]
                      fused_optimizer=cuda, device_data=True, deferred_metrics=True,
                      matmul_precision="high" if cuda else None, reason="; ".join(parts))


def apply_backend_settings(plan: DevicePlan) -> None:
    """Process-wide settings the plan asks for (the TF32 matmul switch)."""
    if plan.matmul_precision and torch.get_float32_matmul_precision() != plan.matmul_precision:
        torch.set_float32_matmul_precision(plan.matmul_precision)
        logger.info("float32 matmul precision set to %r (TF32 on tensor cores)", plan.matmul_precision)


# -- out of memory -------------------------------------------------------------------


class DeviceMemoryFloorError(RuntimeError):
    """Out of device memory at the smallest micro-batch the fallback may take."""


def plan_after_oom(plan: DevicePlan, min_micro_batch: int = 1) -> DevicePlan:
    """The plan to refit with after running out of memory: the largest micro-batch that divides
    the effective batch and is at most half the current one, accumulated to the same effective
    batch (the recipe's optimisation stays the same, only its memory changes).

    Raises DeviceMemoryFloorError when that micro-batch would fall below ``min_micro_batch``.
    """
    effective = plan.effective_batch
    half = plan.micro_batch // 2
    micro = max((d for d in range(1, half + 1) if effective % d == 0), default=0)
    if micro < max(1, min_micro_batch):
        raise DeviceMemoryFloorError(
            f"out of {plan.device_type} memory at micro-batch {plan.micro_batch} x {plan.accumulate} (effective "
            f"{effective}), and the fallback may not go below micro-batch {max(1, min_micro_batch)}: give the run more "
            f"device memory (a larger GPU fraction) or a smaller model")
    return dataclasses.replace(
        plan, micro_batch=micro, accumulate=effective // micro,
        reason=f"{plan.reason}; out of memory at micro-batch {plan.micro_batch}, so {micro} x {effective // micro}")


def free_device_memory() -> None:
    """Drop what a failed fit left: its objects (gc) and the allocator's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fit_with_oom_fallback(run: Callable[[DevicePlan], T], plan: DevicePlan, min_micro_batch: int = 1,
                          world_size: int = 1) -> tuple[T, DevicePlan]:
    """``run(plan)`` builds a fresh data module, model and Trainer and fits; on
    ``torch.cuda.OutOfMemoryError`` (or MPS's out-of-memory RuntimeError) the memory is freed
    and ``run`` starts again from scratch with ``plan_after_oom(plan)``. Returns (run's result, the plan that fitted).

    Only a single process steps down: under DDP the other ranks of a group would wait in a
    collective for the failed one, so with ``world_size`` > 1 the error is raised as it is.
    """
    while True:
        try:
            return run(plan), plan
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
            # MPS reports its out-of-memory as a plain RuntimeError ("MPS backend out of memory").
            is_oom = isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()
            if world_size > 1 or not is_oom:
                raise
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            smaller = plan_after_oom(plan, min_micro_batch)  # raises past the floor, chained to err
        # Outside the except block: the traceback, which holds the failed Trainer and model
        # (and their device tensors), is released before the memory is freed.
        free_device_memory()
        logger.warning("out of device memory at micro-batch %d x %d (%s); refitting from scratch at %d x %d",
                       plan.micro_batch, plan.accumulate, first_line, smaller.micro_batch, smaller.accumulate)
        plan = smaller


# -- packed trials ---------------------------------------------------------------------


def bound_gpu_memory(fraction: float, device: int | None = None, reserve: float = 0.05) -> str:
    """Bound this process's CUDA caching allocator to its ``fraction`` of the card, so trials
    packed on one GPU cannot starve each other; returns what was done, in words.

    ``reserve``: the share of the fraction left out of the bound, for what the allocator does not
    count (the CUDA context, cuDNN/cuBLAS workspaces), so packed trials' totals stay under 1.
    A fraction of 1 or more (a whole card) and a machine without CUDA are left unbounded.
    """
    if not 0 < fraction:
        raise ValueError(f"GPU memory fraction must be > 0, got {fraction}")
    if not torch.cuda.is_available():
        return "not bounded: no CUDA device visible to this process"
    if fraction >= 1:
        return "not bounded: the process holds a whole GPU"
    bound = fraction * (1 - reserve)
    index = torch.cuda.current_device() if device is None else device
    torch.cuda.set_per_process_memory_fraction(bound, index)
    total = torch.cuda.get_device_properties(index).total_memory
    done = (f"bounded to {bound:.3f} of cuda:{index} ({torch.cuda.get_device_name(index)}, "
            f"{bound * total / 2**30:.1f} of {total / 2**30:.1f} GiB) for a {fraction:g} GPU share")
    logger.info("GPU memory %s", done)
    return done
