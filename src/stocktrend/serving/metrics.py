"""Prometheus metrics of the Serve application, exported through Ray's metrics endpoint.

Recorded per flush of a replica's records, not per request: each Ray metric call costs
about as much as parsing a request, so it stays off the request path. The names here are
the ones ``serve/grafana_dashboard.json`` queries (a test checks both against a live head).
"""

from __future__ import annotations

from typing import Any

METRIC_NAMES = ("stocktrend_predictions", "stocktrend_confidence", "stocktrend_request_latency_ms",
                "stocktrend_client_errors", "stocktrend_drifted_features")


def create_metrics() -> dict[str, Any]:
    from ray.serve.metrics import Counter, Gauge, Histogram

    return {
        "predictions": Counter("stocktrend_predictions", description="predictions served, by predicted direction",
                               tag_keys=("direction", "model", "model_version")),
        "confidence": Histogram("stocktrend_confidence", description="max(p_up, p_down) of each prediction",
                                boundaries=[0.5, 0.525, 0.55, 0.575, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0],
                                tag_keys=("model", "model_version")),
        "latency": Histogram("stocktrend_request_latency_ms", description="request handling time in the replica",
                             boundaries=[0.5, 1, 2, 3, 5, 10, 20, 50, 100, 250, 500, 1000, 5000],
                             tag_keys=("endpoint", "model", "model_version")),
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
    for conf in record["confidence"]:
        metrics["confidence"].observe(conf, tags=tags)
    for ms, endpoint in zip(record["latency_ms"], endpoints):
        metrics["latency"].observe(ms, tags={"endpoint": endpoint, **tags})
