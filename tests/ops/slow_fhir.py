"""A real, deliberately slow FHIR server (threads, loopback) serving one patient's searches: keeps hook
calls in flight long enough to send a signal in the middle of them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from cds_service.fixtures import searchset


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # many calls connect at once; the default backlog is 5
    daemon_threads = True


class SlowFhir:
    """The server's base URL, and how many requests have arrived (counted before the delay)."""

    def __init__(self) -> None:
        self.base = ""
        self._arrived = 0
        self._changed = threading.Condition()

    def arrived(self) -> None:
        with self._changed:
            self._arrived += 1
            self._changed.notify_all()

    def wait_for(self, requests: int, timeout: float = 60.0) -> bool:
        """True once ``requests`` requests are being served (the calls that sent them are in flight)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._arrived >= requests, timeout)


@contextmanager
def slow_fhir_server(resources: list[Mapping[str, Any]], delay: float) -> Iterator[SlowFhir]:
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(str(r["resourceType"]), []).append(r)

    state = SlowFhir()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.arrived()
            time.sleep(delay)
            path = urlsplit(self.path).path.removeprefix("/fhir/")
            rtype, _, rid = path.partition("/")
            body: Any = (
                next((r for r in by_type.get(rtype, []) if r.get("id") == rid), None)
                if rid
                else (searchset(by_type.get(rtype, [])))
            )
            data = json.dumps(
                body
                or {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}
            ).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
