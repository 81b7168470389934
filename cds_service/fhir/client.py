"""The one FHIR client: reads and paged searches over a shared ``httpx.AsyncClient`` (and, for the
implementer tool ``load-fixtures`` only, transaction POSTs and PUTs; the service itself never writes).

- Responses are streamed and cut off past ``max_response_bytes`` (a hostile or broken server cannot
  exhaust memory); the caller bounds the total time with ``asyncio.timeout``.
- ``link[next]`` is followed up to ``max_pages``, never twice to the same URL, and only on the origin of
  the FHIR base URL: the bearer token is never sent anywhere else.
- Every failure becomes a ``FhirError`` (see ``fhir.errors``); HAPI (400 on unknown search parameters)
  and lenient servers (200 plus an OperationOutcome entry) are both handled.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import orjson

from cds_service.capped import ACCEPTED_ENCODINGS, UnsupportedEncoding, decoded, read_capped
from cds_service.fhir.errors import (
    FhirError,
    FhirInvalidResponse,
    FhirTimeout,
    FhirTransportError,
    error_for_status,
)
from cds_service.fhir.outcomes import diagnostics_of

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


@dataclass
class SearchResult:
    """Resources from all pages, plus what the server said in OperationOutcome entries."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0


@dataclass(frozen=True)
class FhirLimits:
    max_response_bytes: int = 25_000_000
    max_pages: int = 20
    max_resources: int = 50_000
    page_size: int = 500


Observer = Callable[[str, float], None]
"""Told the outcome ("ok" or the error class) and duration of every request: metrics, never the URL."""


