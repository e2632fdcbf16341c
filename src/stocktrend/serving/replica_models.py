"""The models one Serve replica serves: their folders, the routes, and the Predictors it holds.

Two kinds of version, held apart so one cannot push out the other:

- **routed** ones (each model's champion and challenger): loaded before the routes switch and
  held in a plain dict until the routes stop naming them, at most ``max_models_per_replica``.
  A request for one is a dict lookup; pinned traffic cannot evict a champion.
- **pinned** ones (a client naming ``<name>/<version>`` that no route names, where
  ``pinnable_versions`` allows it): loaded on demand from the verified artifact, at most
  ``max_pinned_models_per_replica`` kept (Ray Serve's ``serve.multiplexed``, least recently
  used out). The multiplexed loader is built here, from the args, rather than declared with a
  fixed bound on a method; the deployment keeps it as an attribute of its own, which is how
  Serve sees that it multiplexes.
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
        self.routed: dict[str, Predictor] = {}  # model id -> Predictor, replaced whole by set_routing
        # A closure, not the bound method: Serve keeps its LRU as an attribute of what it wraps.
        self.load_pinned = serve.multiplexed(max_num_models_per_replica=args.max_pinned_models_per_replica)(
            self._pinned_loader())

    async def load(self, model_id: str) -> Predictor:
        """The Predictor of ``model_id``: a routed one as held, any other through the pinned cache."""
        predictor = self.routed.get(model_id)
        return predictor if predictor is not None else await self.load_pinned(model_id)

    def _pinned_loader(self):
        async def load_model(model_id: str) -> Predictor:
            return await self._load(model_id)

        return load_model

    async def _load(self, model_id: str) -> Predictor:
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

    def _pinned(self) -> dict[str, Predictor]:
        """The pinned cache, least recently used first (Serve keeps its LRU on the wrapped
        function, once the first pinned request created it)."""
        wrapper = getattr(getattr(self.load_pinned, "__wrapped__", None), "__serve_multiplex_wrapper", None)
        return wrapper.models if wrapper is not None else {}

    def loaded(self) -> dict[str, list[str]]:
        """The model ids this replica holds: the routed ones, and the pinned ones least
        recently used first."""
        return {"routed": list(self.routed), "pinned": list(self._pinned())}

    def loaded_predictor(self, model_id: str) -> Predictor | None:
        """The Predictor of ``model_id`` if this replica holds it (no load)."""
        predictor = self.routed.get(model_id)
        return predictor if predictor is not None else self._pinned().get(model_id)

    async def set_routing(self, routing: Routing) -> None:
        unknown = sorted(set(routing.models) - set(self.model_dirs))
        if unknown:
            raise ValueError(f"routes name model(s) {unknown} that this application does not serve "
                             f"({sorted(self.model_dirs)}); add them to the builder's models")
        ids = routing.model_ids()
        if len(ids) > self.args.max_models_per_replica:
            raise ValueError(f"routes name {len(ids)} versions ({ids}) and a replica holds every routed version; "
                             f"max_models_per_replica is {self.args.max_models_per_replica}: raise it, or route "
                             f"fewer (a challenger is a second version of its model)")
        # Verified and loaded before the routes switch, so the first requests after a move do
        # not wait for a load (a version that fails to load fails the update: promote.py
        # verifies it before asking).
        for loc in self.locations.values():
            if storage.is_remote(loc):  # a version promoted since: copied to this node first
                await asyncio.to_thread(local_model_dir, loc)
        routed = {}
        for model_id in ids:
            held = self.loaded_predictor(model_id)
            routed[model_id] = held if held is not None else await self._load(model_id)
        # The held set first, then the routes: a request reading the new routes finds every
        # version they name held (one reading the old ones may load a version no longer routed
        # through the pinned cache; a request already holding a Predictor finishes with it).
        self.routed = routed
        self.routing = routing
        log.info("routes: %s", routing.model_dump())

    def default_version(self) -> str | None:
        return self.routing.models[self.routing.default].champion if self.routing else None

    FAILED_LOAD_TTL_S = 30.0

    async def predictor(self, sel: Selection) -> Predictor:
        """The Predictor answering ``sel``. A version that failed to load is not tried again
        for FAILED_LOAD_TTL_S: requests for it answer 503 at once instead of each paying for
        a load that fails."""
        predictor = self.routed.get(sel.model_id)  # the hot path: a routed version, as held
        if predictor is not None:
            return predictor
        failed = self.failed_loads.get(sel.model_id)
        if failed is not None and time.monotonic() - failed[0] < self.FAILED_LOAD_TTL_S:
            raise ApiError(503, "model", f"{sel.model_id} cannot be loaded: {failed[1]} (not retried for "
                                         f"{self.FAILED_LOAD_TTL_S:g} s)")
        try:
            return await self.load_pinned(sel.model_id)
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
