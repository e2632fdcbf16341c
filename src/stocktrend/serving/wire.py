"""The wire format: request bodies in, answers out, with the error contract.

Requests: JSON (parsed by orjson straight from the bytes, UTF-8 only) or, for clients that
send many windows, one ``application/x-npy`` body (a NumPy ``.npy`` file of float32 or
float64, shape (n, seq_len, features); never pickled objects). Both end in the same
validation (``Predictor.check_windows``) and the same error contract:
``{"error": {"field", "message"}, "model_version"}`` with a 4xx status. Answers are
serialised by orjson from NumPy arrays (no per-float Python objects on the way out).

A request's cost is bounded before work is done on it: the body is read as a stream and
refused the moment it passes a cap derived from the largest valid request (a chunked body
too), the window count is read from the JSON's first level or the ``.npy`` header before any
array is built, and a ``.npy`` header is checked against the bytes present before anything
is allocated.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import orjson

NPY_MEDIA_TYPE = "application/x-npy"
JSON_MEDIA_TYPE = "application/json"


class ApiError(Exception):
    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


def media_type(content_type: str | None) -> str:
    return (content_type or JSON_MEDIA_TYPE).split(";", 1)[0].strip().lower()


# The most bytes one number of a windows body can take as JSON ("-1.2345678901234567e-308, ")
# and the most a .npy header can (NumPy writes 128; its reader accepts up to 10,000).
JSON_NUMBER_BYTES = 27
NPY_HEADER_MAX = 4096


def check_size(declared: str | None, raw: bytes | None, limit: int) -> None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body", f"{int(declared)} bytes is over the limit of {limit}")
    if raw is not None and len(raw) > limit:
        raise ApiError(413, "body", f"{len(raw)} bytes is over the limit of {limit}")


def windows_body_limit(kind: str, max_windows: int, seq_len: int, n_features: int, max_body_bytes: int) -> int:
    """The largest body a valid request of ``max_windows`` windows can need, as ``kind``, and
    never more than ``max_body_bytes``: a larger one is refused before it is read whole."""
    values = max_windows * seq_len * n_features
    if kind == NPY_MEDIA_TYPE:
        need = NPY_HEADER_MAX + 8 * values  # float64 at most
    else:  # numbers, and the brackets, commas and spaces around every day and window
        need = 1024 + JSON_NUMBER_BYTES * values + 8 * max_windows * (seq_len + 1)
    return min(max_body_bytes, need)


async def read_body(request, limit: int) -> bytes:
    """The body, read as a stream and refused (413) as soon as it passes ``limit`` bytes:
    a Content-Length over the limit is refused unread, and a chunked body (no length) is
    never held beyond the limit."""
    check_size(request.headers.get("content-length"), None, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body", f"more than the limit of {limit} bytes (the largest valid request)")
        chunks.append(chunk)
    return b"".join(chunks)


def check_window_count(n: int, limit: int) -> None:
    if n > limit:
        raise ApiError(413, "windows", f"{n} windows in one request; the limit is {limit}")


def json_object(raw: bytes, allowed: set[str], required: set[str]) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` fields and every ``required`` one.
    Not UTF-8, not JSON, nested deeper than orjson's 1024 levels, an integer beyond 64 bits:
    all a 400 naming the problem. Duplicate keys: the last one wins (as in most parsers)."""
    if not raw:
        raise ApiError(400, "body", "empty body; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ApiError(400, "body", f"not valid UTF-8 JSON ({err})") from None
    if not isinstance(body, dict):
        raise ApiError(422, "body", f"expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(422, unknown[0] or '""', f"unknown field; this endpoint takes {sorted(allowed)}")
    missing = sorted(required - set(body))
    if missing:
        raise ApiError(422, missing[0], "required field is missing")
    return body


def windows_from_json(value: Any, raw: bytes, max_windows: int | None = None) -> np.ndarray:
    """Numbers only: JSON strings such as "1.5", booleans and nulls are refused, not coerced.
    NumPy would turn a boolean among numbers into 0.0/1.0; the body's one field is the
    windows, so a ``true``/``false`` token anywhere in the raw bytes (a fast scan, no
    walk of the nested lists) is a boolean in the windows, or in a string, refused too.
    The window count is checked on the first level, before an array is built."""
    # A one-byte search first (memchr): numbers and the key "windows" hold no "t" or "f".
    if (b"t" in raw or b"f" in raw) and (b"true" in raw or b"false" in raw):
        raise ApiError(422, "windows", "values must be numbers (got a JSON boolean)")
    if not isinstance(value, list) or not value:
        raise ApiError(422, "windows", "must be a non-empty list of windows (n x seq_len x features numbers)")
    if max_windows is not None:
        check_window_count(len(value), max_windows)
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError):
        raise ApiError(422, "windows", "ragged: every window needs the same number of days and features") from None
    if arr.dtype.kind not in "iuf":
        raise ApiError(422, "windows", f"values must be numbers (got JSON {arr.dtype.kind!r} data: strings, "
                                       "nulls or a ragged nesting)")
    return arr.astype(np.float32, copy=False)


def windows_from_npy(raw: bytes, max_windows: int | None = None) -> np.ndarray:
    """One ``.npy`` array: float32/float64, 3-D. Its header is read and checked first (format
    version, dtype, shape, window count, and the data size it declares against the bytes that
    follow), so a ~100-byte body declaring a huge shape is refused without allocating it;
    then the array is read straight from the body. Pickled object arrays are refused."""
    if not raw:
        raise ApiError(400, "body", "empty body; send one .npy array")
    buf = io.BytesIO(raw)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(buf)
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"format version {version[0]}.{version[1]} is not accepted (1.0 or 2.0)")
        shape, fortran, dtype = read_header(buf, max_header_size=NPY_HEADER_MAX)
    except Exception as err:  # NumPy parses the header as a Python literal: any failure is the client's
        raise ApiError(400, "body", f"not a .npy array ({type(err).__name__}: {err})") from None
    if dtype.hasobject or dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise ApiError(422, "windows", f"the .npy array must hold float32 or float64, got dtype {dtype}")
    if len(shape) != 3:
        raise ApiError(422, "windows", f"the .npy array must be 3-D (n, seq_len, features), got shape {shape}")
    if max_windows is not None:
        check_window_count(shape[0], max_windows)
    count, present = math.prod(shape), len(raw) - buf.tell()
    if count * dtype.itemsize != present:
        raise ApiError(400, "body", f"the .npy header declares shape {shape} of {dtype} ({count * dtype.itemsize} "
                                    f"bytes of data), but {present} bytes follow it")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=buf.tell())
    return arr.reshape(shape, order="F" if fortran else "C").astype(np.float32)  # a copy: the body can go


