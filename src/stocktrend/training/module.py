"""TrendClassifier: the LightningModule wrapping TrendNet, its loss, optimizer and metrics.

Hyperparameters are saved as plain dicts/lists, so ``TrendClassifier.load_from_checkpoint``
rebuilds the exact network (and loss weights) from the checkpoint alone, and the file
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchmetrics as tm
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics import classification as tmc

from stocktrend.config_io import config_from_dict, config_to_dict
from stocktrend.models.config import ModelConfig
from stocktrend.models.network import build_network
from stocktrend.training.config import TrainConfig
from stocktrend.training.device import DevicePlan
from stocktrend.training.loss import build_loss, rank_ic_loss

logger = logging.getLogger(__name__)
# Epoch metrics are logged as plain floats computed by torchmetrics, whose compute()
# already reduces across DDP processes; Lightning cannot know that and warns per key.
warnings.filterwarnings("ignore", message=r".*sync_dist=True.*", category=UserWarning)
# The volatility head's Spearman correlation keeps an epoch of forecasts (a few MB at most).
warnings.filterwarnings("ignore", message=r".*SpearmanCorrcoef.*will save all targets", category=UserWarning)

FINAL_DIV_FACTOR = 1e4  # OneCycleLR default: the cycle ends at lr / 1e4
PROGRESS_BAR_KEYS = {"val_ce", "val_acc", "train_loss"}


class StageMetrics(nn.Module):
    """Epoch metrics of one stage (train or val); compute() returns plain Python values.

    ``deferred``: each step only keeps its (detached) outputs on the device, and the metrics
    are updated once, from all of them, when the epoch's values are asked for. Why: torchmetrics'
    updates read values back to the host (input checks, NaN checks, probability-or-logit
    tests), which stalls a GPU once per metric per step; an epoch of outputs is a few hundred kB.
    """

    def __init__(self, n_classes: int, volatility: bool = False, deferred: bool = False):
        super().__init__()
        self.binary = n_classes == 2
        self.deferred = deferred
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]] = []
        # The volatility head's scores, on the standardised target: MSE, R^2 (against the
        # split's own mean) and Spearman's rank correlation.
        self.vol = MetricCollection({"vol_mse": tm.MeanSquaredError(), "vol_r2": tm.R2Score(),
                                     "vol_rank_corr": tm.SpearmanCorrCoef()}) if volatility else None
        if self.binary:  # fed P(class 1); F1/precision-style scores are of class 1
            self.scalar = MetricCollection({
                "acc": tmc.BinaryAccuracy(), "f1": tmc.BinaryF1Score(),
                "auroc": tmc.BinaryAUROC(), "mcc": tmc.BinaryMatthewsCorrCoef(),
            })
        else:  # fed (B, C) probabilities; acc is plain (micro) accuracy, F1 macro
            self.scalar = MetricCollection({
                "acc": tmc.MulticlassAccuracy(n_classes, average="micro"),
                "f1": tmc.MulticlassF1Score(n_classes, average="macro"),
                "auroc": tmc.MulticlassAUROC(n_classes),
                "mcc": tmc.MulticlassMatthewsCorrCoef(n_classes),
            })
        # Per-class scores use the multiclass form even for 2 classes: the binary form
        # only reports the positive class.
        self.per_class = MetricCollection({
            "precision": tmc.MulticlassPrecision(n_classes, average=None),
            "recall": tmc.MulticlassRecall(n_classes, average=None),
            "confmat": tmc.MulticlassConfusionMatrix(n_classes),
        })
        self.loss = MeanMetric()  # the training objective (weighted, smoothed)
        self.ce = MeanMetric()  # plain cross-entropy: unweighted, unsmoothed

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor,
               vol: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """``vol``: (forecast, target) of the volatility head, (B,) each."""
        vol = None if vol is None else (vol[0].detach(), vol[1])
        if self.deferred:
            self._pending.append((logits.detach(), target, loss.detach(), vol))
            return
        self._update(logits, target, loss.detach(), target.numel(), vol)

    def _update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor, weight: float | torch.Tensor,
                vol: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """``loss`` and ``weight``: one per batch, a batch's mean loss weighted by its size."""
        if self.vol is not None and vol is not None:
            self.vol.update(vol[0].float(), vol[1].float())
        logits = logits.detach().float()  # (B, C)
        probs = logits.softmax(dim=-1)  # (B, C)
        self.scalar.update(probs[:, 1] if self.binary else probs, target)
        self.per_class.update(probs, target)
        self.loss.update(loss, weight=weight)
        self.ce.update(F.cross_entropy(logits, target, reduction="none"))  # (B,) exact mean

    def _flush(self) -> None:
        """The deferred steps' outputs, concatenated, into the metrics in one update."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        logits = torch.cat([p[0] for p in pending])  # (N, C)
        target = torch.cat([p[1] for p in pending])  # (N,)
        losses = torch.stack([p[2].reshape(()).float() for p in pending])  # (steps,)
        weights = torch.tensor([float(p[1].numel()) for p in pending], device=losses.device)  # (steps,)
        vols = [p[3] for p in pending if p[3] is not None]
        vol = (torch.cat([v[0] for v in vols]), torch.cat([v[1] for v in vols])) if vols else None
        self._update(logits, target, losses, weights, vol)

    def compute(self) -> dict[str, Any]:
        self._flush()
        out: dict[str, Any] = {k: float(v) for k, v in self.scalar.compute().items()}
        out.update({k: v.tolist() for k, v in self.per_class.compute().items()})
        out["loss"] = float(self.loss.compute())
        out["ce"] = float(self.ce.compute())
        if self.vol is not None:
            out.update({k: float(v) for k, v in self.vol.compute().items()})
        return out

    def reset(self) -> None:
        self._pending = []
        for m in (self.scalar, self.per_class, self.loss, self.ce, self.vol):
            if m is not None:
                m.reset()


def _as_config(cls: type, value: Any) -> Any:
    return value if isinstance(value, cls) else config_from_dict(cls, dict(value), source=cls.__name__)


class TrendClassifier(pl.LightningModule):
    def __init__(
        self,
        model_cfg: ModelConfig | dict[str, Any],
        train_cfg: TrainConfig | dict[str, Any],
        class_counts: Sequence[int],
        steps_per_epoch: int | None = None,
        plan: DevicePlan | None = None,
    ):
        """``class_counts``: training-label counts (for "auto" class weights).
        ``steps_per_epoch``: training *batches* per epoch, only used to size the LR
        schedule when no Trainer is attached (the Trainer's own estimate wins).
        ``plan``: how this run uses its device (fused AdamW, metrics kept on the device); not
        a hyperparameter: the model is the same whatever trained it. None: the CPU's ways."""
        super().__init__()
        self.plan = plan
        self.model_cfg = _as_config(ModelConfig, model_cfg)
        self.train_cfg = _as_config(TrainConfig, train_cfg)
        self.class_counts = [int(c) for c in class_counts]
        self.steps_per_epoch = steps_per_epoch
        self.save_hyperparameters({
            "model_cfg": config_to_dict(self.model_cfg),
            "train_cfg": config_to_dict(self.train_cfg),
            "class_counts": self.class_counts,
            "steps_per_epoch": steps_per_epoch,
        })
        self.model = build_network(self.model_cfg)
        self.multitask = self.model_cfg.volatility_head
        if self.multitask and self.train_cfg.aux_weight == 0:
            raise ValueError("train aux_weight is 0 but the model has a volatility head, which would stay untrained: "
                             "give aux_weight > 0, or build the model with volatility_head false")
        self.loss_fn = build_loss(self.train_cfg.class_weights, self.class_counts, self.train_cfg.label_smoothing)
        deferred = bool(plan and plan.deferred_metrics)
        self.train_metrics = StageMetrics(self.model_cfg.n_classes, self.multitask, deferred)
        self.val_metrics = StageMetrics(self.model_cfg.n_classes, self.multitask, deferred)
        self.history: list[dict[str, Any]] = []
        self._last_val: dict[str, Any] = {}

    def forward(self, x: torch.Tensor, return_attention: bool = False):  # x: (B, L, F)
        return self.model(x, return_attention=return_attention)

    # -- steps ---------------------------------------------------------------
    def _step(self, batch, metrics: StageMetrics, ret: torch.Tensor | None = None) -> torch.Tensor:
        """The objective of a batch (x, y) or, from a dataset with a volatility target,
        (x, y, vol); the vol target is used only when the model has the head for it. ``ret``:
        a date batch's forward returns, for the rank term (``rank_weight``)."""
        x, y = batch[0], batch[1]  # (B, L, F), (B,)
        out = self.model.outputs(x)
        logits, vol_hat = out.logits, out.volatility  # (B, C), (B,) or None
        loss = self.loss_fn(logits, y)
        vol = None
        if self.multitask:
            if len(batch) < 3:
                raise ValueError("the model has a volatility head but the dataset has no volatility target: build it "
                                 "with auxiliary: volatility, or the model with volatility_head false")
            vol = (vol_hat, batch[2])
            loss = loss + self.train_cfg.aux_weight * F.mse_loss(vol_hat, batch[2])
        if ret is not None and self.train_cfg.rank_weight:
            # The model's score: the log-odds of the last class ("up") against the first.
            loss = loss + self.train_cfg.rank_weight * rank_ic_loss(logits[:, -1] - logits[:, 0], ret)
        metrics.update(logits, y, loss, vol)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        ret = None
        if self.train_cfg.batches == "dates":  # a date's cross-section, its forward returns last
            batch, ret = batch[:-1], batch[-1]
        loss = self._step(batch, self.train_metrics, ret)
        # On the progress bar the loss is read back to the host at every refresh; with metrics
        # kept on the device it goes to the logger only, every log_every_n_steps.
        self.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=not self.train_metrics.deferred,
                 batch_size=len(batch[1]))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_metrics)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model(x).softmax(dim=-1)  # (B, C) class probabilities

    # -- epoch ends ----------------------------------------------------------
    def _log_stage(self, stage: str, values: dict[str, Any]) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for k, v in values.items():
            if k == "confmat":
                flat[f"{stage}_{k}"] = v  # history only; not a scalar to log
            elif isinstance(v, list):
                for c, x in enumerate(v):
                    flat[f"{stage}_{k}_c{c}"] = float(x)
            else:
                flat[f"{stage}_{k}"] = v
        for k, v in flat.items():
            if not isinstance(v, list):
                self.log(k, v, prog_bar=k in PROGRESS_BAR_KEYS)
        return flat

    # Each epoch's wall time, training batches and validation apart (in the history: what a
    # throughput figure is computed from). The device is synchronised at these boundaries
    # only, once per epoch, so queued GPU work is counted where it ran.
    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_epoch_start(self) -> None:
        self._times = {"start": self._clock()}

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking and getattr(self, "_times", None):
            self._times["val_start"] = self._clock()

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        if self.trainer.sanity_checking:
            return  # the pre-fit sanity pass is not an epoch
        self._last_val = self._log_stage("val", values)
        if "val_start" in getattr(self, "_times", {}):
            now = self._clock()
            self._last_val["time_train_s"] = self._times["val_start"] - self._times["start"]
            self._last_val["time_val_s"] = now - self._times["val_start"]

    def on_train_epoch_end(self) -> None:
        # Lightning runs the epoch's validation before this hook, so _last_val is current.
        values = self.train_metrics.compute()
        self.train_metrics.reset()
        entry = {"epoch": int(self.current_epoch), "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"])}
        entry.update(self._log_stage("train", values))
        entry.update(self._last_val)
        self._last_val = {}
        self.history.append(entry)
        logger.info(
            "epoch %d: train_loss %.4f val_ce %.4f val_acc %.4f lr %.2e",
            entry["epoch"], entry["train_loss"], entry.get("val_ce", math.nan), entry.get("val_acc", math.nan),
            entry["lr"],
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["history"] = self.history
        if self.plan is not None:  # how it was trained (micro-batch, precision), for the record
            checkpoint["device_plan"] = self.plan.as_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("history", []))

    # -- optimizer -----------------------------------------------------------
    def total_optimizer_steps(self) -> int:
        """Optimizer steps in the whole run = ceil(batches / accumulate) * epochs.

        The reference hard-coded steps per epoch and ignored accumulation, so its
        OneCycle ran ~27% of the cycle. The Trainer knows the real number (it also
        accounts for DDP sharding, limit_train_batches and max_steps).
        """
        if self._trainer is not None:
            est = self.trainer.estimated_stepping_batches
            if math.isfinite(est) and est > 0:
                return int(est)
        if not self.steps_per_epoch:
            raise ValueError("no Trainer attached and steps_per_epoch not given: cannot size the LR schedule")
        tc = self.train_cfg
        accumulate = self.plan.accumulate if self.plan is not None else tc.accumulate_grad_batches
        return math.ceil(self.steps_per_epoch / accumulate) * tc.max_epochs

    def configure_optimizers(self) -> dict[str, Any]:
        tc = self.train_cfg
        # Fused: one kernel for all parameters instead of a few per tensor (CUDA; the CPU keeps
        # PyTorch's default implementation, as before).
        fused = {"fused": True} if self.plan is not None and self.plan.fused_optimizer else {}
        optimizer = torch.optim.AdamW(self.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay,
                                      **fused)
        total = self.total_optimizer_steps()
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=tc.max_lr,
            total_steps=total,
            pct_start=tc.pct_start,
            div_factor=tc.max_lr / tc.lr,  # start the cycle at lr, as the recipe states
            final_div_factor=FINAL_DIV_FACTOR,
            cycle_momentum=False,  # keep AdamW's betas as configured instead of cycling beta1
        )
        logger.info("OneCycleLR over %d optimizer steps (peak %.1e)%s", total, tc.max_lr, ", fused AdamW" if fused else "")
        # interval "step": Lightning steps it once per optimizer step, i.e. after accumulation.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}
