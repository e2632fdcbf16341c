"""Callbacks and Trainer factory, shared by local runs and (later) Ray Train workers.

Always ``import lightning.pytorch as pl`` - never ``pytorch_lightning``: mixing the
two packages makes Ray's RayDDPStrategy/RayLightningEnvironment fail isinstance checks.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.loggers import TensorBoardLogger

from stocktrend.training.config import TrainConfig, selection_mode, warmup_epochs
from stocktrend.training.device import DevicePlan, apply_backend_settings


class EarlyStoppingAfterWarmup(EarlyStopping):
    """Early stopping that starts counting when the warm-up ends: the epochs before
    ``start_epoch`` neither set the best score nor use up patience (a run whose best epoch
    so far is its first gets ``patience`` epochs past the warm-up, not ``patience`` from the
    start)."""

    def __init__(self, start_epoch: int, **kw: Any):
        super().__init__(**kw)
        self.start_epoch = start_epoch

    def _should_skip_check(self, trainer: pl.Trainer) -> bool:
        # Lightning 2.6 asks this before every check (validation end or train epoch end).
        return super()._should_skip_check(trainer) or trainer.current_epoch < self.start_epoch


def early_stopping(train_cfg: TrainConfig) -> EarlyStopping:
    """The recipe's early stopping on its selection metric (after the warm-up when it asks)."""
    metric = train_cfg.selection_metric
    return EarlyStoppingAfterWarmup(warmup_epochs(train_cfg), monitor=metric, mode=selection_mode(metric),
                                    patience=train_cfg.early_stopping_patience, check_finite=True)


def best_checkpoint_callback(callbacks: list[Callback]) -> ModelCheckpoint | None:
    """The ModelCheckpoint that tracks the selection metric (not the milestone one)."""
    return next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)


def build_callbacks(
    train_cfg: TrainConfig, checkpoint_dir: str | Path, with_progress: bool = True, with_lr_monitor: bool = True
) -> list[Callback]:
    """Best checkpoint + early stopping on one selection metric, milestones, LR monitor, progress bar.

    ``with_lr_monitor`` must be False when the Trainer has no logger (Lightning refuses it).
    """
    metric, mode = train_cfg.selection_metric, selection_mode(train_cfg.selection_metric)
    checkpoint_dir = Path(checkpoint_dir)
    callbacks: list[Callback] = [
        # One metric decides both the kept model and when to stop, so they cannot disagree
        # (the reference stopped on val_loss but kept the best val_acc).
        ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename="best-e{epoch:03d}-" + metric + "_{" + metric + ":.4f}",
            auto_insert_metric_name=False,  # no '=' in file names
            monitor=metric,
            mode=mode,
            save_top_k=1,
            save_last=True,  # for resuming
        ),
        ModelCheckpoint(
            dirpath=checkpoint_dir / "milestones",
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            every_n_epochs=train_cfg.milestone_every,
            save_top_k=-1,
            monitor=None,
        ),
        early_stopping(train_cfg),
    ]
    if with_lr_monitor:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if with_progress and importlib.util.find_spec("rich") is not None:
        callbacks.append(RichProgressBar())
    return callbacks


def build_trainer(
    train_cfg: TrainConfig,
    out_dir: str | Path,
    accelerator: str = "auto",
    devices: Any = "auto",
    callbacks: list[Callback] | None = None,
    logger: Any = None,
    with_progress: bool = True,
    plan: DevicePlan | None = None,
    **kw: Any,
) -> pl.Trainer:
    """A Trainer configured from ``train_cfg``; extra keywords go to ``pl.Trainer``.

    accelerator="auto" lets Lightning pick CUDA, then MPS (Apple), then CPU.
    ``logger=None`` means a TensorBoardLogger under out_dir; pass False for none.
    ``plan`` (training/device.py): its precision and accumulation replace the config's, and
    its process-wide settings (TF32) are applied; None runs the config as written.
    """
    out_dir = Path(out_dir)
    precision, accumulate = train_cfg.precision, train_cfg.accumulate_grad_batches
    if plan is not None:
        precision, accumulate = plan.precision, plan.accumulate
        apply_backend_settings(plan)
    # Seeds python/numpy/torch and, with workers=True, each DataLoader worker distinctly.
    pl.seed_everything(train_cfg.seed, workers=True)
    if logger is None:
        logger = TensorBoardLogger(save_dir=str(out_dir), name="tensorboard")
    if callbacks is None:
        callbacks = build_callbacks(
            train_cfg, out_dir / "checkpoints", with_progress=with_progress, with_lr_monitor=logger is not False
        )
    kw.setdefault("max_epochs", train_cfg.max_epochs)
    if train_cfg.epoch_windows is not None:  # an epoch's budget, in micro-batches of this run
        micro = plan.micro_batch if plan is not None else train_cfg.batch_size
        kw.setdefault("limit_train_batches", max(1, math.ceil(train_cfg.epoch_windows / micro)))
    kw.setdefault("log_every_n_steps", 10)
    return pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        precision=precision,
        gradient_clip_val=train_cfg.gradient_clip_val or None,
        accumulate_grad_batches=accumulate,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(out_dir),
        enable_progress_bar=with_progress,
        **kw,
    )
