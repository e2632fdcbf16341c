"""The ``Monitor`` deployment and the replicas' side of it.

Replicas keep records in a buffer (appends only: no Ray call, no metric call on the request
path) and send it every ``monitoring_flush_s`` to the one ``Monitor`` replica, which keeps a
``RollingStats`` per model name and version, so several models (and a model's old and new
version during a promotion) share it without mixing their figures.

The monitor can never fail the service: its methods are ``async`` (they run one at a time on
its event loop, so a summary never iterates a deque a record is extending); every call from a
replica's request or load path has a timeout (``call``) and a monitor that is down or slow
degrades monitoring only; a replica's buffer is bounded and holds copies of the few values it
keeps, never views that would keep whole request arrays alive; the Prometheus export runs off
the event loop; and a monitor that restarted (and so forgot the models) is told them again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from ray import serve

from stocktrend.serving.config import MONITOR_DEPLOYMENT
from stocktrend.serving.metrics import export_records
from stocktrend.serving.monitoring import RollingStats

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5.0  # the longest a replica waits for the monitor on a request or load path
MAX_BUFFERED = 50_000  # predictions a replica keeps between two flushes (a monitor down for long)


class MonitorUnavailable(RuntimeError):
    pass


async def call(response: Awaitable, timeout_s: float = CALL_TIMEOUT_S, what: str = "the monitor") -> Any:
    """The monitor's answer within ``timeout_s``, else MonitorUnavailable (never a hang)."""
    async def wait() -> Any:
        return await response

    try:
        return await asyncio.wait_for(wait(), timeout_s)
    except TimeoutError:
        raise MonitorUnavailable(f"{what} did not answer within {timeout_s:g} s") from None
    except Exception as err:  # the monitor replica died, is restarting, or failed
        raise MonitorUnavailable(f"{what} failed: {type(err).__name__}: {err}") from None