def error_body(err: ApiError, version: str | None) -> bytes:
    return orjson.dumps({"error": {"field": err.field, "message": err.message}, "model_version": version})


def predictions_body(out, features: list[str], explain: bool, **extra: Any) -> bytes:
    """``{..extra, "predictions": [{"direction", "p_up", "p_down", "confidence"[, "volatility"]
    [, "attention"][, "feature_weights"]}]}`` from a back-end's ``Outputs`` (volatility
    annualised: a multi-task model's forecast for the next h days); ``explain``: add the pooling
    weights and, for a TFT-style model, the selection weight of each of ``features``. Built
    column-wise in NumPy and serialised by orjson."""
    probs = out.probs
    p_up, p_down = probs[:, 1].astype(np.float64), probs[:, 0].astype(np.float64)
    direction = np.where(p_up > p_down, "up", "down")
    confidence = np.maximum(p_up, p_down)
    rows = [{"direction": d, "p_up": u, "p_down": w, "confidence": c}
            for d, u, w, c in zip(direction.tolist(), p_up.tolist(), p_down.tolist(), confidence.tolist())]
    if out.volatility is not None:
        for row, v in zip(rows, np.round(out.volatility.astype(np.float64), 6).tolist()):
            row["volatility"] = v
    if explain:
        for row, a in zip(rows, out.attention.astype(np.float64).tolist()):
            row["attention"] = a
        if out.feature_weights is not None:
            for row, w in zip(rows, np.round(out.feature_weights.astype(np.float64), 6).tolist()):
                row["feature_weights"] = dict(zip(features, w, strict=True))
    return orjson.dumps({**extra, "predictions": rows})


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
