"""The Ray Serve application: a FastAPI ingress around ``Predictor``s, plus one ``Monitor``.

    GET  /healthz           liveness, with each served model's champion version
    GET  /v1/model          one model's version, back-end, configs, features, metrics, dates, and
                            what a bars request carries; every served model and its route
    POST /v1/predict        {"windows": [[[...]]]} (JSON) or one .npy array (application/x-npy);
                            ?attention=true adds the pooling weights to each prediction (and
                            a TFT-style model's per-feature selection weights); a multi-task
                            model adds "volatility" (annualised, next h days) to each
    POST /v1/predict/bars   {"bars": {"<source>": [{"date": ..., "<column>": ...}, ...]},
                             "ticker": "<instrument>" (panel models)}
    POST /v1/predict/tickers {"tickers": ["AAPL", ...], "as_of": "YYYY-MM-DD" (optional)}: a panel
                            model's answers from its newest scoring snapshot (serving/snapshots.py)
    GET  /v1/monitoring     rolling figures of one model's versions, and champion/challenger agreement
    OpenAPI at /docs.

Many models, one deployment (``serving/routes.py``): a request names a model with Ray Serve's
``serve_multiplexed_model_id`` header (which also routes it to a replica that has the model
loaded), or a ``model`` query parameter or body field, as ``<name>`` or ``<name>/<version>``;
none means the default model. Each replica holds every routed version (champions and
challengers, at most ``max_models_per_replica``) and keeps at most
``max_pinned_models_per_replica`` versions pinned by clients (``serve.multiplexed``, least
recently used out), loaded on demand from their verified artifacts; pinned traffic cannot
unload a routed version. The routes (champion, challenger, split, shadow) are the deployment's
user config, so a promotion or a moved split (``ray_jobs/promote.py``) is a lightweight
``reconfigure``: the versions named are loaded before the routes switch, and a
request already holding a Predictor finishes with it, so no request fails during a move.

This file holds the endpoints and the builder; the concerns live beside it: ``wire`` (bodies
in and out, the error contract), ``access`` (API key, request id), ``batching``
(``@serve.batch``), ``routes`` (which version answers), ``replica_models`` (the models a
replica holds), ``predlog`` (the durable prediction log), ``monitor`` and ``monitoring``
(records and figures), ``metrics`` (Prometheus).
Serving imports ``stocktrend.inference`` only, never training or tuning code.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint signatures at
# run time, through Serve's class-based ingress, and must see real types, not strings.
import asyncio
import functools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from stocktrend.config_io import config_to_dict
from stocktrend.inference.backends import Outputs
from stocktrend.inference.panel_bars import panel_instruments
from stocktrend.inference.predictor import InputError, Predictor
from stocktrend.serving import wire
from stocktrend.serving.access import authorize, check_key_policy, request_id, serve_host
from stocktrend.serving.batching import BatchedInference
from stocktrend.serving.config import PREDICTOR_DEPLOYMENT, ServeArgs
from stocktrend.serving.featurise import Featuriser
from stocktrend.serving.metrics import create_metrics
from stocktrend.serving.monitor import Monitor, MonitorUnavailable, RecordBuffer, call
from stocktrend.serving.predlog import PredictionLog
from stocktrend.serving.replica_models import ReplicaModels
from stocktrend.serving.routes import (
    Routing,
    Selection,
    initial_routing,
    model_folder_location,
    select,
    served_models,
    versions_on_disk,
)
from stocktrend.serving.snapshots import MAX_TICKER_BYTES, Snapshots, tickers_body, tickers_request
from stocktrend.serving.wire import ApiError

log = logging.getLogger(__name__)
# One JSON line per request, in the replica's Serve log (Serve routes its `ray.serve` loggers
# there, at the deployment's logging_config level, and adds its own request context).
request_log = logging.getLogger("ray.serve.stocktrend.requests")

api = FastAPI(
    title="stocktrend",
    description="5-day direction of a stock from its recent daily bars. Every answer carries the model version "
                "and an X-Request-Id header; errors are {\"error\": {\"field\", \"message\"}}. Name a model with "
                "the serve_multiplexed_model_id header or ?model= (<name> or <name>/<version>).",
    version="1",
)


MODEL_HEADER = "serve_multiplexed_model_id"  # Ray Serve's multiplexing header
CLIENT_HEADER = "x-client-id"  # keeps a client on one side of a champion/challenger split


def counted(handler):
    """Counts the replica's prediction requests in flight (``in_flight``): one alone may skip
    the batcher."""
    @functools.wraps(handler)  # FastAPI reads the handler's signature through it
    async def endpoint(self, request: Request) -> Response:
        self.in_flight += 1
        try:
            return await handler(self, request)
        finally:
            self.in_flight -= 1
    return endpoint


@serve.deployment(name=PREDICTOR_DEPLOYMENT)
@serve.ingress(api)
class PredictorDeployment:
    def __init__(self, args: dict[str, Any], model_dirs: dict[str, str], monitor: DeploymentHandle):
        import torch

        self.args = ServeArgs(**args)
        # Ray sets OMP threads from the actor's CPUs; set torch's and ONNX Runtime's explicitly.
        self.threads = self.args.threads or max(1, math.ceil(self.args.num_cpus))
        torch.set_num_threads(self.threads)
        self.monitor = monitor
        self.models = ReplicaModels(self.args, model_dirs, self.threads, monitor)
        self.load_model = self.models.load_pinned  # an attribute of the deployment: how Serve sees it multiplexes
        self.api_key = os.environ.get(self.args.api_key_env) or None
        check_key_policy(self.args.require_api_key, self.api_key, self.args.api_key_env,
                         None if self.args.require_api_key is not None else serve_host())
        self.infer = BatchedInference(self.args.max_batch_size, self.args.batch_wait_timeout_s, self.args.inline_ms)
        self.answered = 0  # requests answered 2xx: one in request_log_every is logged
        self.in_flight = 0  # prediction requests this replica is handling
        self.featurise = Featuriser(self.threads, self.args.featurise_timeout_s,
                                    max(self.args.max_ongoing_requests, self.args.max_batch_size))
        self.records = RecordBuffer(monitor, create_metrics(), self.args.monitoring_flush_s, self.models.announce)
        self.error_counter = self.records.metrics["errors"]
        log_dirs = {name: Path(self.args.prediction_log_dir) / name if self.args.prediction_log_dir else d
                    for name, d in self.models.model_dirs.items()}
        self.predlog = PredictionLog(log_dirs, serve.get_replica_context().replica_tag,
                                     self.args.monitoring_flush_s, self.args.prediction_log_max_bytes,
                                     self.args.prediction_log)
        self.snapshots = Snapshots(self.models.locations, self.args.snapshot_poll_s)
        self.shadow_tasks: set[asyncio.Task] = set()
        self.shadow_dropped = 0  # shadow scores skipped because max_batch_size of them were in flight

    async def check_health(self) -> None:
        """Serve's health check, every ``health_check_period_s``: the default model's champion
        (held by every replica once its routes are set) answers a probe window on its back-end,
        or this replica is replaced.
        (A monitor that is down is not this replica's fault: it fails no check.)"""
        routing = self.models.routing
        if routing is None:  # still loading its routes: /healthz says "loading"
            return
        model_id = f"{routing.default}/{routing.models[routing.default].champion}"
        predictor = self.models.loaded_predictor(model_id)
        if predictor is not None:
            probe = np.zeros((1, predictor.seq_len, predictor.n_features), np.float32)
            await asyncio.wait_for(asyncio.to_thread(predictor.backend, probe), timeout=30)

    # -- routes (user config) ---------------------------------------------------------------
    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        routing = Routing.from_user_config(user_config, next(iter(self.models.model_dirs)))
        await self.models.set_routing(routing)
        self.records.current = (routing.default, routing.models[routing.default].champion)

    def _selection(self, request: Request, body_model: str | None = None) -> Selection:
        raw = (serve.get_multiplexed_model_id() or request.headers.get(MODEL_HEADER)
               or request.query_params.get("model") or body_model)
        if raw is not None and not isinstance(raw, str):
            raise ApiError(422, "model", "must be a string: <name> or <name>/<version>")
        return select(self.models.routing, self.models.model_dirs, raw, request.headers.get(CLIENT_HEADER),
                      pinnable=self.args.pinnable_versions)

    def _answer(self, body: bytes, rid: str, endpoint: str, t0: float, status: int = 200, n: int = 0,
                sel: Selection | None = None) -> Response:
        if status < 300:  # a sample of the answered ones (each prediction is in the prediction log), every error
            skip = self.answered % self.args.request_log_every  # the first is logged
            self.answered += 1
            if skip:
                return Response(body, media_type=wire.JSON_MEDIA_TYPE)
        request_log.info("%s", orjson.dumps({"request_id": rid, "endpoint": endpoint, "status": status, "windows": n,
                                             "ms": round((time.perf_counter() - t0) * 1e3, 3),
                                             "model": sel.name if sel else None,
                                             "model_version": sel.version if sel else self.models.default_version(),
                                             "role": sel.role if sel else None}).decode())
        headers = {"Retry-After": f"{math.ceil(self.args.retry_after_s)}"} if status == 503 else None
        return Response(body, status_code=status, media_type=wire.JSON_MEDIA_TYPE, headers=headers)  # + X-Request-Id

    def _error(self, endpoint: str, err: ApiError | InputError, rid: str, t0: float,
               sel: Selection | None = None) -> Response:
        status = getattr(err, "status", 422)  # InputError: the Predictor refused the content
        if status < 500:
            self.records.client_error()
        self.error_counter.inc(tags={"endpoint": endpoint, "status": str(status)})
        version = sel.version if sel else self.models.default_version()
        return self._answer(wire.error_body(err, version), rid, endpoint, t0, status, sel=sel)

    async def _windows(self, request: Request, predictor: Predictor) -> Any:
        """The request's windows, its cost bounded before any array is built: the body read
        up to the largest valid request for this model, the count checked first."""
        kind = wire.media_type(request.headers.get("content-type"))
        if kind not in (wire.JSON_MEDIA_TYPE, wire.NPY_MEDIA_TYPE):
            raise ApiError(415, "Content-Type", f"{kind!r} is not accepted; send {wire.JSON_MEDIA_TYPE} or "
                                                f"{wire.NPY_MEDIA_TYPE}")
        most = self.args.max_windows_per_request
        limit = wire.windows_body_limit(kind, most, predictor.seq_len, predictor.n_features, self.args.max_body_bytes)
        raw = await wire.read_body(request, limit)
        if kind == wire.NPY_MEDIA_TYPE:
            return wire.windows_from_npy(raw, most)
        body = wire.json_object(raw, {"windows"}, {"windows"})
        return wire.windows_from_json(body["windows"], raw, most)

    async def _infer(self, predictor: Predictor, windows: np.ndarray) -> tuple[Outputs, int]:
        """The back-end's outputs for ``windows``, in pieces of at most ``max_batch_size``
        windows, each through the batcher: one large request cannot hold the queue for long."""
        size = self.args.max_batch_size
        if len(windows) <= size:
            # One turn of the loop first: requests that arrived with this one reach their
            # handlers (and count in in_flight) before it decides to run alone.
            await asyncio.sleep(0)
            return await self.infer.run(predictor, windows, alone=self.in_flight <= 1)
        parts = await asyncio.gather(*(self.infer.run(predictor, windows[i:i + size])
                                       for i in range(0, len(windows), size)))
        outs = [o for o, _ in parts]
        joined = Outputs(*(None if fields[0] is None else np.concatenate(fields) for fields in zip(*outs)))
        return joined, max(b for _, b in parts)

    @staticmethod
    def _wants_attention(request: Request) -> bool:
        value = request.query_params.get("attention", "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise ApiError(422, "attention", f"query parameter must be true or false, got {value!r}")
        return value in ("true", "1")

    def _observe(self, sel: Selection, predictor: Predictor, endpoint: str, t0: float, windows: np.ndarray,
                 probs: np.ndarray, batch: int, rid: str, client: str | None, as_of: str | None = None,
                 ticker: str | None = None, role: str | None = None) -> None:
        """Monitoring records and the prediction log: appends in memory, sent in the background."""
        self.records.observe(sel.name, predictor.version, endpoint, (time.perf_counter() - t0) * 1e3,
                             windows[:, -1, :], probs, batch)
        self.predlog.add(sel.name, {"t": time.time(), "request_id": rid, "client_id": client, "model": sel.name,
                                    "version": predictor.version, "role": role or sel.role, "endpoint": endpoint,
                                    "as_of": as_of, "ticker": ticker, "horizon": predictor.horizon,
                                    "p_up": probs[:, 1].astype(float).round(6).tolist()})

    def _shadow(self, sel: Selection, champion_probs: np.ndarray, endpoint: str, rid: str, client: str | None,
                windows: np.ndarray | None = None, bars: dict | None = None, ticker: str | None = None) -> None:
        """The challenger scores the same request after the answer has gone: the champion's
        windows (only reached when it takes the same ones) or its own windows from the bars.
        At most ``max_batch_size`` shadow scores are in flight; more are dropped and counted,
        so a slow challenger cannot build a backlog in front of the champion's answers."""
        if len(self.shadow_tasks) >= self.args.max_batch_size:
            self.shadow_dropped += 1
            return

        async def run() -> None:
            t0 = time.perf_counter()
            try:
                challenger = await self.models.load(f"{sel.name}/{sel.shadow}")
                x, as_of = windows, None
                if bars is not None:
                    x, dates = await self.featurise(challenger, bars, ticker)
                    as_of = dates[-1]
                res, batch = await self._infer(challenger, x)
                probs = res.probs
            except Exception:  # the shadow must never affect what clients get
                log.exception("shadow scoring by %s/%s failed", sel.name, sel.shadow)
                return
            self._observe(sel, challenger, endpoint, t0, x, probs, batch, rid, client, as_of, ticker, "shadow")
            self.records.agree(sel.name, sel.version, sel.shadow, champion_probs.argmax(1), probs.argmax(1))

        task = asyncio.get_running_loop().create_task(run())
        self.shadow_tasks.add(task)  # a reference until it ends (the loop keeps only weak ones)
        task.add_done_callback(self.shadow_tasks.discard)

    # -- endpoints --------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self, request: Request) -> Response:
        routing = self.models.routing
        body = orjson.dumps({"status": "ok" if routing else "loading", "model_version": self.models.default_version(),
                             "models": {n: r.champion for n, r in routing.models.items()} if routing else {}})
        return Response(body, media_type=wire.JSON_MEDIA_TYPE)

    def _served(self) -> list[dict[str, Any]]:
        routing, dirs = self.models.routing, self.models.model_dirs
        return [{"model": name, **route.model_dump(), "default": name == routing.default,
                 "versions": versions_on_disk(dirs[name])} for name, route in routing.models.items()]

    @api.get("/v1/model")
    async def model(self, request: Request) -> Response:
        rid, t0, sel = request_id(request.headers), time.perf_counter(), None
        try:
            authorize(request.headers, self.api_key)
            sel = self._selection(request)
            p = await self.models.predictor(sel)
        except ApiError as err:
            return self._error("model", err, rid, t0, sel)
        report = p.version_dir / "evaluation" / "report.json"
        test = json.loads(report.read_text()).get("test") if report.is_file() else None
        splits = p.training["dataset"]["splits"]
        return self._answer(wire.dumps({
            "model": sel.name, "model_version": p.version, "name": p.name, "role": sel.role,
            "backend": p.backend.name, "backend_setting": self.args.backend,
            "backend_reason": self.models.backend_reasons.get(sel.model_id, ""),
            "model_config": config_to_dict(p.model_cfg),
            "preprocessing": {k: p.preprocessing.get(k) for k in ("seq_len", "horizon", "bars_needed", "label",
                                                                  "label_rule", "layout", "tickers", "auxiliary")},
            # What each prediction holds: a multi-task model adds its volatility forecast.
            "outputs": ["direction", "p_up", "p_down", "confidence", *(["volatility"] if p.has_volatility else []),
                        "attention (?attention=true)",
                        *(["feature_weights (?attention=true)"] if p.model_cfg.family == "tft" else [])],
            "label": p.data_cfg.label,
            "features": p.features,
            "sources": {n: {"kind": s.kind, "columns": dict(s.columns)} for n, s in p.data_cfg.sources.items()},
            "target": p.data_cfg.target,
            "bars_request": panel_instruments(p) if p.is_panel else {"instruments": [p.data_cfg.ticker],
                                                                     "rows_needed_per_source": p.bars_needed},
            "training_dates": {s: {"start": splits[s]["start"], "end": splits[s]["end"]} for s in splits},
            "selection_metric": p.training.get("selection_metric"),
            "validation_metrics": p.training.get("val_metrics"),
            "validation_outputs": p.training.get("val_outputs"),
            "test_metrics": test,
            "created": p.training.get("created"), "git_commit": p.training.get("git_commit"),
            "request_limits": {"max_windows_per_request": self.args.max_windows_per_request,
                               "max_body_bytes": self.args.max_body_bytes},
            "served": self._served(), "loaded_on_this_replica": self.models.loaded(),
            "replica": serve.get_replica_context().replica_tag,
            # Back-end calls on this replica: a request alone skipping the batcher, batches on
            # the event loop, batches in a thread (batching.py).
            "inference_calls_on_this_replica": {"direct": self.infer.direct_calls, "inline": self.infer.inline_calls,
                                                "thread": self.infer.thread_calls},
        }), rid, "model", t0, sel=sel)

    @api.post("/v1/predict")
    @counted
    async def predict(self, request: Request) -> Response:
        rid, t0, sel = request_id(request.headers), time.perf_counter(), None
        try:
            authorize(request.headers, self.api_key)
            attention = self._wants_attention(request)
            sel = await self.models.for_windows(self._selection(request))
            predictor = await self.models.predictor(sel)
            windows = predictor.check_windows(await self._windows(request, predictor))
        except (ApiError, InputError) as err:
            return self._error("predict", err, rid, t0, sel)
        res, batch = await self._infer(predictor, windows)
        probs = res.probs
        client = request.headers.get(CLIENT_HEADER)
        self._observe(sel, predictor, "predict", t0, windows, probs, batch, rid, client)
        if sel.shadow:
            self._shadow(sel, probs, "predict", rid, client, windows=windows)
        body = wire.predictions_body(res, predictor.features, attention, model=sel.name, model_version=predictor.version)
        return self._answer(body, rid, "predict", t0, n=len(windows), sel=sel)

    @api.post("/v1/predict/bars")
    @counted
    async def predict_bars(self, request: Request) -> Response:
        rid, t0, sel = request_id(request.headers), time.perf_counter(), None
        try:
            authorize(request.headers, self.api_key)
            attention = self._wants_attention(request)
            raw = await wire.read_body(request, self.args.max_body_bytes)
            body = wire.json_object(raw, {"bars", "ticker", "model"}, {"bars"})
            sel = self._selection(request, body.get("model"))
            bars, ticker = body["bars"], body.get("ticker")
            if not isinstance(bars, dict) or not bars:
                raise ApiError(422, "bars", "must be an object mapping each source name to a list of daily rows")
            for name, rows in bars.items():
                if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
                    raise ApiError(422, f"bars.{name}", "must be a non-empty list of objects (one per day)")
            if ticker is not None and not isinstance(ticker, str):
                raise ApiError(422, "ticker", "must be a string (an instrument of the model)")
            predictor = await self.models.predictor(sel)
            windows, dates = await self.featurise(predictor, bars, ticker)
        except (ApiError, InputError) as err:
            return self._error("predict_bars", err, rid, t0, sel)
        res, batch = await self._infer(predictor, windows)
        probs = res.probs
        as_of, client = dates[-1], request.headers.get(CLIENT_HEADER)
        ticker = ticker.upper() if ticker else predictor.data_cfg.ticker
        self._observe(sel, predictor, "predict_bars", t0, windows, probs, batch, rid, client, as_of, ticker)
        if sel.shadow:
            self._shadow(sel, probs, "predict_bars", rid, client, bars=bars, ticker=ticker)
        body = wire.predictions_body(res, predictor.features, attention, model=sel.name,
                                     model_version=predictor.version, ticker=ticker, as_of=as_of, horizon_days=predictor.horizon,
                                     staleness_days=predictor.staleness_days(as_of))
        return self._answer(body, rid, "predict_bars", t0, n=len(windows), sel=sel)

    @api.post("/v1/predict/tickers")
    @counted
    async def predict_tickers(self, request: Request) -> Response:
        """Answered from the model's newest scoring snapshot, not computed here: the version
        is the one that scored it (``snapshot_version`` in /v1/monitoring when that is not the
        champion)."""
        rid, t0, sel = request_id(request.headers), time.perf_counter(), None
        try:
            authorize(request.headers, self.api_key)
            limit = self.args.max_tickers_per_request * (MAX_TICKER_BYTES + 8) + 1024
            body = wire.json_object(await wire.read_body(request, limit), {"tickers", "as_of", "model"}, {"tickers"})
            sel = self._selection(request, body.get("model"))
            tickers, as_of = tickers_request(body, self.args.max_tickers_per_request)
            if not (await self.models.predictor(sel)).is_panel:
                raise ApiError(422, "model", f"{sel.name} is a single-stock model: this endpoint answers panel models "
                                             "from their scoring snapshot; send its bars to /v1/predict/bars")
            snap = await self.snapshots.current(sel.name)
            if sel.role == "pinned" and sel.version != snap.meta["model_version"]:
                raise ApiError(404, "model", f"the newest snapshot of {sel.name!r} was scored by "
                                             f"{snap.meta['model_version']}, not {sel.version}")
            sel = Selection(name=sel.name, version=snap.meta["model_version"], role="snapshot")
            answer, n = tickers_body(sel.name, snap, tickers, as_of)
        except ApiError as err:
            return self._error("predict_tickers", err, rid, t0, sel)
        return self._answer(answer, rid, "predict_tickers", t0, n=n, sel=sel)

    @api.get("/v1/monitoring")
    async def monitoring(self, request: Request) -> Response:
        """The figures of the model's answering version (the champion, or the version named),
        its challenger's under "challenger", and their agreement in shadow mode."""
        rid, t0, sel = request_id(request.headers), time.perf_counter(), None
        try:
            authorize(request.headers, self.api_key)
            sel = self._selection(request)
            route = self.models.routing.models[sel.name]
            version = sel.version if sel.role == "pinned" else route.champion
            try:  # a monitor down or slow answers 503 here, and affects nothing else
                await self.records.deliver()  # this replica's latest records first
                summary = await call(self.monitor.summary.remote(sel.name, version))
                if route.challenger and sel.role != "pinned":
                    summary["challenger"] = await call(self.monitor.summary.remote(sel.name, route.challenger))
                    summary["route"] = route.model_dump()
                    summary["shadow_agreement"] = await call(self.monitor.agreement_summary.remote(sel.name))
                    summary["shadow_dropped_on_this_replica"] = self.shadow_dropped
            except MonitorUnavailable as err:
                raise ApiError(503, "monitoring", f"{err}; predictions are not affected, retry shortly") from None
            snapshot = await self.snapshots.status(sel.name, route.champion, self.args.alerts.snapshot_max_age_days)
            if snapshot is not None:
                summary["snapshot"] = snapshot
                summary["alerts"] = [*summary.get("alerts", []), *snapshot["alerts"]]
        except ApiError as err:
            return self._error("monitoring", err, rid, t0, sel)
        summary["records_dropped_on_this_replica"] = self.records.dropped
        return self._answer(wire.dumps(summary), rid, "monitoring", t0, sel=sel)


def build(args: ServeArgs) -> serve.Application:
    """The application builder named by ``serve/config.yaml`` (typed, validated args)."""
    if isinstance(args, dict):  # called from Python rather than by Serve
        args = ServeArgs(**args)
    served = served_models(args)
    routing = initial_routing(served)  # a deployed config's own user config (its routes) takes precedence
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": args.num_cpus, **({"num_gpus": args.num_gpus} if args.num_gpus else {}),
                              **({"resources": args.resources} if args.resources else {})},
        "max_ongoing_requests": max(args.max_ongoing_requests, args.max_batch_size),
        "max_queued_requests": args.max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": args.retry_after_s},
        "user_config": routing.user_config(),
        "health_check_period_s": args.health_check_period_s,
        "logging_config": {"enable_access_log": args.access_log},
    }
    if args.autoscaling is not None:
        options["autoscaling_config"] = args.autoscaling.model_dump()
    else:
        options["num_replicas"] = args.num_replicas
    # Each replica opens its models on its own node: a local folder as it is, a model on
    # object storage through that node's mirror (built in the replica, not here).
    folders = {n: model_folder_location(given, v) for given, (n, v) in zip([args.model, *args.models], served.items())}
    trigger = args.retrain_on_alert.model_dump() if args.retrain_on_alert else None
    monitor = Monitor.bind(args.alerts.model_dump(), args.monitoring_window, args.monitoring_minutes, trigger, folders)
    return PredictorDeployment.options(**options).bind(args.model_dump(), folders, monitor)
