"""The challenger itself: the champion's configuration retrained through Ray Train on the
challenger's window, or the best trial (on validation) of a Tune search over a space.

Either way the artifact is written beside the champion's versions without moving ``latest``
(a challenger is not the champion until promoted), and records the retrain plan.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from stocktrend.config_io import config_to_dict, read_yaml, with_overrides
from stocktrend.data.config import DataConfig
from stocktrend.data.store import atomic_write_text
from stocktrend.retraining.plan import RetrainError


def retrain_champion_config(cfg: DataConfig, model_part: dict[str, Any], train_cfg, model_dir: Path, version: str,
                            record: dict[str, Any], storage: Path, cache_root: Path, cpus_per_worker: float,
                            wait_s: float) -> Path:
    from stocktrend.cluster.resources import ResourcesUnavailable
    from stocktrend.data.cache import build_cached
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.export import export_artifact
    from stocktrend.training.repeat import train_many

    dataset = build_cached(cfg, cache_root)
    shape_free = {k: v for k, v in model_part.items() if k not in ("n_features", "seq_len", "n_classes")}
    model_cfg = model_config_from_metadata("v2", read_metadata(dataset), **shape_free)  # the champion's network
    t0 = time.perf_counter()
    try:
        (run,) = train_many([{"name": f"{model_dir.name}-{version}", "dataset": dataset, "model": model_cfg,
                              "train": train_cfg}], storage, cpus_per_worker=cpus_per_worker, wait_s=wait_s)
    except ResourcesUnavailable as err:
        raise RetrainError(str(err)) from None
    return export_artifact(run["checkpoint"], dataset, model_dir.parent, model_dir.name, history=run["history"],
                           version=version, make_latest=False,
                           extra={"engine": "ray-train x1", "train_seconds": round(time.perf_counter() - t0, 1),
                                  "retrain": record})


def search_challenger(cfg: DataConfig, space_file: Path, metric: str, model_dir: Path, version: str,
                      record: dict[str, Any], storage: Path, cache_root: Path, cpus_per_trial: float,
                      num_samples: int | None, wait_s: float) -> Path:
    """The space's own file with its dataset replaced by the challenger's config, both written
    beside the experiment (every trial reloads the space from its file)."""
    import yaml

    from stocktrend.cluster.resources import ResourcesUnavailable
    from stocktrend.tuning.run import SearchOptions, export_best, fit_concurrency, run_search
    from stocktrend.tuning.space import load_space

    raw = read_yaml(space_file)
    if "split" in (raw.get("data") or {}) or any(k.startswith("data.split") for k in raw.get("space") or {}):
        raise RetrainError(f"{space_file}: sets data.split, which a retrain fixes to its own dates")
    name = f"{model_dir.name}-{version}"
    experiment = Path(storage).resolve() / name
    experiment.mkdir(parents=True, exist_ok=True)
    atomic_write_text(experiment / "dataset.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    atomic_write_text(experiment / "space.yaml",
                      yaml.safe_dump({**raw, "dataset": str(experiment / "dataset.yaml")}, sort_keys=False))
    space = load_space(experiment / "space.yaml")
    space = dataclasses.replace(space, train=with_overrides(space.train, {"selection_metric": metric}))
    try:
        opts = fit_concurrency(space, SearchOptions(num_samples=num_samples, metric=metric,
                                                    cpus_per_trial=cpus_per_trial), wait_s)
    except ResourcesUnavailable as err:
        raise RetrainError(str(err)) from None
    results = run_search(space, opts, experiment.parent, name, cache_root)
    if results.num_errors == len(results):
        raise RetrainError(f"all {len(results)} trials of the search failed; see {experiment}")
    return export_best(results, space, metric, experiment, cache_root, model_dir.parent, model_dir.name,
                       version=version, make_latest=False,
                       extra={"engine": f"ray-tune x{len(results)}", "retrain": {**record, "space": str(space_file)}})
