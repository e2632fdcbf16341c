"""Many training runs through Ray Train at once: seeds of one model, walk-forward folds.

Each run is a zero-CPU Ray task driving its own TorchTrainer (the same pattern as a Tune
trial), at most as many at a time as the cluster has CPUs for their workers, so folds
train in parallel where resources allow and never deadlock on a small machine. Returns,
per run, the test-split probabilities and attention of the best checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from stocktrend import storage as storage_lib
from stocktrend.config_io import config_from_dict, config_to_dict
from stocktrend.data.cache import publish_dataset
from stocktrend.data.windows import split_arrays
from stocktrend.models.config import ModelConfig
from stocktrend.training.config import TrainConfig
from stocktrend.training.module import TrendClassifier
from stocktrend.training.ray_train import ray_train

log = logging.getLogger(__name__)


def predict_split(checkpoint: str, dataset_dir: Path, split: str = "test") -> dict[str, np.ndarray]:
    """{"probs", "attention"} of every window of ``split``, and "volatility_z" (the
    standardised log-volatility forecast) from a multi-task model."""
    module = TrendClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False).eval()
    x = np.asarray(split_arrays(dataset_dir, split)["X"])
    out: dict[str, list[np.ndarray]] = {"probs": [], "attention": [], "volatility_z": []}
    with torch.inference_mode():
        for start in range(0, len(x), 512):
            res = module.model.outputs(torch.from_numpy(x[start : start + 512]))
            out["probs"].append(res.logits.softmax(-1).numpy())
            out["attention"].append(res.attention.numpy())
            if res.volatility is not None:
                out["volatility_z"].append(res.volatility.numpy())
    return {k: np.concatenate(v) for k, v in out.items() if v}


@ray.remote(num_cpus=0)
def _run(job: dict[str, Any]) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO)
    model_cfg = config_from_dict(ModelConfig, job["model"], "model")
    train_cfg = config_from_dict(TrainConfig, job["train"], "train")
    res = ray_train(job["dataset"], model_cfg, train_cfg, job["storage"], job["name"],
                    cpus_per_worker=job["cpus_per_worker"])
    dataset = storage_lib.fetch_dir(job["dataset"], "datasets")  # this task's node may not be the driver's
    out = {**job, **res, **predict_split(res["checkpoint"], dataset)}
    for split in job.get("also_predict", ()):
        out[f"{split}_probs"] = predict_split(res["checkpoint"], dataset, split)["probs"]
    return out


def train_many(jobs: list[dict[str, Any]], storage: str | Path, cpus_per_worker: float = 1,
               wait_s: float = 0.0) -> list[dict[str, Any]]:
    """Train every job ({"name", "dataset", "model": ModelConfig, "train": TrainConfig, ...}),
    as many at once as the free CPUs hold (ResourcesUnavailable when not one does); results
    come back in the jobs' order."""
    from stocktrend.cluster.resources import Ask, require, units_that_fit

    storage = storage_lib.normalise(storage)
    per_run = {"CPU": cpus_per_worker}
    require(Ask(f"retraining ({len(jobs)} runs)", per_run, 1, "training worker"), wait_s)
    slots = min(len(jobs), units_that_fit(per_run))
    payloads = [{**j, "model": config_to_dict(j["model"]), "train": config_to_dict(j["train"]),
                 "dataset": publish_dataset(Path(j["dataset"]), storage_lib.join(storage, "datasets")),
                 "storage": storage, "cpus_per_worker": cpus_per_worker}
                for j in jobs]
    pending, running, done = list(enumerate(payloads)), {}, {}
    while pending or running:
        while pending and len(running) < slots:
            i, job = pending.pop(0)
            running[_run.remote(job)] = i
            log.info("training %s (%d/%d)", job["name"], i + 1, len(jobs))
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            done[running.pop(ref)] = ray.get(ref)
    return [done[i] for i in range(len(jobs))]
