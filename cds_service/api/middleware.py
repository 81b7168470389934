"""Per-request context, as a pure ASGI middleware (no body buffering, negligible cost):

- a correlation id for every log line of the request (``X-Request-ID`` if the caller sent a sane one,
  else generated; the orchestrator replaces it with the hookInstance), echoed in ``X-Request-ID``;
- hook-call metrics by service, hook and final HTTP status (after the exception handlers), with latency.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from uuid import uuid4

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds_service.logs import correlation_id
from cds_service.metrics import Metrics

_REQUEST_ID = re.compile(r"^[A-Za-z0-9\-_.:]{1,64}$")
_HOOK_PATH = re.compile(r"^/cds-services/([a-z0-9\-]{1,64})$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, hooks_by_service: Mapping[str, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.hooks_by_service = dict(hooks_by_service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = correlation_id.set(self._incoming_id(scope) or uuid4().hex[:16])
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", correlation_id.get())
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._observe(scope, status, time.perf_counter() - started)
            correlation_id.reset(token)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        if scope.get("method") != "POST":
            return
        match = _HOOK_PATH.match(scope.get("path", ""))
        if match is None:
            return
        service = match.group(1) if match.group(1) in self.hooks_by_service else "unknown"
        hook = self.hooks_by_service.get(service, "unknown")
        self.metrics.hook_calls.labels(service, hook, str(status)).inc()
        self.metrics.hook_duration.labels(service).observe(seconds)

    @staticmethod
    def _incoming_id(scope: Scope) -> str | None:
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                text = value.decode("latin-1")
                return text if _REQUEST_ID.match(text) else None
        return None
