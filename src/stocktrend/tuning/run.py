"""The search: Tuner set-up (Optuna/random, ASHA/FIFO), resume, and the best trial's export."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from stocktrend import storage
from stocktrend.data.bundle import bundle_sources
from stocktrend.training.config import TrainConfig, selection_mode
from stocktrend.tuning.space import SearchSpace
from stocktrend.tuning.tracking import callbacks as tracking_callbacks
from stocktrend.tuning.trial import DATASETS, TRAIN_RUNS, run_trial, trial_dataset

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchOptions:
    search: str = "optuna"  # or "random"
    scheduler: str = "asha"  # or "fifo"
    num_samples: int | None = None  # default: the space file's
    max_concurrent: int | None = None
    metric: str = TrainConfig().selection_metric  # the recipe's; tune.py passes the space's
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    # Custom Ray resources each trial's driver and training worker hold: a node type on a
    # cluster (e.g. {"gpu_node": 1}), or the second node of the multi-node test.
    resources: dict[str, float] = dataclasses.field(default_factory=dict)
    max_failures: int = 1
    seed: int | None = None
    kill_worker_at_epoch: int | None = None  # fault injection (reliability tests)
    tracking_uri: str | None = None  # MLflow (tuning/tracking.py); None: no tracking


def fit_concurrency(space: SearchSpace, opts: SearchOptions, wait_s: float = 0.0) -> SearchOptions:
    """Trials at once: the space's (or --max-concurrent), but no more than the free resources
    hold now. A trial's driver holds nothing; its one training worker holds cpus_per_trial
    (and gpus_per_trial). Raises ResourcesUnavailable when not even one fits."""
    from stocktrend.cluster.resources import Ask, require, units_that_fit

    asked = opts.max_concurrent or space.max_concurrent
    per_trial = {"CPU": opts.cpus_per_trial, "GPU": opts.gpus_per_trial, **opts.resources}
    require(Ask("the search", per_trial, 1, "trial", hint="--cpus-per-trial F, --gpus-per-trial F, --resources"),
            wait_s)
    fits = units_that_fit(per_trial)
    if fits < asked:
        log.warning("%d trials at a time asked; the free resources hold %d: running %d at a time", asked, fits, fits)
    return dataclasses.replace(opts, max_concurrent=min(asked, fits))


def _searcher(space: SearchSpace, opts: SearchOptions, mode: str):
    seed = space.seed if opts.seed is None else opts.seed
    points = space.points_to_evaluate
    if opts.search == "optuna":
        alg = OptunaSearch(points_to_evaluate=points or None, seed=seed)  # metric/mode come from TuneConfig
        return ConcurrencyLimiter(alg, max_concurrent=opts.max_concurrent or space.max_concurrent)
    if opts.search == "random":
        return BasicVariantGenerator(points_to_evaluate=points or None, random_state=seed,
                                     max_concurrent=opts.max_concurrent or space.max_concurrent)
    raise ValueError(f"unknown search {opts.search!r}: optuna or random")


def _scheduler(space: SearchSpace, opts: SearchOptions, mode: str):
    if opts.scheduler == "asha":
        # One report per epoch, so training_iteration counts epochs.
        return ASHAScheduler(time_attr="training_iteration", max_t=space.max_epochs,
                             grace_period=space.grace_period, reduction_factor=space.reduction_factor)
    if opts.scheduler == "fifo":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler {opts.scheduler!r}: asha or fifo")


def _trainable(space: SearchSpace, opts: SearchOptions, experiment_dir: str, datasets: str):
    # The space and its dataset's source files travel in Ray's object store: a trial on
    # another node reads nothing of this machine's.
    fn = tune.with_parameters(
        run_trial, space=space, sources=bundle_sources(space.data), experiment_dir=experiment_dir, datasets=datasets,
        cpus_per_trial=opts.cpus_per_trial, gpus_per_trial=opts.gpus_per_trial, resources=opts.resources,
        max_failures=opts.max_failures, kill_worker_at_epoch=opts.kill_worker_at_epoch,
    )
    # The driver only waits on its TorchTrainer: it reserves no CPU, so two trials on a
    # 2-CPU machine don't hold both CPUs while their workers wait forever (Ray 2.60's
    # classic deadlock). An all-zero bundle is rejected, hence the token memory request.
    return tune.with_resources(fn, {"CPU": 0, "memory": 1, **opts.resources})


def run_search(space: SearchSpace, opts: SearchOptions, storage_path: str | Path, name: str,
               cache_root: Path | None = None, resume: bool = False) -> tune.ResultGrid:
    """The search, its experiment at ``storage_path/name`` (a local folder or an
    object-storage URI). Trials cache their datasets in ``cache_root`` (default: beside the
    experiments) when the storage is a folder, in ``<storage_path>/datasets`` on object storage."""
    mode = selection_mode(opts.metric)
    storage_path = storage.normalise(storage_path)
    experiment_dir = storage.join(storage_path, name)
    remote = storage.is_remote(storage_path) or cache_root is None
    datasets = storage.join(storage_path, DATASETS) if remote else storage.normalise(cache_root)
    trainable = _trainable(space, opts, experiment_dir, datasets)
    if resume:
        if not tune.Tuner.can_restore(experiment_dir):
            raise FileNotFoundError(f"nothing to resume at {experiment_dir}")
        log.info("resuming %s: finished trials are kept, unfinished and errored ones rerun", experiment_dir)
        tuner = tune.Tuner.restore(experiment_dir, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=space.tune_space(),
            tune_config=tune.TuneConfig(
                metric=opts.metric, mode=mode, search_alg=_searcher(space, opts, mode),
                scheduler=_scheduler(space, opts, mode), num_samples=opts.num_samples or space.num_samples,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage_path,
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                callbacks=tracking_callbacks(opts.tracking_uri, name),
            ),
        )
    return tuner.fit()


def best_trial(results: tune.ResultGrid, metric: str) -> dict[str, Any]:
    """The trial and epoch with the best validation metric over all epochs (never test)."""
    mode = selection_mode(metric)
    best = results.get_best_result(metric=metric, mode=mode, scope="all")
    frame = best.metrics_dataframe.dropna(subset=[metric])
    row = frame.loc[frame[metric].idxmin() if mode == "min" else frame[metric].idxmax()]
    trial_id = best.metrics["trial_id"]
    return {"result": best, "trial_id": trial_id, "config": best.config, "epoch": int(row["epoch"]),
            "score": float(row[metric]), "checkpoint_path": row["checkpoint_path"]}


def export_best(results: tune.ResultGrid, space: SearchSpace, metric: str, experiment_dir: str | Path,
                cache_root: Path, models_root: Path, name: str, version: str | None = None,
                make_latest: bool = True, extra: dict[str, Any] | None = None) -> Path:
    """The best trial's model artifact under ``models_root`` (local: to publish it on object
    storage, see ``training.export.publish_artifact``)."""
    from stocktrend.training.export import export_artifact

    best = best_trial(results, metric)
    dataset = trial_dataset(space, best["config"], cache_root)
    experiment_dir = storage.normalise(experiment_dir)
    # Ray reports the checkpoint as a path in the storage's file system (no scheme on s3).
    checkpoint = storage.fetch_dir(storage.location_of(experiment_dir, best["checkpoint_path"]), "checkpoints")
    run_dir = storage.join(experiment_dir, TRAIN_RUNS, best["trial_id"])
    history = json.loads(storage.read_text(storage.join(run_dir, "history.json")))
    return export_artifact(checkpoint / "checkpoint.ckpt", dataset, models_root, name, history=history, version=version,
                           make_latest=make_latest, extra={
        "tune": {"experiment": str(experiment_dir), "trial_id": best["trial_id"], "config": best["config"],
                 "space": str(space.path), "selection": f"best {metric} over all trials and epochs (validation)"},
        **(extra or {}),
    })
