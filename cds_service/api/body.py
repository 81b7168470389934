"""Reading request bodies: size limit (413), media type (415), JSON object (400), parsed with orjson.

orjson is ~2x faster than the stdlib on large prefetches and rejects NaN, invalid UTF-8 and nesting
deeper than 1024 levels by itself. Duplicate member names are resolved last-wins (RFC 8259 leaves it
open); see docs/decisions.md.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from cds_service.api.errors import MalformedJson, RequestTooLarge, UnsupportedMediaType


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type {media[:60]!r} is not supported; send application/json")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    try:
        data = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"body is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(data, dict):
        raise MalformedJson("body must be a JSON object")
    return data
