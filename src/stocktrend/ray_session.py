"""Connecting to Ray the way a user expects: a cluster when there is one, else a local head.

Under ``ray job submit`` (RAY_ADDRESS set) a plain ``ray.init()`` is required: passing
resources while connecting to an existing cluster raises. Standalone we start a local
Ray on loopback with the dashboard (without it Train V2 logs repeated controller-state
warnings) and no usage stats (there is no internet).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# Environment of every Ray head this project starts (make ray-up, deploy.py, the tests).
# Ray 2.60's HAProxy ingress: HTTP goes from HAProxy straight to the replicas instead of
# through the Python proxy actor; measured here it halves latency and quadruples
# throughput (docs/BENCHMARKS.md), and the reliability suite runs with it.
SERVE_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}


def connect(num_cpus: int | None = None, dashboard: bool = True) -> bool:
    """Ensure a Ray connection; return True when this call started a local instance."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        log.info("connecting to the Ray cluster at %s", address)
        ray.init()
        return False
    if not address:
        # Ray's convention: join a head started on this machine (`make ray-up`), else
        # start a local instance. RAY_ADDRESS=local forces a fresh local instance.
        try:
            ray.init(address="auto")
            log.info("joined the Ray head running on this machine")
            return False
        except ConnectionError:
            pass
    ctx = ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        log_to_driver=True,
    )
    log.info("Ray at %s; dashboard: http://%s", ctx.address_info.get("gcs_address"), ctx.dashboard_url or "off")
    return True
