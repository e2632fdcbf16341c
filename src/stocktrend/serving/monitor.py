"""The ``Monitor`` deployment and the replicas' side of it.

Replicas keep records in a buffer (appends only: no Ray call, no metric call on the request
path) and send it every ``monitoring_flush_s`` to the one ``Monitor`` replica, which keeps a
``RollingStats`` per model name and version, so several models (and a model's old and new
version during a promotion) share it without mixing their figures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from ray import serve

from stocktrend.serving.config import MONITOR_DEPLOYMENT
from stocktrend.serving.metrics import export_records
from stocktrend.serving.monitoring import RollingStats

log = logging.getLogger(__name__)


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

    def set_model(self, name: str, version: str, feature_distribution: dict, reference: dict) -> None:
        if (name, version) not in self.stats:  # every replica announces its model; keep the first
            self.stats[(name, version)] = RollingStats(feature_distribution, reference, self.alerts, self.window,
                                                       self.minutes)

    def record(self, name: str, version: str, batch: dict[str, Any]) -> None:
        stats = self.stats.get((name, version))
        if stats is None:
            return
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

    def record_agreement(self, counts: dict[tuple[str, str, str], list[int]]) -> None:
        for key, (n, same) in counts.items():
            total = self.agreement.setdefault(tuple(key), [0, 0])
            total[0] += n
            total[1] += same

    def agreement_summary(self, name: str) -> list[dict[str, Any]]:
        """Champion/challenger class agreement on the windows both scored (shadow mode)."""
        return [{"champion": c, "challenger": ch, "windows": n, "agreement": same / n if n else None}
                for (m, c, ch), (n, same) in self.agreement.items() if m == name]

    def summary(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """One model version's figures, or every one's under "models" when not named."""
        if name is not None:
            stats = self.stats.get((name, version))
            return {"model": name, "model_version": version, **(stats.summary() if stats else {"status": "no traffic"})}
        return {"models": [{"model": n, "model_version": v, **s.summary()} for (n, v), s in self.stats.items()]}


class RecordBuffer:
    """One replica's records since the last flush, per model version."""

    def __init__(self, monitor, metrics: dict, flush_s: float):
        self.monitor, self.metrics, self.flush_s = monitor, metrics, flush_s
        self.buffers: dict[tuple[str, str], dict[str, Any]] = {}
        self.errors_4xx = 0
        self.current: tuple[str, str] | None = None  # the model version 4xx answers are counted for
        self.agreement: dict[tuple[str, str, str], list[int]] = {}
        self.task: asyncio.Task | None = None

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"t_pred": [], "classes": [], "confidence": [], "last_day": [], "t_req": [], "latency_ms": [],
                "batch_sizes": [], "endpoints": []}

    def observe(self, name: str, version: str, endpoint: str, latency_ms: float, last_day: np.ndarray,
                probs: np.ndarray, batch: int) -> None:
        b = self.buffers.get((name, version))
        if b is None:
            b = self.buffers[(name, version)] = self._empty()
        now = time.time()
        b["t_pred"].extend([now] * len(probs))
        b["classes"].append(probs.argmax(1))
        b["confidence"].append(probs.max(1))
        b["last_day"].append(last_day)
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
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._loop())

    def flush(self) -> list:
        """Send every buffer; returns the pending calls (await them to know they landed)."""
        buffers, self.buffers = self.buffers, {}
        fallback = self.current
        errors, self.errors_4xx = (self.errors_4xx, 0) if fallback is not None else (0, self.errors_4xx)
        if errors:
            buffers.setdefault(fallback, self._empty())
        pending = []
        for (name, version), b in buffers.items():
            record = {
                "t_pred": b["t_pred"], "t_req": b["t_req"], "latency_ms": b["latency_ms"],
                "batch_sizes": b["batch_sizes"],
                "classes": np.concatenate(b["classes"]).tolist() if b["classes"] else [],
                "confidence": np.concatenate(b["confidence"]).tolist() if b["confidence"] else [],
                "last_day": np.concatenate(b["last_day"]) if b["last_day"] else [],
                "errors_4xx": errors if (name, version) == fallback else 0,
            }
            export_records(self.metrics, name, version, record, b["endpoints"])
            pending.append(self.monitor.record.remote(name, version, record))
        if self.agreement:
            agreement, self.agreement = self.agreement, {}
            pending.append(self.monitor.record_agreement.remote(agreement))
        return pending

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                for call in self.flush():
                    await call
            except Exception:  # the monitor restarting must never break serving
                log.exception("could not send monitoring records")
