"""FALLBACK load generator, used only when wrk cannot be installed: a closed-loop HTTP/1.1 keep-alive
client on raw asyncio sockets (``c`` connections, each sending the next request when the previous
answer has arrived), printing the same ``WRK_RESULT {...}`` line as ``scripts/wrk/post.lua``.

It costs more CPU per request than wrk (it runs on the same 2 cores as the servers), so its figures are
lower than wrk's; bench.py labels every result it produces as such.

    python scripts/bench_pyload.py --url http://127.0.0.1:8080/cds-services/hip-weakness \
        --body body.json -c 10 -d 10 [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import Callable
from urllib.parse import urlsplit


class Stats:
    def __init__(self) -> None:
        self.latencies_us: list[float] = []
        self.bytes = 0
        self.status_errors = 0
        self.read_errors = 0
        self.connect_errors = 0
        self.timeouts = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        lname = name.strip().lower()
        if lname == "content-length":
            length = int(value.strip())
        elif lname == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    size = len(head)
    if chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            n = int(size_line.strip().split(b";")[0], 16)
            data = await reader.readexactly(n + 2)
            size += len(size_line) + len(data)
            if n == 0:
                break
    else:
        size += len(await reader.readexactly(length))
    return status, size


async def _connection(
    host: str, port: int, request: bytes, stop_at: float, stats: Stats, limit: list[int], timeout: float
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        stats.connect_errors += 1
        return
    try:
        while time.perf_counter() < stop_at and limit[0] != 0:
            if limit[0] > 0:
                limit[0] -= 1
            t0 = time.perf_counter()
            writer.write(request)
            try:
                status, size = await asyncio.wait_for(_read_response(reader), timeout)
            except TimeoutError:
                stats.timeouts += 1
                return
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                stats.read_errors += 1
                return
            stats.latencies_us.append((time.perf_counter() - t0) * 1e6)
            stats.bytes += size
            if not 200 <= status < 300:
                stats.status_errors += 1
    finally:
        writer.close()


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


async def run(
    url: str, body: bytes, connections: int, duration: float, limit: int, timeout: float
) -> dict[str, float]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    stats = Stats()
    remaining = [limit if limit > 0 else -1]
    t0 = time.perf_counter()
    stop_at = t0 + (duration if limit <= 0 else 3600.0)
    await asyncio.gather(
        *(_connection(host, port, request, stop_at, stats, remaining, timeout) for _ in range(connections))
    )
    elapsed = time.perf_counter() - t0
    lat = sorted(stats.latencies_us)
    return {
        "requests": len(lat),
        "duration_us": int(elapsed * 1e6),
        "bytes": stats.bytes,
        "p50_us": int(_percentile(lat, 50)),
        "p90_us": int(_percentile(lat, 90)),
        "p99_us": int(_percentile(lat, 99)),
        "p999_us": int(_percentile(lat, 99.9)),
        "max_us": int(lat[-1]) if lat else 0,
        "mean_us": sum(lat) / len(lat) if lat else 0.0,
        "connect": stats.connect_errors,
        "read": stats.read_errors,
        "write": 0,
        "status": stats.status_errors,
        "timeout": stats.timeouts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="file holding the JSON body to POST")
    parser.add_argument("-c", "--connections", type=int, default=10)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--limit", type=int, default=0, help="stop after this many requests (0: by duration)")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run(args.url, body, args.connections, args.duration, args.limit, args.timeout))
    print("WRK_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
