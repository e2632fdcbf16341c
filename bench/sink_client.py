"""The load client with nothing behind it: its own CPU cost, for like-for-like figures.

    python bench/sink_client.py --body FILE [--concurrency 16] [--seconds 10]

Drives a do-nothing local HTTP server with the project's load client
(``stocktrend.serving.loadgen``), so that a benchmark can measure something else (the raw
model, in ``bench/serve_load.py``) while the client takes the CPU it takes during an HTTP
measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from stocktrend.serving.loadgen import run_load


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    try:
        while True:
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            if not line:
                break
            await reader.readexactly(length)
            writer.write(answer)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _client_against_sink(body: bytes, concurrency: int, seconds: float) -> int:
    server = await asyncio.start_server(_sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sent, end = 0, time.perf_counter() + seconds
    async with server:
        while time.perf_counter() < end:
            r = await run_load(f"http://127.0.0.1:{port}/", [body], 200, concurrency)
            sent += len(r.responses)
    return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--body", required=True, help="file with one request body")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args(argv)
    sent = asyncio.run(_client_against_sink(Path(args.body).read_bytes(), args.concurrency, args.seconds))
    print(f'{{"requests": {sent}, "seconds": {args.seconds}}}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
