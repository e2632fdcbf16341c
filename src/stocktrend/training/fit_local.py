"""fit_local: one training run with plain Lightning on this machine (no Ray).

The same pieces (TrendDataModule, TrendClassifier, build_trainer) are meant to be
reused inside a Ray Train worker; only the Trainer's strategy/plugins differ there. How
the run uses its device (batch, precision, data placement) is a DevicePlan (device.py);
a fit that runs out of device memory starts again at half the micro-batch.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from stocktrend.config_io import config_to_dict, with_overrides
from stocktrend.models.config import ModelConfig
from stocktrend.training.callbacks import best_checkpoint_callback, build_callbacks, build_trainer
from stocktrend.training.config import TrainConfig, selection_mode
from stocktrend.training.datamodule import TrendDataModule
from stocktrend.training.device import DevicePlan, fit_with_oom_fallback, plan_for, resolve_device_type
from stocktrend.training.module import TrendClassifier

logger = logging.getLogger(__name__)


def _check_shapes(model_cfg: ModelConfig, dm: TrendDataModule) -> None:
    got = (dm.n_features, dm.seq_len, dm.n_classes)
    want = (model_cfg.n_features, model_cfg.seq_len, model_cfg.n_classes)
    if got != want:
        raise ValueError(
            f"model config (n_features, seq_len, n_classes)={want} does not match the dataset's {got}; "
            "build it with model_config_from_metadata"
        )


def fit_local(
    dataset_dir: str | Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    max_epochs: int | None = None,
    progress: bool = True,
    plan: DevicePlan | None = None,
    extra_callbacks: list[pl.Callback] | None = None,
    **trainer_kw: Any,
) -> dict[str, Any]:
    """Train on the dataset's train split, select on val; never touches test.

    Returns {"best_checkpoint", "best_score", "best_epoch", "history", "val_metrics",
    "device_plan"} where val_metrics are the validation metrics of the selected epoch. The
    same dict, with both configs, is written to ``out_dir/fit_summary.json`` as a run artifact.
    ``plan``: how to use the device; by default ``plan_for`` the device the ``accelerator``
    keyword lands on (the CPU's plan is the config as written). ``extra_callbacks`` run
    beside the checkpoint/early-stopping ones (a benchmark's clock).
    """
    if max_epochs is not None:
        train_cfg = with_overrides(train_cfg, {"max_epochs": max_epochs})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plan is None:
        plan = plan_for(resolve_device_type(trainer_kw.get("accelerator", "auto")), train_cfg)
    logger.info("device plan: micro-batch %d x %d, %s; %s", plan.micro_batch, plan.accumulate, plan.precision,
                plan.reason)

    first = plan

    def run(p: DevicePlan) -> tuple[TrendClassifier, list[pl.Callback]]:
        if p is not first and (out_dir / "checkpoints").exists():
            # A refit after running out of memory: the failed attempt's checkpoints would
            # otherwise compete with this run's for "best".
            shutil.rmtree(out_dir / "checkpoints")
        dm = TrendDataModule(dataset_dir, p.micro_batch, train_cfg.num_workers, train_cfg.seed,
                             device_resident=p.device_data, epoch_windows=train_cfg.epoch_windows,
                             batches=train_cfg.batches, epoch_dates=train_cfg.epoch_dates)
        _check_shapes(model_cfg, dm)
        pl.seed_everything(train_cfg.seed, workers=True)  # before the model: weight init is seeded too
        module = TrendClassifier(model_cfg, train_cfg, dm.class_counts_train(), dm.train_batches_per_epoch(), plan=p)
        callbacks = build_callbacks(train_cfg, out_dir / "checkpoints", with_progress=progress)
        trainer = build_trainer(train_cfg, out_dir, callbacks=[*callbacks, *(extra_callbacks or [])],
                                with_progress=progress, plan=p, **trainer_kw)
        trainer.fit(module, datamodule=dm)
        return module, callbacks

    (module, callbacks), plan = fit_with_oom_fallback(run, plan)

    best = best_checkpoint_callback(callbacks)
    metric = train_cfg.selection_metric
    scored = [h for h in module.history if metric in h]
    best_entry: dict[str, Any] = {}
    if scored:  # first epoch with the best score, as ModelCheckpoint keeps the first of ties
        pick = min if selection_mode(metric) == "min" else max
        best_entry = pick(scored, key=lambda h: h[metric])
    result = {
        "best_checkpoint": best.best_model_path if best else "",
        "best_score": float(best.best_model_score) if best and best.best_model_score is not None else float("nan"),
        "best_epoch": best_entry.get("epoch"),
        "selection_metric": metric,
        "history": module.history,
        "val_metrics": {k: v for k, v in best_entry.items() if k.startswith("val_")},
        "model_config": config_to_dict(model_cfg),
        "train_config": config_to_dict(train_cfg),
        "device_plan": plan.as_dict(),
    }
    (out_dir / "fit_summary.json").write_text(json.dumps(result, indent=2))
    logger.info(
        "best %s %.4f at epoch %s: %s", metric, result["best_score"], result["best_epoch"], result["best_checkpoint"]
    )
    return result
