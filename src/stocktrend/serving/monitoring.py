"""Rolling-window monitoring of live predictions against the artifact's own reference.

Replicas send batches of records (one per prediction: predicted class, confidence, the
window's last day of scaled features; one latency per request) to a single ``Monitor``
deployment, which keeps the last ``window`` of each and answers ``/v1/monitoring`` for the
whole application. Drift is the population stability index (PSI) of each feature against
the training distribution stored in the artifact (decile edges and shares of the last day
of every training window, scaled, exactly what live windows carry).
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np

EPS = 1e-4  # floor on bin shares: an empty live bin must not make PSI infinite


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(np.asarray(expected, np.float64), EPS, None)
    a = np.clip(np.asarray(actual, np.float64), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


class RollingStats:
    def __init__(self, feature_distribution: dict[str, Any], reference: dict[str, Any], alerts: dict[str, Any],
                 window: int = 5000):
        feats = feature_distribution["features"]
        self.names = [f["name"] for f in feats]
        self.edges = [np.asarray(f["edges"], np.float64) for f in feats]
        self.shares = [np.asarray(f["shares"], np.float64) for f in feats]
        self.reference, self.alerts = reference, alerts
        self.classes: collections.deque[int] = collections.deque(maxlen=window)
        self.confidence: collections.deque[float] = collections.deque(maxlen=window)
        self.last_day: collections.deque[np.ndarray] = collections.deque(maxlen=window)
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=window)
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=window)
        self.totals = {"requests": 0, "predictions": 0, "errors_4xx": 0}
        self.started = time.time()

    def add(self, record: dict[str, Any]) -> None:
        """``record``: {"classes": [..], "confidence": [..], "last_day": [[..]], "latency_ms": [..],
        "batch_sizes": [..], "errors_4xx": n} from one replica's flush."""
        self.classes.extend(record.get("classes", []))
        self.confidence.extend(record.get("confidence", []))
        self.last_day.extend(np.asarray(v, np.float64) for v in record.get("last_day", []))
        self.latency_ms.extend(record.get("latency_ms", []))
        self.batch_sizes.extend(record.get("batch_sizes", []))
        self.totals["requests"] += len(record.get("latency_ms", []))
        self.totals["predictions"] += len(record.get("classes", []))
        self.totals["errors_4xx"] += int(record.get("errors_4xx", 0))

    def drift(self) -> dict[str, Any]:
        if not self.last_day:
            return {"psi": {}, "max_psi": None, "drifted": []}
        live = np.stack(self.last_day)  # (n, K)
        values = {}
        for k, name in enumerate(self.names):
            counts = np.bincount(np.searchsorted(self.edges[k], live[:, k], side="right"),
                                 minlength=len(self.shares[k]))
            values[name] = psi(self.shares[k], counts / counts.sum())
        threshold = self.alerts["psi_threshold"]
        drifted = sorted((n for n, v in values.items() if v > threshold), key=lambda n: -values[n])
        return {"psi": values, "max_psi": max(values.values()), "drifted": drifted}

    def summary(self) -> dict[str, Any]:
        n = len(self.classes)
        share_up = float(np.mean(np.asarray(self.classes) == 1)) if n else None
        mean_conf = float(np.mean(self.confidence)) if n else None
        lat = np.asarray(self.latency_ms, np.float64)
        latency = ({"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "n": int(len(lat))}
                   if len(lat) else {"p50": None, "p99": None, "n": 0})
        batches = np.asarray(self.batch_sizes)
        drift = self.drift()
        out = {
            "window": {"predictions": n, "requests": int(len(lat)), "max": self.classes.maxlen},
            "totals": dict(self.totals),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "distribution": {"up": share_up, "down": None if share_up is None else 1 - share_up,
                             "reference_up": self.reference.get("share_up")},
            "confidence": {"mean": mean_conf, "reference": self.reference.get("mean_confidence")},
            "latency_ms": latency,
            "batching": {"mean_batch": float(batches.mean()) if len(batches) else None,
                         "max_batch": int(batches.max()) if len(batches) else None},
            "drift": {"metric": "psi", "threshold": self.alerts["psi_threshold"], "max_psi": drift["max_psi"],
                      "drifted_features": drift["drifted"],
                      "top": dict(sorted(drift["psi"].items(), key=lambda kv: -kv[1])[:10])},
        }
        out["alerts"] = self._alerts(out)
        return out

    def _alerts(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        a, alerts = self.alerts, []
        enough = s["window"]["predictions"] >= a["min_samples"]
        ref_up, up = s["distribution"]["reference_up"], s["distribution"]["up"]
        if enough and ref_up is not None and abs(up - ref_up) * 100 > a["share_shift_points"]:
            alerts.append({"name": "prediction_distribution_shift", "value": up, "reference": ref_up,
                           "message": f"{up:.1%} of predictions are 'up' against {ref_up:.1%} on validation "
                                      f"(more than {a['share_shift_points']:g} points apart)"})
        ref_conf, conf = s["confidence"]["reference"], s["confidence"]["mean"]
        if enough and ref_conf is not None and conf < ref_conf - a["confidence_drop"]:
            alerts.append({"name": "low_confidence", "value": conf, "reference": ref_conf,
                           "message": f"mean confidence {conf:.3f} is below its validation level {ref_conf:.3f} "
                                      f"by more than {a['confidence_drop']:g}"})
        p99 = s["latency_ms"]["p99"]
        if p99 is not None and p99 > a["p99_latency_ms"]:
            alerts.append({"name": "latency_slo", "value": p99, "reference": a["p99_latency_ms"],
                           "message": f"p99 latency {p99:.1f} ms exceeds the SLO of {a['p99_latency_ms']:g} ms"})
        if enough and s["drift"]["drifted_features"]:
            d = s["drift"]["drifted_features"]
            alerts.append({"name": "feature_drift", "value": s["drift"]["max_psi"], "reference": a["psi_threshold"],
                           "message": f"{len(d)} feature(s) drifted from the training distribution "
                                      f"(PSI > {a['psi_threshold']:g}): {', '.join(d[:5])}"})
        return alerts
