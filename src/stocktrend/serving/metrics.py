"""Prometheus metrics of the Serve application, exported through Ray's metrics endpoint.

Recorded per flush of a replica's records, not per request or per prediction: each Ray
metric call costs about as much as parsing a request, and Ray's Histogram takes one value
per call. So the two distributions are pre-bucketed here (``BucketedHistogram``: the
counts of a flush added to counters named as Prometheus names a histogram's series, one
call per bucket per flush); ``histogram_quantile`` reads them as it reads any histogram.
The names here are the ones ``serve/grafana_dashboard.json`` queries (a test checks both
against a live head).
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRIC_NAMES = ("stocktrend_predictions", "stocktrend_confidence", "stocktrend_request_latency_ms",
                "stocktrend_client_errors", "stocktrend_drifted_features")
CONFIDENCE_BUCKETS = (0.5, 0.525, 0.55, 0.575, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)
LATENCY_BUCKETS_MS = (0.5, 1, 2, 3, 5, 10, 20, 50, 100, 250, 500, 1000, 5000)


def cumulative_counts(boundaries, values) -> list[int]:
    """Prometheus's bucket counts of ``values``: how many are <= each boundary, then all of
    them (the "+Inf" bucket)."""
    edges = np.asarray(boundaries, dtype=np.float64)
    per_bucket = np.bincount(np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="left"),
                             minlength=len(edges) + 1)
    return np.cumsum(per_bucket).tolist()


class BucketedHistogram:
    """A histogram recorded from counts: ``<name>_bucket`` (cumulative, tag ``le``, "+Inf"
    last), ``<name>_count`` and ``<name>_sum`` counters (exported by Ray with ``_total``
    appended: ``ray_<name>_bucket_total``, ...)."""

    def __init__(self, name: str, description: str, boundaries: tuple[float, ...], tag_keys: tuple[str, ...]):
        from ray.serve.metrics import Counter

        self.boundaries = boundaries
        self.labels = [f"{b:g}" for b in boundaries] + ["+Inf"]
        self.bucket = Counter(f"{name}_bucket", description=f"{description} (cumulative counts per upper bound le)",
                              tag_keys=(*tag_keys, "le"))
        self.count = Counter(f"{name}_count", description=f"{description} (observations)", tag_keys=tag_keys)
        self.sum = Counter(f"{name}_sum", description=f"{description} (sum of observations)", tag_keys=tag_keys)

    def observe_many(self, values, tags: dict[str, str]) -> None:
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return
        for label, n in zip(self.labels, cumulative_counts(self.boundaries, values)):
            if n:
                self.bucket.inc(n, tags={**tags, "le": label})
        self.count.inc(len(values), tags=tags)
        total = float(values.sum())
        if total > 0:
            self.sum.inc(total, tags=tags)


def create_metrics() -> dict[str, Any]:
    from ray.serve.metrics import Counter, Gauge

    return {
        "predictions": Counter("stocktrend_predictions", description="predictions served, by predicted direction",
                               tag_keys=("direction", "model", "model_version")),
        "confidence": BucketedHistogram("stocktrend_confidence", "max(p_up, p_down) of each prediction",
                                        CONFIDENCE_BUCKETS, ("model", "model_version")),
        "latency": BucketedHistogram("stocktrend_request_latency_ms", "request handling time in the replica",
                                     LATENCY_BUCKETS_MS, ("endpoint", "model", "model_version")),
        "errors": Counter("stocktrend_client_errors", description="requests answered 4xx",
                          tag_keys=("endpoint", "status")),
        "drifted": Gauge("stocktrend_drifted_features",
                         description="features past their drift threshold in the monitor's count window",
                         tag_keys=("model", "model_version")),
    }


def export_records(metrics: dict[str, Any], name: str, version: str, record: dict[str, Any],
                   endpoints: list[str]) -> None:
    ups = sum(record["classes"])
    tags = {"model": name, "model_version": version}
    for direction, n in (("up", ups), ("down", len(record["classes"]) - ups)):
        if n:
            metrics["predictions"].inc(n, tags={"direction": direction, **tags})
    metrics["confidence"].observe_many(record["confidence"], tags)
    latency = np.asarray(record["latency_ms"], dtype=np.float64)
    endpoint_of = np.asarray(endpoints)
    for endpoint in sorted(set(endpoints)):
        metrics["latency"].observe_many(latency[endpoint_of == endpoint], {"endpoint": endpoint, **tags})
