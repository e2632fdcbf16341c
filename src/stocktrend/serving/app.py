"""The Ray Serve application: a FastAPI ingress around ``Predictor``, plus one ``Monitor``.

    GET  /healthz           liveness, with the model version
    GET  /v1/model          version, configs, features, validation and test metrics, dates
    POST /v1/predict        {"windows": [[[...]]]}  scaled windows, features in artifact order
    POST /v1/predict/bars   {"bars": {"<source>": [{"date": ..., "<column>": ...}, ...]}}
    GET  /v1/monitoring     rolling prediction distribution, confidence, latency, drift, alerts
    OpenAPI at /docs.

Model inference goes through ``@serve.batch``: concurrent requests are stacked into one
call of the back-end. The model version is pinned in the deployment's user config, so a
promotion (``ray_jobs/promote.py``) is a lightweight ``reconfigure``: the new Predictor is
loaded beside the old one and swapped in between two batches, with no failed request.
Serving imports ``stocktrend.inference`` only, never training or tuning code.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint signatures at
# run time, through Serve's class-based ingress, and must see real types, not strings.
import asyncio
import hmac
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from stocktrend.config_io import config_to_dict
from stocktrend.inference.artifact import ArtifactError, resolve_version_dir
from stocktrend.inference.predictor import InputError, Predictor
from stocktrend.serving.config import MONITOR_DEPLOYMENT, PREDICTOR_DEPLOYMENT, ServeArgs
from stocktrend.serving.monitoring import RollingStats

log = logging.getLogger(__name__)

class ApiError(Exception):
    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


api = FastAPI(
    title="stocktrend",
    description="5-day direction of a stock from its recent daily bars. Every answer carries the model version; "
                "errors are {\"error\": {\"field\", \"message\"}}.",
    version="1",
)


@serve.deployment(name=MONITOR_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})
class Monitor:
    """Aggregates every replica's records over a rolling window (one replica, no CPU)."""

    def __init__(self, alerts: dict[str, Any], window: int):
        self.alerts, self.window = alerts, window
        self.version: str | None = None
        self.stats: RollingStats | None = None

    def set_model(self, version: str, feature_distribution: dict, reference: dict) -> None:
        if version != self.version:  # every replica announces its model; reset once per version
            self.version = version
            self.stats = RollingStats(feature_distribution, reference, self.alerts, self.window)

    def record(self, version: str, batch: dict[str, Any]) -> None:
        if self.stats is not None and version == self.version:
            self.stats.add(batch)

    def summary(self) -> dict[str, Any]:
        if self.stats is None:
            return {"model_version": None}
        return {"model_version": self.version, **self.stats.summary()}


def _metrics():
    from ray.serve.metrics import Counter, Histogram

    return {
        "predictions": Counter("stocktrend_predictions", description="predictions served, by predicted direction",
                               tag_keys=("direction", "model_version")),
        "confidence": Histogram("stocktrend_confidence", description="max(p_up, p_down) of each prediction",
                                boundaries=[0.5, 0.525, 0.55, 0.575, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0],
                                tag_keys=("model_version",)),
        "latency": Histogram("stocktrend_request_latency_ms", description="request handling time in the replica",
                             boundaries=[1, 2, 3, 5, 10, 20, 50, 100, 250, 500, 1000, 5000],
                             tag_keys=("endpoint",)),
        "errors": Counter("stocktrend_client_errors", description="requests answered 4xx",
                          tag_keys=("endpoint", "status")),
    }


def _windows_array(value: Any) -> np.ndarray:
    """Numbers only: JSON strings such as "1.5" and booleans are refused, not coerced."""
    if not isinstance(value, list) or not value:
        raise ApiError(422, "windows", "must be a non-empty list of windows (n x seq_len x features numbers)")
    try:
        raw = np.asarray(value)
    except ValueError:
        raise ApiError(422, "windows", "ragged: every window needs the same number of days and features") from None
    if raw.dtype.kind not in "iuf":
        raise ApiError(422, "windows", f"values must be numbers (got JSON {raw.dtype.kind!r} data: strings, "
                                       "booleans, nulls or a ragged nesting)")
    return raw.astype(np.float32, copy=False)


