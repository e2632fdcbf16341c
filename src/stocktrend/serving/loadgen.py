"""A small closed-loop HTTP/1.1 load generator on asyncio streams (keep-alive, one request
in flight per connection). General clients (httpx) spend 1-2 ms of CPU per request, which on
a 2-core machine takes a third of the CPU away from the server under test; this one spends
a fraction of that, so the figures measure the service rather than the client.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Response:
    status: int
    body: bytes
    seconds: float


@dataclass
class LoadResult:
    responses: list[Response] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        lat = np.asarray([r.seconds for r in self.responses]) * 1e3
        statuses = [r.status for r in self.responses]
        n = len(self.responses) + len(self.exceptions)
        return {
            "requests": n,
            "ok": sum(s == 200 for s in statuses),
            "errors_4xx": sum(400 <= s < 500 for s in statuses),
            "errors_5xx": sum(s >= 500 for s in statuses),
            "exceptions": len(self.exceptions),
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(n / self.seconds, 1) if self.seconds else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        }


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}",
                f"Content-Type: {content_type}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        t0 = time.perf_counter()
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.lower() == "close":
                close = True
        if chunked:
            data = b""
            while (size := int((await self.reader.readline()).strip(), 16)) > 0:
                data += await self.reader.readexactly(size)
                await self.reader.readline()
            await self.reader.readline()
        else:
            data = await self.reader.readexactly(length)
        seconds = time.perf_counter() - t0
        if close:
            await self.close()
        return Response(status, data, seconds)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def run_load(url: str, bodies: Sequence[bytes], total: int, concurrency: int,
                   check: Callable[[Response], None] | None = None, headers: dict[str, str] | None = None,
                   timeout_s: float = 30.0, queries: Sequence[str] | None = None,
                   duration_s: float | None = None, content_type: str = "application/json") -> LoadResult:
    """POST ``total`` requests (cycling through ``bodies``, and through ``queries`` appended
    to the URL's path when given) with ``concurrency`` connections, or as many as
    ``duration_s`` seconds allow when given;
    a request unanswered after ``timeout_s`` counts as an exception (TimeoutError) and its
    connection is dropped, so a stuck server ends the load instead of hanging it."""
    parsed = urllib.parse.urlsplit(url)
    target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    result = LoadResult()
    counter = iter(range(total))
    stop_at = time.perf_counter() + duration_s if duration_s is not None else None

    async def worker():
        conn = Connection(parsed.hostname, parsed.port or 80)
        for i in counter:
            if stop_at is not None and time.perf_counter() >= stop_at:
                break
            try:
                path = f"{parsed.path or '/'}?{queries[i % len(queries)]}" if queries else target
                r = await asyncio.wait_for(conn.request("POST", path, bodies[i % len(bodies)], headers, content_type), timeout_s)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, TimeoutError) as err:
                result.exceptions.append(f"{type(err).__name__}: {err}")
                await conn.close()
                continue
            if check is not None:
                check(r)
            result.responses.append(r)
        await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - t0
    return result


def load(url: str, bodies: Sequence[bytes], total: int, concurrency: int, **kw) -> LoadResult:
    return asyncio.run(run_load(url, bodies, total, concurrency, **kw))
