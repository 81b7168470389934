"""Writing to a FHIR server (transaction Bundles, single PUTs) for ``load-fixtures``.

The service only reads FHIR, so its client (``cds_service.fhir.client``) has no write methods; these
helpers use the same kind of ``httpx.AsyncClient`` and map failures through the same
``fhir.errors.error_for_status``, so a HAPI 400 and a lenient server's OperationOutcome reach the user
as the server's own diagnostics. The token goes only to the FHIR base given; redirects are not followed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from cds_service.fhir.client import FHIR_JSON, diagnostics_of, join
from cds_service.fhir.errors import (
    FhirInvalidResponse,
    FhirTimeout,
    FhirTransportError,
    error_for_status,
)

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 50_000_000


def headers_for(token: str | None, *, body: bool = False) -> dict[str, str]:
    headers = {"Accept": FHIR_JSON}
    if body:
        # return=minimal: the loader needs statuses and locations, not 40 echoed patients.
        headers.update({"Content-Type": FHIR_JSON, "Prefer": "return=minimal"})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def post_transaction(
    http: httpx.AsyncClient, base: str, bundle: Mapping[str, Any], token: str | None
) -> dict[str, Any]:
    """POST a transaction Bundle to the FHIR base; the transaction-response Bundle."""
    response = await _send(http, "POST", base.rstrip("/"), bundle, token)
    if response.get("resourceType") != "Bundle":
        raise FhirInvalidResponse(
            f"expected a transaction-response Bundle, got {str(response.get('resourceType'))[:40]!r}"
        )
    return response


async def put_resource(
    http: httpx.AsyncClient, base: str, resource: Mapping[str, Any], token: str | None
) -> tuple[int, str | None]:
    """PUT one resource at ``Type/id`` (servers without transactions); HTTP status and Location."""
    url = join(base, f"{resource['resourceType']}/{resource['id']}")
    status, location, _ = await _request(http, "PUT", url, resource, token)
    return status, location


async def _send(
    http: httpx.AsyncClient, method: str, url: str, body: Mapping[str, Any], token: str | None
) -> dict[str, Any]:
    _, _, content = await _request(http, method, url, body, token)
    if not content.strip():
        return {}
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise FhirInvalidResponse("FHIR server sent malformed JSON") from exc
    if not isinstance(data, dict):
        raise FhirInvalidResponse("FHIR server sent JSON that is not a FHIR resource")
    return data


async def _request(
    http: httpx.AsyncClient, method: str, url: str, body: Mapping[str, Any], token: str | None
) -> tuple[int, str | None, bytes]:
    try:
        response = await http.request(
            method, url, content=orjson.dumps(body), headers=headers_for(token, body=True)
        )
    except httpx.TimeoutException as exc:
        raise FhirTimeout(f"FHIR server timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise FhirTransportError(f"FHIR server unreachable ({type(exc).__name__})") from exc
    except httpx.InvalidURL as exc:
        raise FhirTransportError("invalid FHIR URL") from exc
    content = response.content
    if len(content) > MAX_RESPONSE_BYTES:
        raise FhirInvalidResponse(f"response larger than {MAX_RESPONSE_BYTES} bytes")
    if response.status_code >= 400:
        raise error_for_status(response.status_code, diagnostics_of(content))
    return response.status_code, response.headers.get("location"), content
