"""One Tune trial: resolve its configs, get its (cached) dataset, train through Ray Train.

Ray 2.60 no longer accepts a TorchTrainer as a Tune trainable, so each trial is a small
function ("driver") that builds and fits a TorchTrainer, forwarding every epoch's report
to Tune with TuneReportCallback (which is what ASHA acts on).

A trial may run on any node: it reads no file of the driver's. The search space and the
dataset's source files reach it through Ray's object store (``SourceBundle``); the dataset
it builds is cached where its training workers read it: the dataset cache (one machine, or
a shared file system), or the run's object storage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from stocktrend import storage
from stocktrend.config_io import with_overrides
from stocktrend.data.bundle import SourceBundle, localise
from stocktrend.data.cache import build_cached, build_published
from stocktrend.models.config import model_config_from_metadata
from stocktrend.training.ray_train import ray_train
from stocktrend.tuning.space import SearchSpace, resolve

log = logging.getLogger(__name__)
TRAIN_RUNS = "train_runs"
DATASETS = "datasets"  # trials' datasets on object storage: <storage>/datasets/<fingerprint>


def trial_dataset(space: SearchSpace, values: dict[str, Any], cache_root: str | Path) -> Path:
    """A trial's dataset, rebuilt (or found) on the driver, from the driver's own files."""
    data_cfg, _, _ = resolve(space, values)
    return build_cached(data_cfg, cache_root)


def run_trial(
    values: dict[str, Any],
    *,
    space: SearchSpace,
    sources: SourceBundle,
    experiment_dir: str,
    datasets: str,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    resources: dict[str, float] | None = None,
    max_failures: int = 1,
    kill_worker_at_epoch: int | None = None,
) -> None:
    data_cfg, model_overrides, train_cfg = resolve(space, values)
    train_cfg = with_overrides(train_cfg, {"max_epochs": space.max_epochs})
    # Shared by trials with the same data config, cached where every node reads it.
    meta, dataset = build_published(localise(data_cfg, sources), datasets)
    if train_cfg.aux_weight == 0:  # a searched weight of 0: the plain single-task network
        model_overrides = {**model_overrides, "volatility_head": False}
    model_cfg = model_config_from_metadata(space.preset, meta, **model_overrides)
    trial_id = tune.get_context().get_trial_id()
    log.info("trial %s: %s", trial_id, values)
    ray_train(
        dataset,
        model_cfg,
        train_cfg,
        storage.join(experiment_dir, TRAIN_RUNS),
        trial_id,
        num_workers=1,
        cpus_per_worker=cpus_per_trial,
        gpus_per_worker=gpus_per_trial or None,
        resources=resources,
        callbacks=[TuneReportCallback()],
        max_failures=max_failures,
        kill_worker_at_epoch=kill_worker_at_epoch,
    )
