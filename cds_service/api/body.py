"""Reading request bodies: size limit (413), media type (415), JSON object (400), parsed with orjson.

orjson is ~2x faster than the stdlib on large prefetches and rejects NaN, invalid UTF-8 and nesting
deeper than 1024 levels by itself. Duplicate member names are resolved last-wins (RFC 8259 leaves it
open; HAPI FHIR, Jackson and .NET do the same), **except** when the value that last-wins would throw
away holds FHIR resources (two ``prefetch`` members, a prefetch key twice, two ``resource`` members in a
Bundle entry): the EHR sent data the service would silently ignore, so the body is refused (400).
Detecting that costs one scan of the body (``"resourceType"`` counted in the bytes and in the parsed
data); only when the counts differ is the body parsed again to find the duplicate (docs/reliability.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Request

from cds_service.api.errors import MalformedJson, RequestTooLarge, UnsupportedMediaType
from cds_service.capped import read_capped

_RESOURCE_TYPE = b'"resourceType"'


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type {media[:60]!r} is not supported; send application/json")
    raw = await read_capped(
        request.stream(),
        request.headers.get("content-length"),
        limit,
        lambda problem: RequestTooLarge(f"request body {problem}"),
    )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"body is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(data, dict):
        raise MalformedJson("body must be a JSON object")
    refuse_dropped_resources(raw, data)
    return data


class _DroppedResource(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def refuse_dropped_resources(raw: bytes, data: Mapping[str, Any]) -> None:
    """MalformedJson when a repeated member name would discard a value holding a FHIR resource.

    Cheap test first: every ``"resourceType"`` in the bytes must be a resource the parsed data still
    holds (counted where resources live: prefetch values, Bundle entries, ``contained``,
    ``context.draftOrders``). When the counts differ (a value was dropped, or a resource sits somewhere
    else) the body is parsed again with the standard library, keeping every member, to decide exactly.
    """
    present = raw.count(_RESOURCE_TYPE)
    if present == 0 or present == _kept_resources(data):
        return
    try:
        json.loads(raw, object_pairs_hook=_members_checked)
    except _DroppedResource as dropped:
        raise MalformedJson(
            f"member {dropped.name[:40]!r} appears twice in one object and the value that would be ignored "
            "holds FHIR data; send each member once"
        ) from None
    except RecursionError:
        raise MalformedJson("body is nested too deeply to be checked for repeated members") from None


def _members_checked(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members and _holds_resource(members[name]):
            raise _DroppedResource(name)
        members[name] = value
    return members


def _holds_resource(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("resourceType"), str):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _kept_resources(data: Mapping[str, Any]) -> int:
    """Resources where CDS Hooks bodies carry them (an undercount elsewhere only costs the exact check).
    Runs on every request: plain loops, ``type(x) is dict`` (orjson builds exactly dicts and lists)."""
    roots: list[Any] = []
    prefetch = data.get("prefetch")
    if type(prefetch) is dict:
        roots.extend(prefetch.values())
    context = data.get("context")
    if type(context) is dict:
        roots.append(context.get("draftOrders"))
    count = 0
    for root in roots:
        if type(root) is not dict or "resourceType" not in root:
            continue
        count += 1 + _contained(root)
        entries = root.get("entry")
        if type(entries) is not list:
            continue
        for entry in entries:
            resource = entry.get("resource") if type(entry) is dict else None
            if type(resource) is dict and "resourceType" in resource:
                count += 1
                if "contained" in resource:
                    count += _contained(resource)
    return count


def _contained(resource: dict[str, Any]) -> int:
    contained = resource.get("contained")
    if type(contained) is not list:
        return 0
    return sum(1 for c in contained if type(c) is dict and "resourceType" in c)