@serve.deployment(name=PREDICTOR_DEPLOYMENT)
@serve.ingress(api)
class PredictorDeployment:
    def __init__(self, args: dict[str, Any], model_dir: str, monitor: DeploymentHandle):
        import torch

        self.args = ServeArgs(**args)
        # Ray sets OMP threads from the actor's CPUs; set torch's and ONNX Runtime's explicitly.
        self.threads = self.args.threads or max(1, math.ceil(self.args.num_cpus))
        torch.set_num_threads(self.threads)
        self.model_dir = Path(model_dir)
        self.predictor: Predictor | None = None
        self.monitor = monitor
        self.api_key = os.environ.get(self.args.api_key_env) or None
        self._infer.set_max_batch_size(self.args.max_batch_size)
        self._infer.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)
        self.metrics = _metrics()
        self.buffer = self._empty_buffer()
        self.flusher: asyncio.Task | None = None

    # -- model version (user config) ----------------------------------------------
    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        version = (user_config or {}).get("model_version")
        target = self.model_dir / version if version else resolve_version_dir(self.model_dir)
        if self.predictor is not None and target.resolve() == self.predictor.version_dir.resolve():
            return
        predictor = await asyncio.to_thread(Predictor.from_artifact, target, self.args.backend, self.threads)
        self.predictor = predictor  # requests already holding the old one finish with it
        await self.monitor.set_model.remote(predictor.version, predictor.feature_distribution, self._reference(predictor))
        log.info("serving %s/%s on %s", predictor.name, predictor.version, self.args.backend)

    @staticmethod
    def _reference(p: Predictor) -> dict[str, Any]:
        ref = dict(p.training.get("val_outputs") or {})
        if "share_up" not in ref:  # older artifacts: the share predicted up from the confusion matrix
            cm = np.asarray(p.training.get("val_metrics", {}).get("val_confmat") or [[0, 0], [0, 0]])
            ref["share_up"] = float(cm[:, 1].sum() / cm.sum()) if cm.sum() else None
        return ref

    # -- batching -----------------------------------------------------------------------
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _infer(self, items: list[tuple[Predictor, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray, str, int]]:
        """Each request runs on the Predictor it was validated (or featurised) with: during a
        promotion one batch may hold requests for the old and the new model, each is answered
        by its own, so a swap can neither fail a request nor feed one model's windows to another."""
        out: list = [None] * len(items)
        for predictor in {id(p): p for p, _ in items}.values():
            idx = [i for i, (p, _) in enumerate(items) if p is predictor]
            sizes = np.cumsum([len(items[i][1]) for i in idx])[:-1]
            x = np.concatenate([items[i][1] for i in idx])
            probs, attention = await asyncio.to_thread(predictor.backend, x)
            for i, p, a in zip(idx, np.split(probs, sizes), np.split(attention, sizes)):
                out[i] = (p, a, predictor.version, len(items))
        return out

    # -- monitoring records -----------------------------------------------------------------
    @staticmethod
    def _empty_buffer() -> dict[str, Any]:
        return {"classes": [], "confidence": [], "last_day": [], "latency_ms": [], "batch_sizes": [],
                "endpoints": [], "errors_4xx": 0, "version": None}

    def _observe(self, endpoint: str, t0: float, windows: np.ndarray, probs: np.ndarray, version: str,
                 batch: int) -> None:
        ms = (time.perf_counter() - t0) * 1e3
        b = self.buffer
        if b["version"] not in (None, version):
            self._start_flush()
        b = self.buffer
        b["version"] = version
        b["classes"].extend(probs.argmax(1).tolist())
        b["confidence"].extend(probs.max(1).tolist())
        b["last_day"].extend(windows[:, -1, :].tolist())
        b["latency_ms"].append(ms)
        b["batch_sizes"].append(batch)
        b["endpoints"].append(endpoint)
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self.flusher is None:
            self.flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def _start_flush(self) -> asyncio.Future | None:
        b, self.buffer = self.buffer, self._empty_buffer()
        if not b["latency_ms"] and not b["errors_4xx"]:
            return None
        version = b.pop("version") or (self.predictor.version if self.predictor else "")
        self._export_metrics(version, b)
        return self.monitor.record.remote(version, b)

    def _export_metrics(self, version: str, b: dict[str, Any]) -> None:
        """Prometheus metrics, recorded per flush rather than per request: each Ray metric call
        costs about as much as parsing a request, so it stays off the request path."""
        ups = sum(b["classes"])
        for direction, n in (("up", ups), ("down", len(b["classes"]) - ups)):
            if n:
                self.metrics["predictions"].inc(n, tags={"direction": direction, "model_version": version})
        for conf in b["confidence"]:
            self.metrics["confidence"].observe(conf, tags={"model_version": version})
        for ms, endpoint in zip(b["latency_ms"], b.pop("endpoints")):
            self.metrics["latency"].observe(ms, tags={"endpoint": endpoint})

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.args.monitoring_flush_s)
            try:
                pending = self._start_flush()
                if pending is not None:
                    await pending
            except Exception:  # the monitor restarting must never break serving
                log.exception("could not send monitoring records")

    # -- request plumbing -------------------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        """Every /v1 endpoint calls this; /healthz and the OpenAPI pages stay open."""
        if self.api_key is None:
            return
        given = request.headers.get("x-api-key")
        if given is None:
            raise ApiError(401, "X-API-Key", "missing API key header")
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(401, "X-API-Key", "wrong API key")

    async def _json_body(self, request: Request, allowed: set[str]) -> tuple[dict[str, Any], bytes]:
        limit = self.args.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "body", f"{int(declared)} bytes is over the limit of {limit}")
        raw = await request.body()
        if len(raw) > limit:
            raise ApiError(413, "body", f"{len(raw)} bytes is over the limit of {limit}")
        if not raw:
            raise ApiError(400, "body", "empty body; send a JSON object")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, "body", f"not valid JSON ({err})") from None
        if not isinstance(body, dict):
            raise ApiError(422, "body", f"expected a JSON object, got {type(body).__name__}")

        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(422, unknown[0] or '""', f"unknown field; this endpoint takes {sorted(allowed)}")
        missing = sorted(allowed - set(body))
        if missing:
            raise ApiError(422, missing[0], "required field is missing")
        return body, raw

    def _error(self, endpoint: str, err: ApiError | InputError) -> JSONResponse:
        status = getattr(err, "status", 422)  # InputError: the Predictor refused the content
        self.buffer["errors_4xx"] += 1
        self._ensure_flusher()
        self.metrics["errors"].inc(tags={"endpoint": endpoint, "status": str(status)})
        return JSONResponse({"error": {"field": err.field, "message": err.message}, "model_version": self._version()},
                            status_code=status)

    def _version(self) -> str | None:
        return self.predictor.version if self.predictor else None

    @staticmethod
    def _prediction(p: np.ndarray, a: np.ndarray) -> dict[str, Any]:
        return {"direction": "up" if p[1] > p[0] else "down", "p_up": float(p[1]), "p_down": float(p[0]),
                "confidence": float(p.max()), "attention": a.tolist()}

    # -- endpoints --------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok" if self.predictor else "loading", "model_version": self._version()}

    @api.get("/v1/model")
    async def model(self, request: Request):
        try:
            self._authorize(request)
        except ApiError as err:
            return self._error("model", err)
        p = self.predictor
        report = p.version_dir / "evaluation" / "report.json"
        test = json.loads(report.read_text()).get("test") if report.is_file() else None
        splits = p.training["dataset"]["splits"]
        return {
            "model_version": p.version, "name": p.name, "backend": self.args.backend,
            "model_config": config_to_dict(p.model_cfg),
            "preprocessing": {k: p.preprocessing[k] for k in ("seq_len", "horizon", "bars_needed", "label_rule")},
            "features": p.features,
            "sources": {n: {"kind": s.kind, "columns": dict(s.columns)} for n, s in p.data_cfg.sources.items()},
            "target": p.data_cfg.target,
            "training_dates": {s: {"start": splits[s]["start"], "end": splits[s]["end"]} for s in splits},
            "selection_metric": p.training.get("selection_metric"),
            "validation_metrics": p.training.get("val_metrics"),
            "validation_outputs": p.training.get("val_outputs"),
            "test_metrics": test,
            "created": p.training.get("created"), "git_commit": p.training.get("git_commit"),
        }

    @api.post("/v1/predict")
    async def predict(self, request: Request):
        t0 = time.perf_counter()
        try:
            self._authorize(request)
            body, raw = await self._json_body(request, {"windows"})
            if b"true" in raw or b"false" in raw:
                # numpy turns a boolean among numbers into 0.0/1.0; the body has one field, so a
                # JSON boolean token anywhere in it is inside the windows (or in a string, refused too).
                raise ApiError(422, "windows", "values must be numbers (got a JSON boolean)")
            predictor = self.predictor
            windows = predictor.check_windows(_windows_array(body["windows"]))
            if len(windows) > self.args.max_windows_per_request:
                raise ApiError(413, "windows", f"{len(windows)} windows in one request; the limit is "
                                               f"{self.args.max_windows_per_request}")
        except (ApiError, InputError) as err:
            return self._error("predict", err)
        probs, attention, version, batch = await self._infer((predictor, windows))
        self._observe("predict", t0, windows, probs, version, batch)
        return {"model_version": version, "predictions": [self._prediction(p, a) for p, a in zip(probs, attention)]}

    @api.post("/v1/predict/bars")
    async def predict_bars(self, request: Request):
        t0 = time.perf_counter()
        try:
            self._authorize(request)
            body, _ = await self._json_body(request, {"bars"})
            bars = body["bars"]
            if not isinstance(bars, dict) or not bars:
                raise ApiError(422, "bars", "must be an object mapping each source name to a list of daily rows")
            for name, rows in bars.items():
                if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
                    raise ApiError(422, f"bars.{name}", "must be a non-empty list of objects (one per day)")
            predictor = self.predictor
            windows, dates = await asyncio.to_thread(predictor.windows_from_bars, bars)
        except (ApiError, InputError) as err:
            return self._error("predict_bars", err)
        probs, attention, version, batch = await self._infer((predictor, windows))
        self._observe("predict_bars", t0, windows, probs, version, batch)
        as_of = dates[-1]
        return {
            "model_version": version, "as_of": as_of, "horizon_days": predictor.horizon,
            "staleness_days": predictor.staleness_days(as_of),
            "predictions": [self._prediction(p, a) for p, a in zip(probs, attention)],
        }

    @api.get("/v1/monitoring")
    async def monitoring(self, request: Request):
        try:
            self._authorize(request)
        except ApiError as err:
            return self._error("monitoring", err)
        pending = self._start_flush()  # this replica's latest records first
        if pending is not None:
            await pending
        return {**await self.monitor.summary.remote(), "model_version": self._version()}


def _model_dir_and_version(model: Path) -> tuple[Path, str]:
    version_dir = resolve_version_dir(model)
    return version_dir.parent, version_dir.name


def build(args: ServeArgs) -> serve.Application:
    """The application builder named by ``serve/config.yaml`` (typed, validated args)."""
    if isinstance(args, dict):  # called from Python rather than by Serve
        args = ServeArgs(**args)
    try:
        model_dir, version = _model_dir_and_version(args.resolved_model())
    except ArtifactError as err:
        raise ValueError(f"args.model: {err}") from None
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": args.num_cpus},
        "max_ongoing_requests": max(args.max_ongoing_requests, args.max_batch_size),
        "user_config": {"model_version": version},
        "health_check_period_s": args.health_check_period_s,
        "logging_config": {"enable_access_log": args.access_log},
    }
    if args.autoscaling is not None:
        options["autoscaling_config"] = args.autoscaling.model_dump()
    else:
        options["num_replicas"] = args.num_replicas
    monitor = Monitor.bind(args.alerts.model_dump(), args.monitoring_window)
    return PredictorDeployment.options(**options).bind(args.model_dump(), str(model_dir), monitor)
