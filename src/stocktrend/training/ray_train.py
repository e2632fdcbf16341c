"""Training on Ray Train workers: the per-worker loop and the driver call.

The same TrendDataModule/TrendClassifier as a plain Lightning run; the Trainer gets
Ray's DDP strategy and cluster environment, and RayTrainReportCallback reports every
epoch's metrics with a checkpoint, of which Ray keeps the best by the selection metric.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import ray.train
import torch
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor, ModelCheckpoint
from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback, prepare_trainer
from ray.train.torch import TorchTrainer

from stocktrend import storage
from stocktrend.config_io import config_from_dict, config_to_dict
from stocktrend.models.config import ModelConfig
from stocktrend.training.callbacks import build_trainer, early_stopping
from stocktrend.training.config import TrainConfig, selection_mode
from stocktrend.training.datamodule import TrendDataModule
from stocktrend.training.device import (
    DevicePlan,
    bound_gpu_memory,
    fit_with_oom_fallback,
    plan_for,
    resolve_device_type,
)
from stocktrend.training.faults import KillOnce
from stocktrend.training.module import TrendClassifier

log = logging.getLogger(__name__)
HISTORY = "history.json"


class ReportToRay(RayTrainReportCallback, Checkpoint):
    """Ray's report callback, made a Lightning ``Checkpoint`` so Lightning runs it after the
    module's ``on_train_epoch_end`` (checkpoint callbacks go last): the reported checkpoint's
    history then includes its own epoch. Rank 0 also keeps ``history.json`` current, so a
    trial stopped early by ASHA still leaves its full per-epoch history. It goes to the run's
    storage location (a local file, or one object written whole)."""

    def __init__(self, history_location: str):
        super().__init__()
        self.history_location = history_location

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0:
            storage.write_text(self.history_location, json.dumps(pl_module.history, default=float))
        super().on_train_epoch_end(trainer, pl_module)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        prune_stale_run_folders(Path(self.tmpdir_prefix).parent)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Ray removes each epoch's local copy after reporting it, but never the per-run
        # folder it made them in (system temp folder): one per run, forever, without this.
        shutil.rmtree(self.tmpdir_prefix, ignore_errors=True)


def prune_stale_run_folders(temp: Path, max_age_s: float = 6 * 3600) -> None:
    """Ray's per-run Lightning folders of runs that never reached teardown (a trial ASHA
    stopped, a killed worker): empty between epochs, so only empty ones idle for hours go."""
    for folder in temp.glob("lightning_checkpoints-*"):
        try:
            if not any(folder.iterdir()) and time.time() - folder.stat().st_mtime > max_age_s:
                folder.rmdir()
        except OSError:
            continue  # another worker's, just removed or just filled


class UploadRunFolder(pl.Callback):
    """With the run on object storage, a worker writes its Lightning outputs (milestones,
    TensorBoard, its restarts file) into its node's scratch folder; this copies what is new
    to the run's location after every epoch and when training ends or fails, so they outlive
    the node (a trial that ASHA stops keeps what its last epoch wrote). Rank 0 copies the
    shared outputs; every rank its own ``starts/rank<r>.jsonl``."""

    def __init__(self, local_dir: Path, location: str):
        self.local_dir, self.location = local_dir, location
        self.sent: dict[str, tuple[float, int]] = {}

    def _sync(self, trainer: pl.Trainer) -> None:
        own = f"starts/rank{trainer.global_rank}.jsonl"
        for item in sorted(self.local_dir.rglob("*")) if self.local_dir.is_dir() else []:
            rel = item.relative_to(self.local_dir).as_posix()
            if item.is_dir() or (trainer.global_rank != 0 and rel != own) or (
                    rel.startswith("starts/") and rel != own):
                continue
            stamp = (item.stat().st_mtime, item.stat().st_size)
            if self.sent.get(rel) != stamp:
                with item.open("rb") as f:
                    fs, path = storage.filesystem(storage.join(self.location, rel))
                    with fs.open_output_stream(path) as out:
                        shutil.copyfileobj(f, out)
                self.sent[rel] = stamp

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._sync(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._sync(trainer)


class RecordStarts(pl.Callback):
    """One line per (re)start of every rank in ``starts/rank<r>.jsonl``: the world size, the
    epoch and optimizer step training starts from, the checkpoint it resumed from, the node
    and process it ran in, and (at
    the end) the training batches this rank ran. What a person asks of a crashed and
    restarted run, and what the tests check (a resume, not a restart from scratch)."""

    def __init__(self, folder: Path, resumed_from: str | None):
        self.folder, self.resumed_from, self.batches = folder, resumed_from, 0

    def _append(self, trainer: pl.Trainer, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._append(trainer, {"event": "start", "world_size": trainer.world_size, "rank": trainer.global_rank,
                               "epoch": trainer.current_epoch, "global_step": trainer.global_step,
                               "resumed_from": self.resumed_from,
                               # where this rank ran: what a person asks of a crash on a cluster
                               "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._append(trainer, {"event": "end", "epoch": trainer.current_epoch, "global_step": trainer.global_step,
                               "train_batches": self.batches})


def resume_checkpoint(run_dir: Path, run_location: str | None = None) -> str | None:
    """What a (re)started worker group continues from: Ray's latest registered checkpoint,
    else the newest complete checkpoint in this run's folder. Ray registers a report only
    when its controller polls the worker, so a worker killed within a second of reporting
    loses that report, and the group would restart from scratch (seen in the fault test)."""
    registered = ray.train.get_checkpoint()
    if registered is not None:
        if run_location is not None:  # on object storage: this node's copy
            folder = storage.fetch_dir(storage.location_of(run_location, registered.path), "checkpoints")
            return str(folder / ReportToRay.CHECKPOINT_NAME)
        return str(Path(registered.path) / ReportToRay.CHECKPOINT_NAME)
    if run_location is not None:  # (the scan below reads a local run folder only)
        return None
    found = sorted(run_dir.glob(f"checkpoint_*/{ReportToRay.CHECKPOINT_NAME}"), key=lambda p: p.stat().st_mtime,
                   reverse=True)
    for path in found:
        try:  # a worker killed mid-upload leaves a partial file: take the newest that loads
            torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            log.warning("skipping unreadable checkpoint %s (%s)", path, err)
            continue
        log.warning("Ray handed this restart no checkpoint; continuing from this run's newest: %s", path)
        return str(path)
    return None


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker; config holds plain dicts (it crosses processes)."""
    model_cfg = config_from_dict(ModelConfig, config["model"], "model")
    train_cfg = config_from_dict(TrainConfig, config["train"], "train")
    # The dataset and the run folder are locations: a worker may be on a node that has
    # neither the driver's disk nor the trial's; a remote dataset is fetched to this node.
    dataset_dir = storage.fetch_dir(config["dataset"], "datasets")
    remote = storage.is_remote(config["run"])
    out_dir = storage.scratch("runs") / storage.key_of(config["run"]) if remote else Path(config["run"])
    # The device decides the step (training/device.py): on a CPU exactly the config; on a
    # GPU the effective batch in one step, data on the device, fused AdamW, and a step down
    # of the micro-batch on out-of-memory. A trial holding part of a card stays in its part.
    accelerator = config.get("accelerator", "auto")
    plan = plan_for(resolve_device_type(accelerator), train_cfg)
    if config.get("gpus_per_worker"):
        log.info("GPU memory: %s", bound_gpu_memory(float(config["gpus_per_worker"])))
    ckpt_path = resume_checkpoint(out_dir, config["run"] if remote else None)
    if ckpt_path:
        log.warning("resuming from %s", ckpt_path)

    def fit(p: DevicePlan) -> None:  # from scratch for each plan tried: fresh data, model, callbacks
        dm = TrendDataModule(dataset_dir, p.micro_batch, train_cfg.num_workers, train_cfg.seed,
                             device_resident=p.device_data, epoch_windows=train_cfg.epoch_windows,
                             batches=train_cfg.batches, epoch_dates=train_cfg.epoch_dates)
        pl.seed_everything(train_cfg.seed, workers=True)  # before the model: weight init is seeded too
        module = TrendClassifier(model_cfg, train_cfg, dm.class_counts_train(), dm.train_batches_per_epoch(), plan=p)
        callbacks = [
            early_stopping(train_cfg),
            ModelCheckpoint(  # milestones every N epochs, beside Ray's best checkpoint
                dirpath=out_dir / "milestones", filename="e{epoch:03d}", every_n_epochs=train_cfg.milestone_every,
                save_top_k=-1, monitor=None,
            ),
            LearningRateMonitor(logging_interval="step"),
            ReportToRay(storage.join(config["run"], HISTORY)),
            RecordStarts(out_dir / "starts", ckpt_path),
        ]
        if remote:
            callbacks.append(UploadRunFolder(out_dir, config["run"]))
        if config.get("kill_worker_at_epoch") is not None:
            callbacks.append(KillOnce(config["kill_worker_at_epoch"], out_dir / "fault-injected"))
        trainer = build_trainer(
            train_cfg,
            out_dir,
            accelerator=accelerator,
            devices="auto",
            callbacks=callbacks,
            with_progress=config.get("progress", False),
            plan=p,
            strategy=RayDDPStrategy(),
            plugins=[RayLightningEnvironment()],
            enable_checkpointing=True,
        )
        try:
            prepare_trainer(trainer).fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except torch.cuda.OutOfMemoryError as err:
            if trainer.current_epoch > 0 or module.history:  # epochs already reported to Ray/Tune
                raise RuntimeError(f"the GPU's memory ran short at epoch {trainer.current_epoch}, after epochs were "
                                   "reported: not refitting from scratch (Ray/ASHA would see them twice); "
                                   "set train.gpu_single_step false or a smaller batch_size") from err
            raise

    fit_with_oom_fallback(fit, plan, world_size=ray.train.get_context().get_world_size())


