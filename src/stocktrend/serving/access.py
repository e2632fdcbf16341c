"""Who may call, and which request this is: the API key check and the request id.

Auth fails closed where it matters: a deployment whose HTTP address is not loopback (or
whose address cannot be learnt) refuses to start without a key, unless told otherwise
(``require_api_key: false``). A key belongs in the replicas' environment from a secret store
(a Kubernetes Secret in k8s/), never in a config the dashboard displays (``runtime_env``).
"""

from __future__ import annotations

import hmac
import uuid

from stocktrend.serving.wire import ApiError

REQUEST_ID_HEADER = "X-Request-Id"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class KeyRequired(RuntimeError):
    pass


def serve_host() -> str | None:
    """The address Serve's HTTP ingress listens on (asked of the Serve controller), or None
    when it cannot be learnt."""
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config.host
    except Exception:  # no controller reachable from here: unknown, so treated as exposed
        return None


def check_key_policy(require: bool | None, key: str | None, key_env: str, host: str | None) -> None:
    """Refuse to serve without a key when one is required: ``require`` True, or None (the
    default) with an HTTP address that is not loopback."""
    needed = require if require is not None else host not in LOOPBACK
    if needed and not key:
        where = f"listens on {host}" if host else "listens on an address that could not be learnt"
        raise KeyRequired(f"require_api_key: this deployment {where} and {key_env} is not set in its replicas' "
                          f"environment: set {key_env} from a secret store (a Kubernetes Secret), or serve on "
                          "127.0.0.1, or set require_api_key: false to serve without a key")


def authorize(headers, api_key: str | None) -> None:
    """Every /v1 endpoint calls this; /healthz and the OpenAPI pages stay open."""
    if api_key is None:
        return
    given = headers.get("x-api-key")
    if given is None:
        raise ApiError(401, "X-API-Key", "missing API key header")
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise ApiError(401, "X-API-Key", "wrong API key")


def request_id(headers) -> str:
    """This request's id. Serve puts the client's X-Request-Id (or one it generates) in the
    request's headers and echoes it on the answer; outside Serve a new one is made. It is
    logged JSON-escaped, so a client's odd id cannot forge log lines."""
    return headers.get("x-request-id") or uuid.uuid4().hex
