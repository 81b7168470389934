"""Reading request bodies: media type (415) and size limit (413); other JSON bodies (feedback) are parsed
here with orjson, hook bodies by ``hookbody`` (which decodes only what the rules can use).

orjson rejects NaN, invalid UTF-8 and nesting deeper than 1024 levels by itself. Duplicate member names
are resolved last-wins (RFC 8259 leaves it open; HAPI FHIR, Jackson and .NET do the same), **except**
when the value that last-wins would throw away holds FHIR resources: the body is refused (400,
``repeated_members``, docs/reliability.md).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from cds_service.api.errors import RequestTooLarge, UnsupportedMediaType
from cds_service.capped import read_capped
from cds_service.repeated_members import kept_resources, refuse_dropped_resources
from cds_service.schemas import MalformedJson


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body of a JSON request: 415 for another media type, 413 past ``limit`` bytes."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type {media[:60]!r} is not supported; send application/json")
    return await read_capped(
        request.stream(),
        request.headers.get("content-length"),
        limit,
        lambda problem: RequestTooLarge(f"request body {problem}"),
    )


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body (feedback), parsed with orjson."""
    raw = await read_body(request, limit)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"body is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(data, dict):
        raise MalformedJson("body must be a JSON object")
    refuse_dropped_resources(raw, kept_resources(data))
    return data
