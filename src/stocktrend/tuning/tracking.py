"""Experiment tracking with MLflow, through Ray Tune's own ``MLflowLoggerCallback``.

Opt-in (``tune.py --mlflow [URI]``): every trial becomes an MLflow run of the experiment
named after the search, with its sampled configuration as parameters and every reported
epoch's metrics as steps; after the search the best trial's run is tagged with where its
model artifact went. The client is the ``mlflow`` extra (``mlflow-skinny``); a local SQLite
store under the search's storage path needs no server. ``mlflow ui`` (the full ``mlflow``
package) shows it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)
ARTIFACT_TAG = "stocktrend.artifact"


class TrackingUnavailable(RuntimeError):
    pass


def default_uri(storage_path: Path) -> str:
    """An SQLite store beside the experiments: MLflow 3 refuses its file store unless told to,
    and the callback writes from the one Tune driver, so SQLite's single writer is enough."""
    return f"sqlite:///{Path(storage_path).resolve() / 'mlflow.db'}"


def callbacks(uri: str | None, experiment: str) -> list:
    if uri is None:
        return []
    if importlib.util.find_spec("mlflow") is None:
        raise TrackingUnavailable("--mlflow needs the MLflow client: pip install -c constraints.txt -e '.[mlflow]'")
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    log.info("MLflow tracking to %s (experiment %s)", uri, experiment)
    return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, save_artifact=False)]


def tag_artifact(uri: str, experiment: str, trial_id: str, artifact: Path) -> str | None:
    """Tag the MLflow run of ``trial_id`` with the exported artifact's folder; its run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    for run in client.search_runs([exp.experiment_id]):
        if trial_id in run.data.tags.get("trial_name", ""):
            client.set_tag(run.info.run_id, ARTIFACT_TAG, str(artifact))
            return run.info.run_id
    log.warning("no MLflow run of trial %s in experiment %s to tag", trial_id, experiment)
    return None
