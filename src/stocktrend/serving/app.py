"""The Ray Serve application: a FastAPI ingress around ``Predictor``, plus one ``Monitor``.

    GET  /healthz           liveness, with the model version
    GET  /v1/model          version, back-end, configs, features, validation and test metrics, dates
    POST /v1/predict        {"windows": [[[...]]]} (JSON) or one .npy array (application/x-npy);
                            ?attention=true adds the pooling weights to each prediction
    POST /v1/predict/bars   {"bars": {"<source>": [{"date": ..., "<column>": ...}, ...]}}
    GET  /v1/monitoring     rolling figures over the last predictions and the last minutes
    OpenAPI at /docs.

This file holds the routes and the builder; the concerns live beside it: ``wire`` (bodies in
and out, the error contract), ``access`` (API key, request id), ``batching`` (``@serve.batch``),
``monitor`` and ``monitoring`` (records and figures), ``metrics`` (Prometheus). The model
version is pinned in the deployment's user config, so a promotion (``ray_jobs/promote.py``)
is a lightweight ``reconfigure``: the new Predictor is loaded beside the old one and swapped
in between two batches, with no failed request. Serving imports ``stocktrend.inference``
only, never training or tuning code.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint signatures at
# run time, through Serve's class-based ingress, and must see real types, not strings.
import asyncio
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from stocktrend.config_io import config_to_dict
from stocktrend.inference.artifact import ArtifactError, resolve_version_dir
from stocktrend.inference.backends import resolve_backend
from stocktrend.inference.predictor import InputError, Predictor
from stocktrend.serving import wire
from stocktrend.serving.access import authorize, request_id
from stocktrend.serving.batching import BatchedInference
from stocktrend.serving.config import PREDICTOR_DEPLOYMENT, ServeArgs
from stocktrend.serving.metrics import create_metrics
from stocktrend.serving.monitor import Monitor, RecordBuffer
from stocktrend.serving.wire import ApiError

log = logging.getLogger(__name__)
# One JSON line per request, in the replica's Serve log (Serve routes its `ray.serve` loggers
# there, at the deployment's logging_config level, and adds its own request context).
request_log = logging.getLogger("ray.serve.stocktrend.requests")

api = FastAPI(
    title="stocktrend",
    description="5-day direction of a stock from its recent daily bars. Every answer carries the model version "
                "and an X-Request-Id header; errors are {\"error\": {\"field\", \"message\"}}.",
    version="1",
)


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
        self.backend_reason = ""
        self.monitor = monitor
        self.api_key = os.environ.get(self.args.api_key_env) or None
        self.infer = BatchedInference(self.args.max_batch_size, self.args.batch_wait_timeout_s)
        self.records = RecordBuffer(monitor, create_metrics(), self.args.monitoring_flush_s)
        self.error_counter = self.records.metrics["errors"]

    # -- model version (user config) ----------------------------------------------
    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        version = (user_config or {}).get("model_version")
        target = self.model_dir / version if version else resolve_version_dir(self.model_dir)
        if self.predictor is not None and target.resolve() == self.predictor.version_dir.resolve():
            return
        # `auto` is resolved here, on the replica's own node, from what this node has.
        backend, reason = resolve_backend(self.args.backend, target)
        predictor = await asyncio.to_thread(Predictor.from_artifact, target, backend, self.threads)
        self.predictor, self.backend_reason = predictor, reason  # requests holding the old one finish with it
        self.records.current = (predictor.name, predictor.version)
        await self.monitor.set_model.remote(predictor.name, predictor.version, predictor.feature_distribution,
                                            self._reference(predictor))
        log.info("serving %s/%s on %s (%s)", predictor.name, predictor.version, backend, reason)

    @staticmethod
    def _reference(p: Predictor) -> dict[str, Any]:
        ref = dict(p.training.get("val_outputs") or {})
        if "share_up" not in ref:  # older artifacts: the share predicted up from the confusion matrix
            cm = (p.training.get("val_metrics", {}) or {}).get("val_confmat") or [[0, 0], [0, 0]]
            total = sum(map(sum, cm))
            ref["share_up"] = (cm[0][1] + cm[1][1]) / total if total else None
        return ref

    # -- answers ----------------------------------------------------------------------------
    def _version(self) -> str | None:
        return self.predictor.version if self.predictor else None

    def _answer(self, body: bytes, rid: str, endpoint: str, t0: float, status: int = 200, n: int = 0) -> Response:
        request_log.info("%s", orjson.dumps({"request_id": rid, "endpoint": endpoint, "status": status, "windows": n,
                                             "ms": round((time.perf_counter() - t0) * 1e3, 3),
                                             "model_version": self._version()}).decode())
        return Response(body, status_code=status, media_type=wire.JSON_MEDIA_TYPE)  # Serve adds X-Request-Id

    def _error(self, endpoint: str, err: ApiError | InputError, rid: str, t0: float) -> Response:
        status = getattr(err, "status", 422)  # InputError: the Predictor refused the content
        self.records.client_error()
        self.error_counter.inc(tags={"endpoint": endpoint, "status": str(status)})
        return self._answer(wire.error_body(err, self._version()), rid, endpoint, t0, status)

    async def _windows(self, request: Request) -> tuple[Any, bytes]:
        limit = self.args.max_body_bytes
        wire.check_size(request.headers.get("content-length"), None, limit)
        kind = wire.media_type(request.headers.get("content-type"))
        if kind not in (wire.JSON_MEDIA_TYPE, wire.NPY_MEDIA_TYPE):
            raise ApiError(415, "Content-Type", f"{kind!r} is not accepted; send {wire.JSON_MEDIA_TYPE} or "
                                                f"{wire.NPY_MEDIA_TYPE}")
        raw = await request.body()
        wire.check_size(None, raw, limit)
        if kind == wire.NPY_MEDIA_TYPE:
            return wire.windows_from_npy(raw), raw
        body = wire.json_object(raw, {"windows"}, {"windows"})
        return wire.windows_from_json(body["windows"], raw), raw

    @staticmethod
    def _wants_attention(request: Request) -> bool:
        value = request.query_params.get("attention", "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise ApiError(422, "attention", f"query parameter must be true or false, got {value!r}")
        return value in ("true", "1")

    # -- endpoints --------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self, request: Request) -> Response:
        body = orjson.dumps({"status": "ok" if self.predictor else "loading", "model_version": self._version()})
        return Response(body, media_type=wire.JSON_MEDIA_TYPE)

    @api.get("/v1/model")
    async def model(self, request: Request) -> Response:
        rid, t0 = request_id(request.headers), time.perf_counter()
        try:
            authorize(request.headers, self.api_key)
        except ApiError as err:
            return self._error("model", err, rid, t0)
        p = self.predictor
        report = p.version_dir / "evaluation" / "report.json"
        test = json.loads(report.read_text()).get("test") if report.is_file() else None
        splits = p.training["dataset"]["splits"]
        return self._answer(wire.dumps({
            "model_version": p.version, "name": p.name, "backend": p.backend.name, "backend_setting": self.args.backend,
            "backend_reason": self.backend_reason,
            "model_config": config_to_dict(p.model_cfg),
            "preprocessing": {k: p.preprocessing.get(k) for k in ("seq_len", "horizon", "bars_needed", "label",
                                                                  "label_rule", "layout", "tickers")},
            "features": p.features,
            "sources": {n: {"kind": s.kind, "columns": dict(s.columns)} for n, s in p.data_cfg.sources.items()},
            "target": p.data_cfg.target,
            "training_dates": {s: {"start": splits[s]["start"], "end": splits[s]["end"]} for s in splits},
            "selection_metric": p.training.get("selection_metric"),
            "validation_metrics": p.training.get("val_metrics"),
            "validation_outputs": p.training.get("val_outputs"),
            "test_metrics": test,
            "created": p.training.get("created"), "git_commit": p.training.get("git_commit"),
            "request_limits": {"max_windows_per_request": self.args.max_windows_per_request,
                               "max_body_bytes": self.args.max_body_bytes},
        }), rid, "model", t0)

    @api.post("/v1/predict")
    async def predict(self, request: Request) -> Response:
        rid, t0 = request_id(request.headers), time.perf_counter()
        try:
            authorize(request.headers, self.api_key)
            attention = self._wants_attention(request)
            raw_windows, _ = await self._windows(request)
            predictor = self.predictor
            windows = predictor.check_windows(raw_windows)
            if len(windows) > self.args.max_windows_per_request:
                raise ApiError(413, "windows", f"{len(windows)} windows in one request; the limit is "
                                               f"{self.args.max_windows_per_request}")
        except (ApiError, InputError) as err:
            return self._error("predict", err, rid, t0)
        probs, att, batch = await self.infer((predictor, windows))
        self.records.observe(predictor.name, predictor.version, "predict", (time.perf_counter() - t0) * 1e3,
                             windows[:, -1, :], probs, batch)
        body = wire.predictions_body(probs, att if attention else None, model_version=predictor.version)
        return self._answer(body, rid, "predict", t0, n=len(windows))

    @api.post("/v1/predict/bars")
    async def predict_bars(self, request: Request) -> Response:
        rid, t0 = request_id(request.headers), time.perf_counter()
        try:
            authorize(request.headers, self.api_key)
            attention = self._wants_attention(request)
            wire.check_size(request.headers.get("content-length"), None, self.args.max_body_bytes)
            raw = await request.body()
            wire.check_size(None, raw, self.args.max_body_bytes)
            bars = wire.json_object(raw, {"bars"}, {"bars"})["bars"]
            if not isinstance(bars, dict) or not bars:
                raise ApiError(422, "bars", "must be an object mapping each source name to a list of daily rows")
            for name, rows in bars.items():
                if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
                    raise ApiError(422, f"bars.{name}", "must be a non-empty list of objects (one per day)")
            predictor = self.predictor
            windows, dates = await asyncio.to_thread(predictor.windows_from_bars, bars)
        except (ApiError, InputError) as err:
            return self._error("predict_bars", err, rid, t0)
        probs, att, batch = await self.infer((predictor, windows))
        self.records.observe(predictor.name, predictor.version, "predict_bars", (time.perf_counter() - t0) * 1e3,
                             windows[:, -1, :], probs, batch)
        as_of = dates[-1]
        body = wire.predictions_body(probs, att if attention else None, model_version=predictor.version, as_of=as_of,
                                     horizon_days=predictor.horizon, staleness_days=predictor.staleness_days(as_of))
        return self._answer(body, rid, "predict_bars", t0, n=len(windows))

    @api.get("/v1/monitoring")
    async def monitoring(self, request: Request) -> Response:
        rid, t0 = request_id(request.headers), time.perf_counter()
        try:
            authorize(request.headers, self.api_key)
        except ApiError as err:
            return self._error("monitoring", err, rid, t0)
        for pending in self.records.flush():  # this replica's latest records first
            await pending
        p = self.predictor
        summary = await self.monitor.summary.remote(p.name, p.version)
        return self._answer(wire.dumps(summary), rid, "monitoring", t0)


def build(args: ServeArgs) -> serve.Application:
    """The application builder named by ``serve/config.yaml`` (typed, validated args)."""
    if isinstance(args, dict):  # called from Python rather than by Serve
        args = ServeArgs(**args)
    try:
        version_dir = resolve_version_dir(args.resolved_model())
    except ArtifactError as err:
        raise ValueError(f"args.model: {err}") from None
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": args.num_cpus},
        "max_ongoing_requests": max(args.max_ongoing_requests, args.max_batch_size),
        "user_config": {"model_version": version_dir.name},
        "health_check_period_s": args.health_check_period_s,
        "logging_config": {"enable_access_log": args.access_log},
    }
    if args.autoscaling is not None:
        options["autoscaling_config"] = args.autoscaling.model_dump()
    else:
        options["num_replicas"] = args.num_replicas
    monitor = Monitor.bind(args.alerts.model_dump(), args.monitoring_window, args.monitoring_minutes)
    return PredictorDeployment.options(**options).bind(args.model_dump(), str(version_dir.parent), monitor)
