"""Reading request bodies: media type (415) and size limit (413); other JSON bodies (feedback) are parsed
here with orjson, hook bodies by ``hookbody`` (which decodes only what the rules can use).

orjson rejects NaN, invalid UTF-8 and nesting deeper than 1024 levels by itself. Duplicate member names
are resolved last-wins (RFC 8259 leaves it open; HAPI FHIR, Jackson and .NET do the same), **except**
when the value that last-wins would throw away holds FHIR resources: the body is refused (400,
``repeated_members``, docs/reliability.md).

A 413 is followed by a lingering close (RFC 9112 §9.6): the rest of the body is read and discarded,
up to a bound, before the answer goes out. A client that sends its whole body before reading (urllib,
Java's HttpURLConnection, many EHR integration engines) then reads the 413 instead of a connection
reset. The bound (bodies up to three times the limit; 30 s in all, 5 s without data: nginx's
lingering defaults) keeps a client from holding the connection open by sending for ever.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from cds_service.api.errors import RequestTooLarge, UnsupportedMediaType
from cds_service.capped import read_capped
from cds_service.repeated_members import kept_resources, refuse_dropped_resources
from cds_service.schemas import json_object


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body of a JSON request: 415 for another media type, 413 past ``limit`` bytes."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type {media[:60]!r} is not supported; send application/json")
    try:
        return await read_capped(
            request.stream(),
            request.headers.get("content-length"),
            limit,
            lambda problem: RequestTooLarge(f"request body {problem}"),
        )
    except RequestTooLarge:
        await discard_rest(request, limit)
        raise


#: The largest body a lingering close reads to its end, as a multiple of the limit, and for how long.
LINGER_FACTOR = 3
LINGER_SECONDS = 30.0
LINGER_IDLE_SECONDS = 5.0


async def discard_rest(request: Request, limit: int) -> None:
    """Read and drop what is left of a refused body, within the bounds above. Not when the client
    waits for ``100 Continue`` on a declared length (refused from the header, it has sent nothing), nor
    when the declared length is past the bound (the reset is then unavoidable: say so fast)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        if request.headers.get("expect", "").lower() == "100-continue":
            return
        if int(declared) > limit * LINGER_FACTOR:
            return
    budget = limit * LINGER_FACTOR
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            while budget > 0:
                message = await asyncio.wait_for(request.receive(), LINGER_IDLE_SECONDS)
                if message["type"] != "http.request":
                    return
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body (feedback), parsed with orjson."""
    raw = await read_body(request, limit)
    data = json_object(raw)
    refuse_dropped_resources(raw, kept_resources(data))
    return data