@serve.deployment(name=MONITOR_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})
class Monitor:
    """Aggregates every replica's records over rolling windows (one replica, no CPU)."""

    GAUGE_EVERY_S = 30.0

    def __init__(self, alerts: dict[str, Any], window: int, minutes: float, retrain_on_alert: dict | None = None,
                 model_dirs: dict[str, str] | None = None):
        from stocktrend.serving.metrics import create_metrics
        from stocktrend.serving.retrain_trigger import RetrainTrigger

        self.alerts, self.window, self.minutes = alerts, window, minutes
        self.trigger = RetrainTrigger(retrain_on_alert, model_dirs or {}) if retrain_on_alert else None
        self.stats: dict[tuple[str, str], RollingStats] = {}
        self.drifted_gauge = create_metrics()["drifted"]
        self.gauge_at: dict[tuple[str, str], float] = {}
        # Shadow mode: (model, champion, challenger) -> [windows scored by both, same class]
        self.agreement: dict[tuple[str, str, str], list[int]] = {}

    async def set_model(self, name: str, version: str, feature_distribution: dict, reference: dict) -> None:
        if (name, version) not in self.stats:  # every replica announces its model; keep the first
            self.stats[(name, version)] = RollingStats(feature_distribution, reference, self.alerts, self.window,
                                                       self.minutes)

    async def record(self, name: str, version: str, batch: dict[str, Any]) -> bool:
        """False when this monitor does not know the version (it restarted since the replica
        announced it): the replica announces it again."""
        stats = self.stats.get((name, version))
        if stats is None:
            return False
        stats.add(batch)
        if time.monotonic() - self.gauge_at.get((name, version), 0.0) > self.GAUGE_EVERY_S:  # Grafana's drift panel
            self.gauge_at[(name, version)] = time.monotonic()
            drift = stats.summary()["windows"]["count"]["drift"]
            self.drifted_gauge.set(len(drift.get("drifted_features", [])), tags={"model": name, "model_version": version})
        if self.trigger is not None and self.trigger.due(name, version):
            try:
                self.trigger.consider(name, version, stats.summary()["alerts"])
            except Exception:  # acting on an alert must never break the monitor
                log.exception("retrain trigger for %s/%s failed", name, version)
        return True

    async def record_agreement(self, counts: dict[tuple[str, str, str], list[int]]) -> None:
        for key, (n, same) in counts.items():
            total = self.agreement.setdefault(tuple(key), [0, 0])
            total[0] += n
            total[1] += same

    async def agreement_summary(self, name: str) -> list[dict[str, Any]]:
        """Champion/challenger class agreement on the windows both scored (shadow mode)."""
        return [{"champion": c, "challenger": ch, "windows": n, "agreement": same / n if n else None}
                for (m, c, ch), (n, same) in self.agreement.items() if m == name]

    async def summary(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """One model version's figures, or every one's under "models" when not named."""
        if name is not None:
            stats = self.stats.get((name, version))
            return {"model": name, "model_version": version, **(stats.summary() if stats else {"status": "no traffic"})}
        return {"models": [{"model": n, "model_version": v, **s.summary()} for (n, v), s in self.stats.items()]}


class RecordBuffer:
    """One replica's records since the last flush, per model version, at most MAX_BUFFERED
    predictions (more are dropped and counted while the monitor cannot take them)."""

    def __init__(self, monitor, metrics: dict, flush_s: float,
                 announce: Callable[[str, str], Awaitable[None]] | None = None):
        self.monitor, self.metrics, self.flush_s = monitor, metrics, flush_s
        self.announce = announce  # tells a restarted monitor about a model version again
        self.buffers: dict[tuple[str, str], dict[str, Any]] = {}
        self.buffered = 0
        self.dropped = 0
        self.errors_4xx = 0
        self.current: tuple[str, str] | None = None  # the model version 4xx answers are counted for
        self.agreement: dict[tuple[str, str, str], list[int]] = {}
        self.task: asyncio.Task | None = None
        self.exports: set[asyncio.Future] = set()

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"t_pred": [], "classes": [], "confidence": [], "last_day": [], "t_req": [], "latency_ms": [],
                "batch_sizes": [], "endpoints": []}

    def observe(self, name: str, version: str, endpoint: str, latency_ms: float, last_day: np.ndarray,
                probs: np.ndarray, batch: int) -> None:
        if self.buffered + len(probs) > MAX_BUFFERED:
            self.dropped += len(probs)
            self._ensure_loop()
            return
        b = self.buffers.get((name, version))
        if b is None:
            b = self.buffers[(name, version)] = self._empty()
        now = time.time()
        self.buffered += len(probs)
        b["t_pred"].extend([now] * len(probs))
        b["classes"].append(probs.argmax(1))
        b["confidence"].append(probs.max(1))
        b["last_day"].append(np.array(last_day, dtype=np.float32))  # a copy: not a view of the request's windows
        b["t_req"].append(now)
        b["latency_ms"].append(latency_ms)
        b["batch_sizes"].append(batch)
        b["endpoints"].append(endpoint)
        self._ensure_loop()

    def agree(self, name: str, champion: str, challenger: str, classes_a: np.ndarray, classes_b: np.ndarray) -> None:
        counts = self.agreement.setdefault((name, champion, challenger), [0, 0])
        counts[0] += len(classes_a)
        counts[1] += int((classes_a == classes_b).sum())
        self._ensure_loop()

    def client_error(self) -> None:
        self.errors_4xx += 1
        self._ensure_loop()

    def _ensure_loop(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._loop())

    def flush(self) -> list[tuple[tuple[str, str] | None, Any]]:
        """Send every buffer; returns the pending calls with the model version each is for
        (await them, through ``call``, to know they landed)."""
        buffers, self.buffers, self.buffered = self.buffers, {}, 0
        fallback = self.current
        errors, self.errors_4xx = (self.errors_4xx, 0) if fallback is not None else (0, self.errors_4xx)
        if errors:
            buffers.setdefault(fallback, self._empty())
        pending, exports = [], []
        for (name, version), b in buffers.items():
            record = {
                "t_pred": b["t_pred"], "t_req": b["t_req"], "latency_ms": b["latency_ms"],
                "batch_sizes": b["batch_sizes"],
                "classes": np.concatenate(b["classes"]).tolist() if b["classes"] else [],
                "confidence": np.concatenate(b["confidence"]).tolist() if b["confidence"] else [],
                "last_day": np.concatenate(b["last_day"]) if b["last_day"] else [],
                "errors_4xx": errors if (name, version) == fallback else 0,
            }
            exports.append((name, version, record, b["endpoints"]))
            pending.append(((name, version), self.monitor.record.remote(name, version, record)))
        if exports:  # one Ray metric call per prediction: off the event loop
            future = asyncio.get_running_loop().run_in_executor(None, self._export, exports)
            self.exports.add(future)
            future.add_done_callback(self.exports.discard)
        if self.agreement:
            agreement, self.agreement = self.agreement, {}
            pending.append((None, self.monitor.record_agreement.remote(agreement)))
        return pending

    def _export(self, exports: list[tuple]) -> None:
        for name, version, record, endpoints in exports:
            export_records(self.metrics, name, version, record, endpoints)

    async def deliver(self) -> None:
        """Flush and wait for the monitor to take it (each call bounded by CALL_TIMEOUT_S);
        a version the monitor no longer knows is announced again."""
        for key, response in self.flush():
            known = await call(response)
            if known is False and key is not None and self.announce is not None:
                log.warning("the monitor does not know %s/%s (it restarted): announcing it again", *key)
                await self.announce(*key)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.deliver()
            except MonitorUnavailable as err:  # the monitor restarting must never break serving
                log.warning("monitoring records not delivered: %s", err)
            except Exception:
                log.exception("could not send monitoring records")