#: Connection failures after which a GET is sent once more (not connect errors: nothing was sent,
#: and a refused or unresolvable server refuses again).
RETRIED_ONCE = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class FhirClient:
    """Stateless apart from the shared connection pool; the token is passed per call, never stored."""

    def __init__(
        self, http: httpx.AsyncClient, limits: FhirLimits | None = None, observe: Observer | None = None
    ) -> None:
        self.http = http
        self.limits = limits or FhirLimits()
        self.observe = observe

    async def get(self, url: str, token: str | None) -> dict[str, Any]:
        """GET one FHIR JSON resource (absolute URL)."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self._get(url, token)
        except FhirError as exc:
            outcome = type(exc).__name__
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if self.observe is not None:
                self.observe(outcome, time.perf_counter() - started)

    async def transaction(self, base: str, bundle: Mapping[str, Any], token: str | None) -> dict[str, Any]:
        """POST a transaction Bundle to the FHIR base; the transaction-response Bundle."""
        _, _, body = await self._exchange("POST", base.rstrip("/"), token, bundle)
        response = _parse_resource(body) if body.strip() else {}
        if response.get("resourceType") != "Bundle":
            raise FhirInvalidResponse(
                f"expected a transaction-response Bundle, got {str(response.get('resourceType'))[:40]!r}"
            )
        return response

    async def put(self, base: str, resource: Mapping[str, Any], token: str | None) -> tuple[int, str | None]:
        """PUT one resource at ``Type/id`` (servers without transactions); HTTP status and Location."""
        url = join(base, f"{resource['resourceType']}/{resource['id']}")
        status, location, _ = await self._exchange("PUT", url, token, resource)
        return status, location

    async def _get(self, url: str, token: str | None) -> dict[str, Any]:
        """A GET that fails on the connection itself (reset, closed before the answer) is sent once
        more: a pooled keep-alive connection the server closed just as it was reused fails that way,
        and a GET is safe to repeat (RFC 9110 §9.2.2; browsers and urllib3 do the same). Timeouts
        are not repeated: the call's one deadline covers both attempts."""
        try:
            _, _, body = await self._exchange("GET", url, token)
        except FhirTransportError as exc:
            if not isinstance(exc.__cause__, RETRIED_ONCE):
                raise
            _, _, body = await self._exchange("GET", url, token)
        return _parse_resource(body)

    async def _exchange(
        self, method: str, url: str, token: str | None, resource: Mapping[str, Any] | None = None
    ) -> tuple[int, str | None, bytes]:
        """One request; status, Location and the (size-capped) body, or a ``FhirError``."""
        headers = {"Accept": FHIR_JSON, "Accept-Encoding": ACCEPTED_ENCODINGS}
        content = None
        if resource is not None:
            content = orjson.dumps(resource)
            # return=minimal: the loader needs statuses and locations, not 40 echoed patients
            headers.update({"Content-Type": FHIR_JSON, "Prefer": "return=minimal"})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with self.http.stream(method, url, headers=headers, content=content) as response:
                body = await self._read_capped(response)
                if response.status_code >= 400:
                    raise error_for_status(response.status_code, diagnostics_of(body))
                return response.status_code, response.headers.get("location"), body
        except httpx.TimeoutException as exc:
            raise FhirTimeout(f"FHIR server timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise FhirTransportError(f"FHIR server unreachable ({type(exc).__name__})") from exc
        except httpx.InvalidURL as exc:
            raise FhirTransportError("invalid FHIR URL") from exc

    async def read(self, base: str, relative: str, token: str | None) -> dict[str, Any]:
        """``Type/id`` relative to the FHIR base."""
        return await self.get(join(base, relative), token)

    async def search(
        self,
        base: str,
        relative: str | None,
        token: str | None,
        *,
        after: Mapping[str, Any] | None = None,
        into: SearchResult | None = None,
    ) -> SearchResult:
        """A search (``Type?params``), following ``next`` links; or, with ``after``, the pages that follow
        a Bundle page already read (the EHR's first page). Resources accumulate in ``into`` as pages
        arrive, so a caller whose time runs out keeps what was read."""
        result = into if into is not None else SearchResult()
        seen: set[str] = set()
        page: Mapping[str, Any]
        if after is not None:
            page = after
        else:
            assert relative is not None
            url = join(base, self._with_count(relative))
            seen.add(url)
            page = await self.get(url, token)
        while True:
            if page.get("resourceType") != "Bundle":
                raise FhirInvalidResponse(f"expected a Bundle, got {str(page.get('resourceType'))[:40]!r}")
            if page is not after:
                result.pages += 1
                _collect(page, result)
            if len(result.resources) > self.limits.max_resources:
                raise FhirInvalidResponse(f"more than {self.limits.max_resources} resources")
            next_url = _next_link(page)
            if next_url is None:
                return result
            next_url = _upgrade_scheme(base, urljoin(base.rstrip("/") + "/", next_url))
            if not same_origin(base, next_url):
                raise FhirInvalidResponse("next link leaves the FHIR server; not followed")
            if next_url in seen:
                raise FhirInvalidResponse("paging loop: a next link repeats")
            if result.pages >= self.limits.max_pages:
                raise FhirInvalidResponse(f"more than {self.limits.max_pages} pages")
            seen.add(next_url)
            page = await self.get(next_url, token)

    def _with_count(self, relative: str) -> str:
        if "?" in relative and "_count=" not in relative:
            return f"{relative}&_count={self.limits.page_size}"
        return relative

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """The body, decompressed here, not by httpx, so that the size limit bounds what is inflated."""
        limit = self.limits.max_response_bytes
        try:
            return await read_capped(
                decoded(response.aiter_raw(), response.headers.get("content-encoding"), limit),
                None if response.headers.get("content-encoding") else response.headers.get("content-length"),
                limit,
                lambda problem: FhirInvalidResponse(f"response {problem}"),
            )
        except (UnsupportedEncoding, zlib.error) as exc:
            raise FhirInvalidResponse(f"response body cannot be decoded ({exc})") from exc


def join(base: str, relative: str) -> str:
    return f"{base.rstrip('/')}/{relative.lstrip('/')}"


def _upgrade_scheme(base: str, url: str) -> str:
    """HAPI behind a TLS proxy writes ``http://`` next links for an ``https://`` base: same host, so follow
    it over https (the token is never sent over plain http, and never to another host)."""
    a, b = urlsplit(base), urlsplit(url)
    if a.scheme == "https" and b.scheme == "http" and a.hostname == b.hostname and b.port in (None, 80):
        return urlunsplit(("https", a.netloc, b.path, b.query, b.fragment))
    return url


def same_origin(base: str, url: str) -> bool:
    a, b = urlsplit(base), urlsplit(url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _parse_resource(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FhirInvalidResponse("FHIR server sent malformed JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise FhirInvalidResponse("FHIR server sent JSON that is not a FHIR resource")
    return data


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _collect(page: Mapping[str, Any], result: SearchResult) -> None:
    """The page's resources, and its OperationOutcome entries apart. A server's untrusted JSON: an
    ``entry`` or ``link`` that is not a list makes the page invalid, never an unexpected error."""
    for member in ("entry", "link"):
        if page.get(member) is not None and not isinstance(page.get(member), list):
            raise FhirInvalidResponse(f"Bundle.{member} is not a list")
    for entry in _list(page.get("entry")):
        if not isinstance(entry, Mapping):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        mode = (entry.get("search") or {}).get("mode") if isinstance(entry.get("search"), Mapping) else None
        if resource.get("resourceType") == "OperationOutcome" and mode in (None, "outcome"):
            result.outcomes.append(resource)
        else:
            result.resources.append(resource)


def _next_link(page: Mapping[str, Any]) -> str | None:
    for link in _list(page.get("link")):
        if isinstance(link, Mapping) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


__all__ = [
    "FhirClient",
    "FhirError",
    "FhirLimits",
    "SearchResult",
]
