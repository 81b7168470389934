"""Repeated member names in a request body (docs/reliability.md): RFC 8259 leaves them open and the
parsers keep the last value, as HAPI FHIR, Jackson and .NET do, **except** when the value that would be
thrown away holds FHIR resources (two ``prefetch`` members, a prefetch key twice, two ``resource``
members in a Bundle entry): the EHR sent data the service would silently ignore, so the body is refused.

Checking costs one scan of the bytes: every ``"resourceType"`` must be a resource the decoded body kept
(``count_resources`` counts where CDS Hooks bodies carry them). Only when the counts differ is the body
parsed again with the standard library, keeping every member, to decide exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cds_service.schemas import MalformedJson

_RESOURCE_TYPE = b'"resourceType"'


def contained_count(contained: object) -> int:
    if type(contained) is not list:
        return 0
    return sum(1 for c in contained if type(c) is dict and "resourceType" in c)


def count_resources(root: object) -> int:
    """Resources where CDS Hooks bodies carry them in one value: itself, its contained, its entries."""
    if type(root) is not dict or "resourceType" not in root:
        return 0
    count = 1 + contained_count(root.get("contained"))
    entries = root.get("entry")
    for entry in entries if type(entries) is list else ():
        resource = entry.get("resource") if type(entry) is dict else None
        if type(resource) is dict and "resourceType" in resource:
            count += 1 + contained_count(resource.get("contained"))
    return count


def draft_resources(context: object) -> int:
    return count_resources(context.get("draftOrders")) if isinstance(context, dict) else 0


def kept_resources(data: Mapping[str, Any]) -> int:
    """Resources a parsed body still holds where CDS Hooks bodies carry them (an undercount elsewhere
    only costs the exact check): prefetch values, Bundle entries, ``contained``, ``context.draftOrders``."""
    prefetch = data.get("prefetch")
    values = list(prefetch.values()) if type(prefetch) is dict else []
    return sum(count_resources(v) for v in values) + draft_resources(data.get("context"))


class _DroppedResource(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def refuse_dropped_resources(raw: bytes, kept: int) -> None:
    """``MalformedJson`` when a repeated member name would discard a value holding a FHIR resource.

    Cheap test first: every ``"resourceType"`` in the bytes must be a resource the decoded body kept.
    When the counts differ (a value was dropped, or a resource sits somewhere else) the body is parsed
    again with the standard library, keeping every member, to decide exactly."""
    present = raw.count(_RESOURCE_TYPE)
    if present == 0 or present == kept:
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
    except ValueError:
        return  # not JSON at all: already answered by the parser


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
