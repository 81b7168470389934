"""A real HTTP server on 127.0.0.1 that misbehaves on purpose: the FHIR server of the missing-prefetch path
and the JWKS endpoint of a CDS client, for the fault tests (and usable from scripts: no pytest here).

It speaks HTTP/1.1 over asyncio streams in a background thread, written by hand so that it can do what no
framework lets a server do: drip bytes, hang after the headers, lie about the length, reset the
connection, answer garbage. Each fault is the first path segment::

    http://127.0.0.1:<port>/<fault>/fhir/Condition?patient=hw-v01   a FHIR search under <fault>
    http://127.0.0.1:<port>/<fault>/jwks.json                       the client's key set under <fault>

``FHIR_FAULTS`` and ``JWKS_FAULTS`` list every fault with what it does. The FHIR data served (under ``ok``
and the faults that return data) are the resources given to the constructor, found by type and
``patient=`` like a FHIR server would. Every request is recorded (``seen``) with its Authorization header,
and ``open_connections`` says how many connections are still open (a client that gave up must close them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from cds_service.tools import local_search

MAX_FAULT_SECONDS = 30.0  # a dripping or hanging answer stops after this even if nobody reads it

FHIR_FAULTS: dict[str, str] = {
    "ok": "answers correctly",
    "slow-ok": "answers correctly after 0.4 s per request (within the budget)",
    "late": "answers correctly after 3 s (beyond the budget)",
    "hang": "accepts the connection, reads the request, never answers",
    "hang-after-headers": "sends status and headers (Content-Length 10,000), then nothing",
    "drip": "sends headers, then one byte of the body every 0.1 s, never finishing",
    "drip-status": "sends the status line one byte every 0.1 s",
    "401": "401 with an OperationOutcome",
    "403": "403 with an OperationOutcome",
    "404": "404 with an OperationOutcome",
    "410": "410 with an OperationOutcome",
    "429": "429 with Retry-After: 3600",
    "500": "500 with an OperationOutcome",
    "503": "503 with Retry-After: 3600 and an HTML body",
    "malformed": "200 with JSON cut in the middle",
    "not-json": "200 with an HTML page",
    "not-fhir": "200 with a JSON array",
    "wrong-type": "a search answered with a Patient instead of a Bundle",
    "entry-not-list": "a searchset Bundle whose entry is a number",
    "outcome-in-200": "200 searchset holding only an OperationOutcome of severity error",
    "loop": "a searchset whose next link is the same URL",
    "loop2": "a searchset whose next links alternate between two pages",
    "endless": "a searchset whose next link always leads to one more page",
    "endless-slow": "one more page every time, each after 0.2 s",
    "huge-declared": "200 declaring Content-Length 100 MB, then streaming",
    "huge-chunked": "200 chunked, streaming a Bundle that never ends",
    "gzip-bomb": "200 gzip: 60 KB on the wire, 60 MB once decompressed",
    "reset": "closes the connection as soon as the request is read",
    "garbage": "answers bytes that are not HTTP",
    "redirect": "302 to another host",
    "only-500-Observation": "Observation searches answer 500, everything else is correct",
    "only-500-MedicationRequest": "MedicationRequest searches answer 500, everything else is correct",
    "only-hang-MedicationRequest": "MedicationRequest searches never answer, everything else is correct",
    "only-hang-Observation": "Observation searches never answer, everything else is correct",
}

JWKS_FAULTS: dict[str, str] = {
    "ok": "the key set",
    "slow": "the key set after 3 s",
    "hang": "never answers",
    "drip": "the key set one byte every 0.2 s",
    "down": "503",
    "malformed": "JSON cut in the middle",
    "no-keys": '{"keys": []}',
    "switch": "whatever ``switch`` names (one of the above), changed by the test while it runs",
}


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    fault: str
    method: str
    path: str  # after the fault segment, without the query
    query: str
    authorization: str | None
    at: float  # time.monotonic()


def searchset(resources: Sequence[Mapping[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": dict(r), "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def operation_outcome(text: str, severity: str = "error", code: str = "processing") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


class FaultyServer:
    """The server; ``with FaultyServer(resources) as server:`` starts and stops it."""

    def __init__(self, resources: Sequence[Mapping[str, Any]] = (), jwks: Mapping[str, Any] | None = None):
        self.resources = [dict(r) for r in resources]
        self.jwks: dict[str, Any] = dict(jwks or {"keys": []})
        self.switch = "ok"  # what the "switch" JWKS fault does now
        self.seen: list[Seen] = []
        self.port = 0
        self.open_connections = 0
        self.held = 0  # connections kept waiting (hang faults) until the client gives up and closes them
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> FaultyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        gzip_bomb()  # made once per process, before serving: its first request must not wait for it
        self._thread = threading.Thread(target=self._run, name="faulty-fhir", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("faulty server did not start")

    def stop(self) -> None:
        self._stopping = True
        if self._loop is not None and self._server is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                self._loop.call_soon_threadsafe(self._cancel_all)
        if self._thread is not None:
            self._thread.join(10)

    def _cancel_all(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, limit=1 << 16)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(main())
        self._loop.close()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base(self, fault: str) -> str:
        """The FHIR base URL of a fault."""
        return f"{self.origin}/{fault}/fhir"

    def jwks_url(self, fault: str = "ok") -> str:
        return f"{self.origin}/{fault}/jwks.json"

    def requests(self, fault: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if fault is None or s.fault == fault]

    def wait_released(self, timeout: float = 30.0) -> bool:
        """True once no request is held unanswered any more: every client that gave up on a hanging
        request closed its connection. (Idle keep-alive connections, with no request on them, are the
        client's pool, not a leak, and are not counted.)"""
        deadline = time.monotonic() + timeout
        while self.held and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.held == 0

    # -- HTTP ----------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            while not self._stopping:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = line.split(" ", 2)
                headers = {}
                for header in header_lines:
                    name, sep, value = header.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                parts = urlsplit(target)
                fault, _, rest = parts.path.lstrip("/").partition("/")
                with self._lock:
                    self.seen.append(
                        Seen(fault, method, rest, parts.query, headers.get("authorization"), time.monotonic())
                    )
                keep_alive = await self._respond(fault, rest, parts.query, reader, writer)
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            self.open_connections -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(
        self, fault: str, rest: str, query: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if rest == "jwks.json":
            return await self._jwks(fault, reader, writer)
        path = rest.removeprefix("fhir/")
        if fault == "ok":
            return await self._fhir(path, query, writer)
        if fault.startswith(("only-500-", "only-hang-")):
            kind, rtype = fault.split("-")[1:3]
            if path.split("/")[0].split("?")[0] != rtype:
                return await self._fhir(path, query, writer)
            if kind == "500":
                return await _send(writer, 500, operation_outcome(f"{rtype} store offline"))
            await self._until_closed(reader)
            return False
        handler = getattr(self, "_fault_" + fault.replace("-", "_"), None)
        if handler is None:
            return await _send(writer, 404, operation_outcome(f"no fault named {fault[:40]!r}"))
        keep: bool = await handler(path, query, reader, writer)
        return keep

    async def _fhir(self, path: str, query: str, writer: asyncio.StreamWriter) -> bool:
        status, body = self.answer(path, query)
        return await _send(writer, status, body)

    def answer(self, path: str, query: str) -> tuple[int, dict[str, Any]]:
        """What a correct FHIR server answers for ``Type/id`` or ``Type?patient=...``."""
        rtype, _, rid = path.partition("/")
        if rid:
            for resource in self.resources:
                if resource.get("resourceType") == rtype and resource.get("id") == rid:
                    return 200, resource
            return 404, operation_outcome(f"{rtype} not found", code="not-found")
        try:
            found = local_search.run(f"{rtype}?{query}", self.resources)
        except local_search.UnsupportedSearch as exc:
            return 400, operation_outcome(str(exc), code="not-supported")
        assert isinstance(found, list)
        return 200, searchset(found)

    async def _until_closed(self, reader: asyncio.StreamReader) -> None:
        """Hold the request unanswered until the client closes the connection (or the fault's limit)."""
        self.held += 1
        try:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(), MAX_FAULT_SECONDS)
        finally:
            self.held -= 1

    # -- FHIR faults -----------------------------------------------------------------------------------

    async def _fault_slow_ok(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.4)
        return await self._fhir(path, query, writer)

    async def _fault_late(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(3.0)
        return await self._fhir(path, query, writer)

    async def _fault_hang(self, path: str, query: str, reader: asyncio.StreamReader, writer: Any) -> bool:
        await self._until_closed(reader)
        return False

    async def _fault_hang_after_headers(
        self, path: str, query: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(_head(200, {"Content-Type": "application/fhir+json", "Content-Length": "10000"}))
        await writer.drain()
        await self._until_closed(reader)
        return False

    async def _fault_drip(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(_head(200, {"Content-Type": "application/fhir+json", "Content-Length": "100000"}))
        await _drip(writer, b'{"resourceType": "Bundle", "entry": [' + b" " * 100_000, 0.1)
        return False

    async def _fault_drip_status(
        self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter
    ) -> bool:
        await _drip(writer, _head(200, {"Content-Length": "2"}) + b"{}", 0.1)
        return False

    async def _status(self, status: int, writer: asyncio.StreamWriter, retry: bool = False) -> bool:
        headers = {"Retry-After": "3600"} if retry else {}
        return await _send(
            writer, status, operation_outcome(f"HTTP {status} from the faulty server"), headers
        )

    async def _fault_401(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        return await self._status(401, writer)

    async def _fault_403(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        return await self._status(403, writer)

    async def _fault_404(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        return await self._status(404, writer)

    async def _fault_410(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        return await self._status(410, writer)

    async def _fault_429(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        return await self._status(429, writer, retry=True)

    async def _fault_500(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        return await self._status(500, writer)

    async def _fault_503(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        body = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
        headers = {"Content-Type": "text/html", "Retry-After": "3600"}
        return await _send_raw(writer, 503, body, headers)

    async def _fault_malformed(
        self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter
    ) -> bool:
        full = orjson.dumps(self.answer(path, query)[1])
        return await _send_raw(writer, 200, full[: len(full) // 2], {"Content-Type": "application/fhir+json"})

    async def _fault_not_json(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        body = b"<html><body>Please log in</body></html>"
        return await _send_raw(writer, 200, body, {"Content-Type": "text/html"})

    async def _fault_not_fhir(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        return await _send_raw(writer, 200, b"[1, 2, 3]", {"Content-Type": "application/json"})

    async def _fault_wrong_type(
        self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter
    ) -> bool:
        patient = next((r for r in self.resources if r.get("resourceType") == "Patient"), {})
        return await _send(writer, 200, patient or {"resourceType": "Patient", "id": "x"})

    async def _fault_entry_not_list(
        self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter
    ) -> bool:
        if "?" not in path and "/" in path:
            return await self._fhir(path, query, writer)
        return await _send(writer, 200, {"resourceType": "Bundle", "type": "searchset", "entry": 5})

    async def _fault_outcome_in_200(
        self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter
    ) -> bool:
        if "/" in path:
            return await self._fhir(path, query, writer)
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {
                    "resource": operation_outcome("search failed: index unavailable"),
                    "search": {"mode": "outcome"},
                }
            ],
        }
        return await _send(writer, 200, bundle)

    def _page(self, fault: str, path: str, query: str, next_query: str | None) -> dict[str, Any]:
        status, body = self.answer(path, query.split("&page=")[0])
        if status != 200 or body.get("resourceType") != "Bundle":
            return body
        if next_query is not None:
            body["link"] = [{"relation": "next", "url": f"{self.base(fault)}/{path}?{next_query}"}]
        return body

    async def _fault_loop(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        return await _send(writer, 200, self._page("loop", path, query, query if "/" not in path else None))

    async def _fault_loop2(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        base, _, page = query.partition("&page=")
        following = f"{base}&page={'2' if page != '2' else '1'}"
        return await _send(
            writer, 200, self._page("loop2", path, query, following if "/" not in path else None)
        )

    async def _fault_endless(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        base, _, page = query.partition("&page=")
        following = f"{base}&page={int(page or 1) + 1}"
        return await _send(
            writer, 200, self._page("endless", path, query, following if "/" not in path else None)
        )

    async def _fault_endless_slow(
        self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter
    ) -> bool:
        await asyncio.sleep(0.2)
        base, _, page = query.partition("&page=")
        following = f"{base}&page={int(page or 1) + 1}"
        body = self._page("endless-slow", path, query, following if "/" not in path else None)
        return await _send(writer, 200, body)

    async def _fault_huge_declared(
        self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(_head(200, {"Content-Type": "application/fhir+json", "Content-Length": "100000000"}))
        await _stream(writer, b'{"resourceType": "Bundle", "entry": [', b" " * 65536)
        return False

    async def _fault_huge_chunked(
        self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(_head(200, {"Content-Type": "application/fhir+json", "Transfer-Encoding": "chunked"}))
        entry = b'{"resource": {"resourceType": "Observation", "status": "final"}},' * 1000
        first = b'{"resourceType": "Bundle", "type": "searchset", "entry": ['
        await _stream(writer, _chunk(first), _chunk(entry))
        return False

    async def _fault_gzip_bomb(
        self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter
    ) -> bool:
        headers = {"Content-Type": "application/fhir+json", "Content-Encoding": "gzip"}
        return await _send_raw(writer, 200, gzip_bomb(), headers)

    async def _fault_reset(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.transport.abort()
        return False

    async def _fault_garbage(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n\x00\xff")
        await writer.drain()
        return False

    async def _fault_redirect(self, path: str, query: str, reader: Any, writer: asyncio.StreamWriter) -> bool:
        headers = {"Location": f"http://attacker.example.org/{path}?{query}", "Content-Length": "0"}
        writer.write(_head(302, headers))
        await writer.drain()
        return True

    # -- JWKS --------------------------------------------------------------------------------------

    async def _jwks(self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        body = orjson.dumps(self.jwks)
        if fault == "switch":
            fault = self.switch
        if fault == "ok":
            return await _send_raw(writer, 200, body, {"Content-Type": "application/json"})
        if fault == "slow":
            await asyncio.sleep(3.0)
            return await _send_raw(writer, 200, body, {"Content-Type": "application/json"})
        if fault == "hang":
            await self._until_closed(reader)
            return False
        if fault == "drip":
            writer.write(_head(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}))
            await _drip(writer, body, 0.2)
            return False
        if fault == "down":
            return await _send_raw(writer, 503, b"down for maintenance", {"Content-Type": "text/plain"})
        if fault == "malformed":
            return await _send_raw(writer, 200, body[: len(body) // 2], {"Content-Type": "application/json"})
        if fault == "no-keys":
            return await _send_raw(writer, 200, b'{"keys": []}', {"Content-Type": "application/json"})
        return await _send_raw(writer, 404, b"no such fault", {"Content-Type": "text/plain"})


@functools.cache
def gzip_bomb() -> bytes:
    """60 MB of JSON once decompressed, about 60 KB on the wire."""
    inflated = b'{"resourceType": "Bundle", "type": "searchset", "entry": []' + b" " * 60_000_000 + b"}"
    return gzip.compress(inflated, 9)


# -- wire helpers ----------------------------------------------------------------------------------------


def _about(resource: Mapping[str, Any], patient: str) -> bool:
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, Mapping) and ref.get("reference") == f"Patient/{patient}":
            return True
    return False


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> bool:
    return await _send_raw(
        writer, status, orjson.dumps(body), {"Content-Type": "application/fhir+json", **(headers or {})}
    )


async def _send_raw(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: Mapping[str, str]
) -> bool:
    writer.write(_head(status, {**headers, "Content-Length": str(len(body))}) + body)
    await writer.drain()
    return True


async def _drip(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    deadline = time.monotonic() + MAX_FAULT_SECONDS
    for byte in _bytes(data):
        if time.monotonic() > deadline or writer.is_closing():
            return
        writer.write(byte)
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(interval)


def _bytes(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


async def _stream(writer: asyncio.StreamWriter, first: bytes, repeated: bytes) -> None:
    """Write ``first`` then ``repeated`` until the client goes away (or MAX_FAULT_SECONDS)."""
    deadline = time.monotonic() + MAX_FAULT_SECONDS
    writer.write(first)
    while time.monotonic() < deadline and not writer.is_closing():
        writer.write(repeated)
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_REASONS = {
    200: "OK",
    302: "Found",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
