"""Who may call, and which request this is: the API key check and the request id."""

from __future__ import annotations

import hmac
import uuid

from stocktrend.serving.wire import ApiError

REQUEST_ID_HEADER = "X-Request-Id"


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