def ray_train(
    dataset_dir: str | Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    storage_path: str | Path,
    name: str,
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1,
    gpus_per_worker: float | None = None,
    callbacks: list | None = None,
    progress: bool = False,
    max_failures: int = 1,
    kill_worker_at_epoch: int | None = None,
    resources: dict[str, float] | None = None,
    fetch_checkpoint: bool = True,
) -> dict[str, Any]:
    """Fit through a TorchTrainer; return the best checkpoint (a local file; with
    ``fetch_checkpoint`` False, its location, not fetched), its metrics and the history.

    ``dataset_dir`` and ``storage_path`` are locations (``stocktrend.storage``): local folders,
    or object-storage URIs that workers fetch from. ``max_failures``: times Ray restarts a
    failed worker group, resuming from the last reported checkpoint. ``gpus_per_worker`` may
    be fractional to pack trials on a GPU. ``resources``: custom Ray resources each worker
    also holds (a node type, e.g. ``{"gpu_node": 1}``).
    """
    storage_path = storage.normalise(storage_path)  # Ray requires an absolute storage path
    run = storage.join(storage_path, name)
    metric, mode = train_cfg.selection_metric, selection_mode(train_cfg.selection_metric)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "dataset": storage.normalise(dataset_dir),
            "model": config_to_dict(model_cfg),
            "train": config_to_dict(train_cfg),
            "run": run,
            "gpus_per_worker": gpus_per_worker,
            "progress": progress,
            "kill_worker_at_epoch": kill_worker_at_epoch,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu or bool(gpus_per_worker),
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {}),
                                  **(resources or {})},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=metric, checkpoint_score_order=mode
            ),
            callbacks=callbacks or [],
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    best = result.get_best_checkpoint(metric=metric, mode=mode) if result.best_checkpoints else None
    if best is None:
        raise RuntimeError(f"Ray Train run {name} reported no checkpoint")
    metrics = next(m for c, m in result.best_checkpoints if c.path == best.path)
    log.info("best %s %.4f at epoch %s", metric, metrics[metric], metrics.get("epoch"))
    # Ray's metrics_dataframe keeps only the retained checkpoints' reports.
    history = json.loads(storage.read_text(storage.join(run, HISTORY)))
    location = storage.location_of(storage_path, best.path)
    folder = storage.fetch_dir(location, "checkpoints") if fetch_checkpoint else location
    return {
        "checkpoint": storage.join(folder, RayTrainReportCallback.CHECKPOINT_NAME),
        "metrics": metrics,
        "history": history,
    }
