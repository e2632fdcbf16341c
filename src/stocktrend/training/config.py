"""TrainConfig: the training recipe (EXECUTIVE_SUMMARY.md section 3), with its bugs fixed.

Differences from the reference, on purpose (shared/notes/seed-audit.md):
- the OneCycle schedule spans the optimizer steps actually taken (accumulation aware);
- class weights default to "auto" (inverse frequency of the labels the loss sees),
  not the hard-coded [1.15, 0.87] that double-corrects once classes are balanced;
- the best checkpoint and early stopping follow one selection metric, by default the
  unweighted, unsmoothed validation cross-entropy, instead of val_acc / val_loss.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from stocktrend.config_io import STRICT

SelectionMetric = Literal["val_ce", "val_auroc"]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


@pydantic.dataclasses.dataclass(config=STRICT)
class TrainConfig:
    batch_size: PositiveInt = 16
    accumulate_grad_batches: PositiveInt = 4  # effective batch 64
    max_epochs: PositiveInt = 150

    # AdamW. With OneCycleLR the cycle starts at ``lr`` (div_factor = max_lr / lr),
    # peaks at ``max_lr`` after pct_start of the steps, then anneals to lr / 1e4.
    lr: PositiveFloat = 2e-4
    weight_decay: NonNegativeFloat = 5e-3
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    max_lr: PositiveFloat = 1e-3
    pct_start: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3

    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    # "auto": inverse class frequency of the training labels (neutral when balanced);
    # "none": unweighted; a list: used as given, one weight per class.
    class_weights: Literal["auto", "none"] | list[PositiveFloat] = "auto"
    gradient_clip_val: NonNegativeFloat | None = 1.0  # None or 0 disables clipping

    # Multi-task (a model with a volatility head, from a dataset with the volatility
    # target): loss = cross-entropy + aux_weight * MSE of the standardised log volatility.
    # The selection metric stays a direction metric; 0 trains no volatility head.
    aux_weight: NonNegativeFloat = 1.0

    early_stopping_patience: PositiveInt = 15  # validation epochs without improvement
    selection_metric: SelectionMetric = "val_ce"
    milestone_every: PositiveInt = 10  # keep a checkpoint every N epochs

    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    # On a GPU (CUDA or MPS): run the effective batch (batch_size x accumulate_grad_batches) as
    # one micro-batch, stepping down by halves on out-of-memory (training/device.py). False
    # keeps the accumulation there too. The CPU always runs the config as written.
    gpu_single_step: bool = True
    seed: int = 42
    num_workers: NonNegativeInt = 0  # DataLoader worker processes

    @pydantic.model_validator(mode="after")
    def _lr_below_peak(self) -> TrainConfig:
        if self.max_lr < self.lr:
            raise ValueError(f"max_lr={self.max_lr} must be >= lr={self.lr} (lr is where the cycle starts)")
        return self


def selection_mode(metric: str) -> Literal["min", "max"]:
    """'min' for losses, 'max' for scores; used by ModelCheckpoint and EarlyStopping alike."""
    modes = {"val_ce": "min", "val_loss": "min", "val_auroc": "max", "val_acc": "max", "val_mcc": "max"}
    if metric not in modes:
        raise ValueError(f"no selection mode known for metric {metric!r}; known: {sorted(modes)}")
    return modes[metric]  # type: ignore[return-value]
