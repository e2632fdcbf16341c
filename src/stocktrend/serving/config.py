"""The typed arguments of the Serve application: the one place its settings are defined.

``serve/config.yaml`` passes them as the application's ``args``; Serve validates them
against ``ServeArgs`` (pydantic) before building, so a typo fails the deploy with the key
named. ``ray_jobs/deploy.py`` starts from the same file and overrides fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stocktrend.inference.backends import SETTINGS
from stocktrend.storage import is_remote, normalise

ROOT = Path(__file__).resolve().parents[3]
PREDICTOR_DEPLOYMENT = "Predictor"
MONITOR_DEPLOYMENT = "Monitor"


class Autoscaling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)
    upscale_delay_s: float = Field(5, ge=0)
    downscale_delay_s: float = Field(60, ge=0)

    @model_validator(mode="after")
    def _order(self):
        if self.max_replicas < self.min_replicas:
            raise ValueError("autoscaling.max_replicas must be >= min_replicas")
        return self


class Alerts(BaseModel):
    """Alert thresholds, relative to the artifact's own validation figures where one exists:
    an honest model's confidence sits near 55%, so an absolute 60% floor would always fire."""

    model_config = ConfigDict(extra="forbid")
    share_shift_points: float = Field(10.0, gt=0, description="|live share predicted up - validation share| in points")
    confidence_drop: float = Field(0.03, gt=0, description="alert when mean confidence < validation mean - this")
    p99_latency_ms: float = Field(250.0, gt=0, description="latency SLO for the p99 of /v1/predict* requests")
    min_samples: int = Field(200, ge=1, description="samples (predictions, requests, distinct days for drift) a "
                                                     "figure needs before it is reported and judged")
    snapshot_max_age_days: float = Field(4.0, ge=0, description="alert when a model's newest scoring snapshot is "
                                                                "older than this many calendar days (a Friday's "
                                                                "snapshot on Monday is 3)")


AlertName = Literal["feature_drift", "prediction_distribution_shift", "low_confidence", "latency_slo"]


class RetrainOnAlert(BaseModel):
    """Submit ``ray_jobs/retrain.py`` for a model when one of its versions raises one of these
    alerts (serving/retrain_trigger.py). Off unless configured; at most one submission per model
    per ``min_interval_hours``, remembered in the model folder across restarts."""

    model_config = ConfigDict(extra="forbid")
    on: list[AlertName] = Field(default_factory=lambda: ["feature_drift"], min_length=1)
    min_interval_hours: float = Field(24.0, gt=0, description="no second submission for a model within this")
    check_every_s: float = Field(60.0, gt=0, description="how often the monitor looks at a version's alerts")
    args: list[str] = Field(default_factory=list, description="more retrain.py flags, e.g. ['--observe', '10d']")
    dashboard: str | None = Field(None, description="where to submit (default: $RAY_DASHBOARD_ADDRESS, else the "
                                                    "head the monitor's node belongs to)")


class ServeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field("models/msft_quick", description="the default model: models/<name> (follows 'latest') or a "
                                                       "version folder; or on object storage, s3://bucket/models/<name>")
    models: list[str] = Field(default_factory=list, description="more models served beside it, each addressed by "
                                                                "its folder's name (serving/routes.py)")
    max_models_per_replica: int = Field(4, ge=1, description="routed versions (every model's champion and "
                                                             "challenger) a replica holds, never unloaded while "
                                                             "routed; routes naming more are refused")
    max_pinned_models_per_replica: int = Field(2, ge=1, description="versions pinned as <name>/<version> beyond "
                                                                    "the routed ones a replica keeps loaded (least "
                                                                    "recently used out); others load on demand")
    backend: Literal[SETTINGS] = "onnx"  # type: ignore[valid-type]  # `auto`: chosen on each replica's node
    num_replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    num_cpus: float = Field(0.5, gt=0, description="CPU share reserved by each replica (fractional)")
    threads: int | None = Field(None, ge=1, description="torch/ONNX threads per replica (default: ceil(num_cpus))")
    num_gpus: float = Field(0.0, ge=0, le=1, description="GPU share reserved by each replica (fractional: replicas "
                                                          "pack on one card); with backend cuda or auto")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources each replica holds "
                                                                          "(a node type, e.g. {'serve_node': 1})")
    pinnable_versions: list[str] = Field(default_factory=list, description="versions beyond the routed ones a "
                                                                           "client may pin as <name>/<version> "
                                                                           "(['*']: any on disk)")
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="0: a batch is whatever queued while the last one ran")
    max_ongoing_requests: int = Field(64, ge=1, description="raised to max_batch_size if lower: it caps batches")
    inline_ms: float = Field(1.0, ge=0, description="a back-end call measured to take at most this runs on the "
                                                    "replica's event loop, not in a thread (0: always a thread)")
    max_windows_per_request: int = Field(256, ge=1, description="more windows in one request answer 413")
    max_tickers_per_request: int = Field(1000, ge=1, description="more tickers in one /v1/predict/tickers request "
                                                                 "answer 413")
    snapshot_poll_s: float = Field(30.0, gt=0, description="how often a replica looks for a newer scoring snapshot "
                                                           "(serving/snapshots.py)")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="larger bodies answer 413 (a windows body's "
                                                                        "cap is also derived from the largest valid "
                                                                        "request)")
    max_queued_requests: int = Field(128, ge=1, description="requests waiting for a replica beyond "
                                                            "max_ongoing_requests; more answer 503 with Retry-After "
                                                            "at once instead of timing out")
    retry_after_s: float = Field(1.0, ge=0, description="the Retry-After of every 503 (a full queue, a busy "
                                                        "featuriser, the monitor unavailable)")
    featurise_timeout_s: float = Field(5.0, gt=0, description="a bars request's featurisation is cut off (503) "
                                                              "past this")
    api_key_env: str = Field("STOCKTREND_API_KEY", description="when this variable is set, X-API-Key must match it")
    require_api_key: bool | None = Field(None, description="refuse to start without the key: true, false, or "
                                                           "null (default) for 'when HTTP is not on loopback'")
    monitoring_window: int = Field(5000, ge=10, description="predictions kept for /v1/monitoring (count window)")
    monitoring_minutes: float = Field(15.0, gt=0, description="the time window of /v1/monitoring, in minutes")
    monitoring_flush_s: float = Field(0.25, gt=0, description="how often replicas send records to the monitor")
    alerts: Alerts = Field(default_factory=Alerts)
    retrain_on_alert: RetrainOnAlert | None = Field(None, description="submit the retrain job on these alerts "
                                                                      "(off by default)")
    prediction_log: bool = Field(True, description="log every prediction to models/<name>/predictions/ (the "
                                                   "realised-outcome scorer reads it)")
    prediction_log_dir: str | None = Field(None, description="log to <dir>/<name>/predictions/ instead of beside "
                                                             "each model (a shared volume, a scratch folder)")
    prediction_log_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="a replica starts its next log "
                                                                                 "file past this size")
    health_check_period_s: float = Field(5.0, gt=0)
    access_log: bool = Field(False, description="Serve's per-request log line (about 6% of a replica's CPU)")
    request_log_every: int = Field(100, ge=1, description="the project's JSON request line in the replica's log: "
                                                          "every error, and one answered request in this many "
                                                          "(1: all; every prediction is in the prediction log)")

    @model_validator(mode="after")
    def _champions_fit(self):
        # Each replica holds every routed version: at least every model's champion.
        served = 1 + len(self.models)
        if served > self.max_models_per_replica:
            raise ValueError(f"{served} models served and max_models_per_replica is {self.max_models_per_replica}: "
                             f"a replica holds every model's champion, so raise it to at least {served}")
        return self

    @model_validator(mode="after")
    def _gpu_for_cuda(self):
        # Ray hides the GPUs from an actor that reserved none: a cuda replica without a
        # share would fail on its node, minutes later, instead of here.
        if self.backend == "cuda" and self.num_gpus == 0:
            raise ValueError("backend cuda needs a GPU share per replica: set num_gpus (e.g. 0.25)")
        return self

    @model_validator(mode="after")
    def _remote_models_need_no_local_writes(self):
        # A model on object storage is read through a node's mirror: what a replica writes
        # beside a model folder (prediction logs, the alert trigger's record and lock) would
        # stay on that node. Say so here rather than lose it there.
        remote = [m for m in [self.model, *self.models] if is_remote(m)]
        if remote and self.prediction_log and not self.prediction_log_dir:
            raise ValueError(f"models on object storage ({remote[0]}): the prediction log needs prediction_log_dir "
                             "(a shared folder), or prediction_log: false")
        if remote and self.retrain_on_alert is not None:
            raise ValueError("retrain_on_alert needs the model folder on a shared file system (its lock and "
                             f"record live there), not object storage ({remote[0]})")
        return self

    def resolved_model(self) -> str:
        return self.locate(self.model)

    def resolved_models(self) -> list[str]:
        return [self.locate(m) for m in self.models]

    @staticmethod
    def locate(given: str) -> str:
        """A model's location: an object-storage URI as given, a path resolved as below."""
        return normalise(given) if is_remote(given) else str(ServeArgs.resolve_path(given))

    @staticmethod
    def resolve_path(given: str) -> Path:
        """Relative paths are tried from the working folder, then from the project root
        (Serve builds applications in a worker whose folder is not the user's)."""
        path = Path(given).expanduser()
        if path.is_absolute() or path.exists():
            return path.resolve()
        return ROOT / path
