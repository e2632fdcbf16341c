"""The models one Serve replica serves: their folders, the routes, and the Predictors it holds.

At most ``max_models_per_replica`` Predictors are loaded at a time (Ray Serve's
``serve.multiplexed``, least recently used out); any other version of a served model loads on
demand from its verified artifact. The multiplexed loader is built here, from the args, rather
than declared with a fixed bound on a method; the deployment keeps it as an attribute of its
own, which is how Serve sees that it multiplexes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from ray import serve

from stocktrend import storage
from stocktrend.inference.artifact import ArtifactError, local_model_dir
from stocktrend.inference.backends import resolve_backend
from stocktrend.inference.predictor import Predictor
from stocktrend.serving.config import ServeArgs
from stocktrend.serving.monitor import MonitorUnavailable, call
from stocktrend.serving.routes import Routing, Selection
from stocktrend.serving.wire import ApiError

log = logging.getLogger(__name__)


class ReplicaModels:
    def __init__(self, args: ServeArgs, locations: dict[str, str], threads: int, monitor):
        self.args, self.threads, self.monitor = args, threads, monitor
        # {name: model folder location}: local folders as they are; a model on object
        # storage is opened through this node's mirror, refreshed when the routes change.
        self.locations = locations
        self.model_dirs: dict[str, Path] = {name: local_model_dir(loc) for name, loc in locations.items()}
        self.routing: Routing | None = None
        self.backend_reasons: dict[str, str] = {}
        self.same_inputs: dict[tuple[str, str, str], bool] = {}
        # What the monitor is told of each version loaded here (small: not the Predictor, which
        # the multiplexer may evict), to tell a restarted monitor again.
        self.announced: dict[str, tuple[dict, dict]] = {}
        self.failed_loads: dict[str, tuple[float, str]] = {}  # model id -> (when, why)
        self.load = serve.multiplexed(max_num_models_per_replica=args.max_models_per_replica)(self._loader())

    def _loader(self):
        async def load_model(model_id: str) -> Predictor:
            name, version = model_id.split("/", 1)
            target = self.model_dirs[name] / version
            t0 = time.perf_counter()
            # `auto` is resolved here, on the replica's own node, from what this node has.
            backend, reason = resolve_backend(self.args.backend, target)
            predictor = await asyncio.to_thread(Predictor.from_artifact, target, backend, self.threads)
            self.backend_reasons[model_id] = reason
            self.announced[model_id] = (predictor.feature_distribution, reference(predictor))
            await self.announce(name, version)
            log.info("loaded %s on %s in %.0f ms (%s)", model_id, backend, (time.perf_counter() - t0) * 1e3, reason)
            return predictor

        return load_model

    async def announce(self, name: str, version: str) -> None:
        """Tell the monitor about a loaded version (what its figures are compared with). A
        monitor that is down or slow delays no load by more than the call's timeout and fails
        none: its figures for this version start when it is told again (RecordBuffer does,
        when the monitor says it does not know a version)."""
        told = self.announced.get(f"{name}/{version}")
        if told is None:
            return
        try:
            await call(self.monitor.set_model.remote(name, version, *told), what="the monitor (announcing a model)")
        except MonitorUnavailable as err:
            log.warning("%s/%s loaded, not yet monitored: %s", name, version, err)

    def loaded(self) -> list[str]:
        """The model ids this replica holds, least recently used first (Serve keeps its LRU
        on the wrapped function)."""
        wrapper = getattr(getattr(self.load, "__wrapped__", None), "__serve_multiplex_wrapper", None)
        return list(wrapper.models) if wrapper is not None else []

    def loaded_predictor(self, model_id: str) -> Predictor | None:
        """The Predictor of ``model_id`` if this replica holds it (no load)."""
        wrapper = getattr(getattr(self.load, "__wrapped__", None), "__serve_multiplex_wrapper", None)
        return wrapper.models.get(model_id) if wrapper is not None else None

    async def set_routing(self, routing: Routing) -> None:
        unknown = sorted(set(routing.models) - set(self.model_dirs))
        if unknown:
            raise ValueError(f"routes name model(s) {unknown} that this application does not serve "
                             f"({sorted(self.model_dirs)}); add them to the builder's models")
        if self.args.max_models_per_replica < 2 and any(r.challenger for r in routing.models.values()):
            raise ValueError("a challenger needs max_models_per_replica >= 2 (champion and challenger loaded "
                             "together); with 1, every request would load a model")
        # Verified and loaded before the routes switch, so the first requests after a move do
        # not wait for a load (a version that fails to load fails the update: promote.py
        # verifies it before asking).
        for loc in self.locations.values():
            if storage.is_remote(loc):  # a version promoted since: copied to this node first
                await asyncio.to_thread(local_model_dir, loc)
        for model_id in routing.model_ids()[: self.args.max_models_per_replica]:
            await self.load(model_id)
        self.routing = routing
        log.info("routes: %s", routing.model_dump())

    def default_version(self) -> str | None:
        return self.routing.models[self.routing.default].champion if self.routing else None

    FAILED_LOAD_TTL_S = 30.0

    async def predictor(self, sel: Selection) -> Predictor:
        """The Predictor answering ``sel``. A version that failed to load is not tried again
        for FAILED_LOAD_TTL_S: requests for it answer 503 at once instead of each paying for
        a load that fails."""
        failed = self.failed_loads.get(sel.model_id)
        if failed is not None and time.monotonic() - failed[0] < self.FAILED_LOAD_TTL_S:
            raise ApiError(503, "model", f"{sel.model_id} cannot be loaded: {failed[1]} (not retried for "
                                         f"{self.FAILED_LOAD_TTL_S:g} s)")
        try:
            return await self.load(sel.model_id)
        except (ArtifactError, OSError) as err:  # a version that cannot be loaded or verified
            self.failed_loads[sel.model_id] = (time.monotonic(), str(err))
            raise ApiError(503, "model", f"{sel.model_id} cannot be loaded: {err}") from None

    async def for_windows(self, sel: Selection) -> Selection:
        """Scaled windows fit one version's inputs: a request posting them for ``<name>``
        reaches the challenger (split or shadow) only when it takes exactly the champion's
        windows (features, scaler, window length); a retrained challenger, with its own
        scaler, is reached by bars requests, or by naming ``<name>/<version>``."""
        if sel.role != "challenger" and not sel.shadow:
            return sel
        route = self.routing.models[sel.name]
        key = (sel.name, route.champion, route.challenger)
        if key not in self.same_inputs:
            a = await self.predictor(Selection(name=sel.name, version=route.champion, role="champion"))
            b = await self.predictor(Selection(name=sel.name, version=route.challenger, role="challenger"))
            self.same_inputs[key] = a.input_signature == b.input_signature
        if self.same_inputs[key]:
            return sel
        return Selection(name=sel.name, version=route.champion, role="champion")


def reference(p: Predictor) -> dict[str, Any]:
    """The validation figures monitoring compares live traffic with."""
    ref = dict(p.training.get("val_outputs") or {})
    if "share_up" not in ref:  # older artifacts: the share predicted up from the confusion matrix
        cm = (p.training.get("val_metrics", {}) or {}).get("val_confmat") or [[0, 0], [0, 0]]
        total = sum(map(sum, cm))
        ref["share_up"] = (cm[0][1] + cm[1][1]) / total if total else None
    return ref
