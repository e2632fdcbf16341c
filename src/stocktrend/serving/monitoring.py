"""Rolling monitoring of one model version's live predictions against its own reference.

Replicas send batches of records (per prediction: the time, predicted class, confidence
and the window's last day of scaled features; per request: the time, latency, batch size)
to the ``Monitor`` deployment, which keeps one ``RollingStats`` per model and version. Every
figure is computed over two windows: the last ``window`` predictions (count) and the last
``minutes`` minutes (time). Below ``min_samples`` a figure says "not enough data" instead of
a value, and no alert is judged on it. Drift is ``inference.drift.DriftTest`` (PSI with a
block-bootstrap threshold, one sample per distinct trading day).
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np

from stocktrend.inference.drift import DriftTest

NOT_ENOUGH = "not enough data"


class RollingStats:
    def __init__(self, feature_distribution: dict[str, Any], reference: dict[str, Any], alerts: dict[str, Any],
                 window: int = 5000, minutes: float = 15.0):
        self.reference, self.alerts, self.minutes = reference, alerts, minutes
        self.min_samples = int(alerts["min_samples"])
        self.drift_test = DriftTest(feature_distribution, self.min_samples)
        self.predictions: collections.deque[tuple] = collections.deque(maxlen=window)  # (t, class, conf, day)
        self.requests: collections.deque[tuple] = collections.deque(maxlen=window)  # (t, latency_ms, batch)
        self.totals = {"requests": 0, "predictions": 0, "errors_4xx": 0}
        self.started = time.time()

    def add(self, record: dict[str, Any]) -> None:
        """``record``: one replica's flush: {"t_pred", "classes", "confidence", "last_day",
        "t_req", "latency_ms", "batch_sizes", "errors_4xx"}."""
        days = record.get("last_day", [])  # rows copied: a view would keep the whole batch alive
        self.predictions.extend(zip(record.get("t_pred", []), record.get("classes", []),
                                    record.get("confidence", []), (np.array(d, np.float32) for d in days)))
        self.requests.extend(zip(record.get("t_req", []), record.get("latency_ms", []), record.get("batch_sizes", [])))
        self.totals["requests"] += len(record.get("latency_ms", []))
        self.totals["predictions"] += len(record.get("classes", []))
        self.totals["errors_4xx"] += int(record.get("errors_4xx", 0))

    # -- figures of one window ---------------------------------------------------------------
    def _gate(self, n: int) -> dict[str, Any] | None:
        return {"status": NOT_ENOUGH, "n": n, "needed": self.min_samples} if n < self.min_samples else None

    def _figures(self, preds: list[tuple], reqs: list[tuple]) -> dict[str, Any]:
        n, r = len(preds), len(reqs)
        classes = np.fromiter((p[1] for p in preds), np.int64, n)
        conf = np.fromiter((p[2] for p in preds), np.float64, n)
        lat = np.fromiter((q[1] for q in reqs), np.float64, r)
        batches = np.fromiter((q[2] for q in reqs), np.int64, r)
        # One drift sample per distinct trading day (identical last-day vectors).
        days = np.unique(np.stack([p[3] for p in preds]), axis=0) if n else np.empty((0, len(self.drift_test.names)))
        up = float((classes == 1).mean()) if n else None
        return {
            "predictions": n, "requests": r, "distinct_days": int(len(days)),
            "distribution": self._gate(n) or {"status": "ok", "up": up, "down": 1 - up,
                                              "reference_up": self.reference.get("share_up")},
            "confidence": self._gate(n) or {"status": "ok", "mean": float(conf.mean()),
                                            "reference": self.reference.get("mean_confidence")},
            "latency_ms": self._gate(r) or {"status": "ok", "p50": float(np.percentile(lat, 50)),
                                            "p99": float(np.percentile(lat, 99)), "n": r},
            "batching": {"mean_batch": float(batches.mean()) if r else None,
                         "max_batch": int(batches.max()) if r else None},
            "drift": self.drift_test(days),
        }

    def summary(self) -> dict[str, Any]:
        cutoff = time.time() - self.minutes * 60
        by_count = self._figures(list(self.predictions), list(self.requests))
        by_time = self._figures([p for p in self.predictions if p[0] >= cutoff],
                                [q for q in self.requests if q[0] >= cutoff])
        return {
            "totals": dict(self.totals),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "min_samples": self.min_samples,
            "reference": {"features": self.drift_test.reference, "validation": self.reference},
            "windows": {"count": {"size": self.predictions.maxlen, **by_count},
                        "time": {"minutes": self.minutes, **by_time}},
            "alerts": self._alerts(by_count),
        }

    def _alerts(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        """Judged on the count window, and only on figures with enough samples."""
        a, alerts = self.alerts, []
        dist, conf, lat, drift = s["distribution"], s["confidence"], s["latency_ms"], s["drift"]
        ref_up = dist.get("reference_up")
        if dist["status"] == "ok" and ref_up is not None and abs(dist["up"] - ref_up) * 100 > a["share_shift_points"]:
            alerts.append({"name": "prediction_distribution_shift", "value": dist["up"], "reference": ref_up,
                           "message": f"{dist['up']:.1%} of predictions are 'up' against {ref_up:.1%} on validation "
                                      f"(more than {a['share_shift_points']:g} points apart)"})
        ref_conf = conf.get("reference")
        if conf["status"] == "ok" and ref_conf is not None and conf["mean"] < ref_conf - a["confidence_drop"]:
            alerts.append({"name": "low_confidence", "value": conf["mean"], "reference": ref_conf,
                           "message": f"mean confidence {conf['mean']:.3f} is below its validation level "
                                      f"{ref_conf:.3f} by more than {a['confidence_drop']:g}"})
        if lat["status"] == "ok" and lat["p99"] > a["p99_latency_ms"]:
            alerts.append({"name": "latency_slo", "value": lat["p99"], "reference": a["p99_latency_ms"],
                           "message": f"p99 latency {lat['p99']:.1f} ms exceeds the SLO of {a['p99_latency_ms']:g} ms"})
        if drift["status"] == "drift":
            names = [d["name"] for d in drift["drifted_features"]]
            alerts.append({"name": "feature_drift", "value": drift["max_psi_over_threshold"], "reference": 1.0,
                           "message": f"{len(names)} feature(s) of {drift['samples']} distinct days drifted from the "
                                      f"training distribution (PSI above a threshold with a "
                                      f"{drift['family_false_alarm_rate']:.0%} false-alarm rate): {', '.join(names[:5])}"})
        return alerts
