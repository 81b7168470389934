"""A FHIR server as strict as the strictest EHR: a real one (sekmet) behind a thin enforcing proxy.

Every request is forwarded to sekmet, which filters by ``code`` and ``category`` faithfully; the proxy
refuses first what the EHR it imitates refuses, in that EHR's words:

- ``generic``: only Epic's documented rule, which the issue's tester enforced: an Observation search with
  ``patient`` but neither ``code`` nor ``category`` is a 400 OperationOutcome ("Both patient and code or
  category are required").
- ``epic``: that rule, plus what Epic's R4 API does (docs/ehr-profiles.md): no MedicationStatement (an
  HTML 404 from IIS), Observation categories other than Epic's are refused (400), and a Condition
  search without ``clinical-status`` returns active Conditions only.

Next links are rewritten to the proxy, so paging goes through it too. No pytest here: the benchmark
(``scripts/bench_fhir.py``) uses it as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.reliability.servers import ServiceThread

Mode = Literal["generic", "epic"]
EPIC_CATEGORIES = frozenset(
    {
        "laboratory", "vital-signs", "social-history", "core-characteristics", "LDA", "LDA-property",
        "LDA-assessment", "functional-mental-status", "periodontal", "labor-delivery", "newborn-delivery",
        "obstetrics-gynecology", "survey", "sdoh", "imaging", "smartdata",
    }
)  # fmt: skip


def outcome(status: int, code: str, text: str) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "fatal", "code": code, "diagnostics": text}],
    }
    return Response(orjson.dumps(body), status, media_type="application/fhir+json")


@dataclass
class StrictFhir:
    """The proxy's rules and its record of what it refused (for the tests' assertions)."""

    upstream: str  # sekmet's base URL
    mode: Mode
    refused: list[str] = field(default_factory=list)  # the queries it refused
    seen: list[str] = field(default_factory=list)  # every request it received
    base: str = ""  # the proxy's own base URL, known once it listens

    def app(self) -> Starlette:
        clients: list[httpx.AsyncClient] = []

        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            # idle connections let go well before sekmet's keep-alive timeout closes them under a request
            limits = httpx.Limits(keepalive_expiry=1.0)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                clients.append(client)
                yield

        async def handle(request: Request) -> Response:
            client = clients[0]
            path = request.path_params["path"]
            params = list(request.query_params.multi_items())
            self.seen.append(f"{path}?{urlencode(params)}")
            refusal = self.refusal(request.method, path, params)
            if refusal is not None:
                self.refused.append(f"{path}?{urlencode(params)}")
                return refusal
            if self.mode == "epic" and path == "Condition" and not _has(params, "clinical-status"):
                params.append(("clinical-status", "active"))  # Epic: active Conditions only
            headers = {k: v for k, v in request.headers.items() if k in ("authorization", "accept")}
            upstream = await client.request(
                request.method,
                f"{self.upstream}/{path}",
                params=httpx.QueryParams(list(params)),
                headers=headers,
                content=await request.body() or None,
            )
            body = upstream.content.replace(self.upstream.encode(), self.base.encode())
            return Response(body, upstream.status_code, media_type=upstream.headers.get("content-type"))

        routes = [Route("/fhir/{path:path}", handle, methods=["GET", "POST", "PUT"])]
        return Starlette(routes=routes, lifespan=lifespan)

    def refusal(self, method: str, path: str, params: list[tuple[str, str]]) -> Response | None:
        kind = path.split("/")[0]
        search = method == "GET" and "/" not in path
        if self.mode == "epic" and kind == "MedicationStatement":
            return Response("<html><body>404 - File or directory not found.</body></html>", 404)
        if not (search and kind == "Observation"):
            return None
        if (_has(params, "patient") or _has(params, "subject")) and not (
            _has(params, "code") or _has(params, "category")
        ):
            return outcome(400, "required", "Both patient and code or category are required.")
        if self.mode == "epic":
            asked = {c for k, v in params if k == "category" for c in v.split(",")}
            if asked - EPIC_CATEGORIES:
                return outcome(
                    400, "not-supported", f"Category {sorted(asked - EPIC_CATEGORIES)} not supported."
                )
        return None


def _has(params: list[tuple[str, str]], name: str) -> bool:
    return any(k.split(":")[0] == name for k, _ in params)


@contextmanager
def strict_fhir(upstream: str, mode: Mode) -> Iterator[StrictFhir]:
    """The proxy listening on 127.0.0.1 in a thread, in front of ``upstream``."""
    proxy = StrictFhir(upstream.rstrip("/"), mode)
    server: Any = ServiceThread(proxy.app())  # type: ignore[arg-type]
    with server:
        proxy.base = f"{server.url}/fhir"
        yield proxy
