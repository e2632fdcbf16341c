"""Connecting to Ray the way a user expects: a cluster when there is one, else a local Ray.

Under ``ray job submit`` (RAY_ADDRESS set) a plain ``ray.init()`` is required: passing
resources while connecting to an existing cluster raises. Without RAY_ADDRESS we join a head
started on this machine (``make head``), as Ray's own ``address="auto"`` does, else start a
local Ray on loopback with the dashboard (without it Train V2 logs repeated controller-state
warnings). Token authentication is turned on for this process first when a token exists,
so a plain shell needs no exported variable.

A head that died without stopping (killed, out of memory) leaves its address in Ray's
``ray_current_cluster`` record, and ``address="auto"`` then retries that dead address for
minutes before giving up. So the record is only followed when its port answers.
"""

from __future__ import annotations

import logging
import os
import socket

from stocktrend.cluster.auth import use_token_auth

log = logging.getLogger(__name__)


def connect(num_cpus: int | None = None, dashboard: bool = True) -> bool:
    """Ensure a Ray connection; return True when this call started a local instance."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    use_token_auth()
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        log.info("connecting to the Ray cluster at %s", address)
        ray.init()
        return False
    if not address and recorded_head() is not None:
        # RAY_ADDRESS=local forces a fresh local instance (the tests' standalone runs).
        try:
            ray.init(address="auto")
            log.info("joined the Ray head running on this machine")
            return False
        except ConnectionError:
            pass
    from stocktrend.cluster.head import prune_sessions, ray_temp_root

    prune_sessions(ray_temp_root())
    ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                   log_to_driver=True)
    log.info("Ray at %s; dashboard: http://%s", ctx.address_info.get("gcs_address"), ctx.dashboard_url or "off")
    return True


def running_dashboard() -> str | None:
    """The dashboard URL of the cluster this process would join (RAY_ADDRESS, or a head
    started on this machine), found the way `ray job submit` finds it; None when none runs."""
    use_token_auth()
    from ray.dashboard.utils import get_address_for_submission_client

    if not os.environ.get("RAY_ADDRESS") and recorded_head() is None:
        return None  # Ray would look the head up through a missing or dead record, and retry it
    try:
        return get_address_for_submission_client(None).rstrip("/")
    except (ConnectionError, ValueError, RuntimeError) as err:
        log.debug("no running Ray cluster found: %s", err)
        return None


def recorded_head() -> str | None:
    """The head address ``ray.init(address="auto")`` would join (Ray's ``ray_current_cluster``
    record), if something listens on its port; None when there is no record or it is stale."""
    from stocktrend.cluster.head import ray_temp_root

    path = ray_temp_root() / "ray_current_cluster"
    try:
        record = path.read_text().strip()
    except OSError:
        return None
    host, _, port = record.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return record
    except (OSError, ValueError):
        log.warning("ignoring %s (%s): no Ray head answers there, it did not stop cleanly", path, record)
        return None
