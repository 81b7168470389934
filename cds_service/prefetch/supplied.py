"""What the EHR sent for one prefetch key (CDS Hooks 2.0.1 §Prefetch): a resource, a Bundle, ``null``,
or an OperationOutcome saying it could not obtain the data.

A Bundle is untrusted JSON: only well-formed entries count. An OperationOutcome entry of error or fatal
severity means the EHR's search did not complete (the key is then fetched by the service if it can);
informational ones, such as Epic's "no results" (4101), are not patient data and not errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.fhir.outcomes import outcome_is_error, outcome_text


class InvalidPrefetch(ValueError):
    """A prefetch value is not FHIR at all (a client bug: HTTP 400 naming the key)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


@dataclass
class Supplied:
    """One supplied value, read: its resources, why the EHR could not obtain it, or its next page."""

    resources: list[dict[str, Any]] = field(default_factory=list)  # those a rule could use, at least
    problem: str | None = None  # the EHR could not obtain the data (an OperationOutcome)
    first_page: Mapping[str, Any] | None = None  # a Bundle with link[next]: the rest is to be paged
    total: int | None = None  # resources the EHR sent (None: all of them are in ``resources``)

    @property
    def count(self) -> int:
        return len(self.resources) if self.total is None else self.total


def read_supplied(key: str, value: object) -> Supplied | None:
    """None for ``null`` (no data, never refetched); raises ``InvalidPrefetch`` for what is not FHIR."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise InvalidPrefetch(key, "must be a FHIR resource, a Bundle or null")
    kind = value["resourceType"]
    if kind == "OperationOutcome":
        return Supplied(problem=outcome_text(value) or "OperationOutcome without details")
    if kind != "Bundle":
        return Supplied([value])
    resources, problem = _read_bundle(key, value)
    if problem is not None:
        return Supplied(problem=problem)
    return Supplied(resources, first_page=value if has_next(value) else None)


def _read_bundle(key: str, bundle: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """One pass over a supplied Bundle: its resources, or why the EHR could not obtain them."""
    entries = bundle.get("entry")
    if entries is None:
        return [], None
    if not isinstance(entries, list):
        raise InvalidPrefetch(key, "Bundle.entry must be an array")
    resources: list[dict[str, Any]] = []
    for entry in entries:
        resource = entry.get("resource") if type(entry) is dict else None
        if type(resource) is not dict:
            continue
        if resource.get("resourceType") != "OperationOutcome":
            resources.append(resource)
        elif outcome_is_error(resource):
            return [], outcome_text(resource) or "OperationOutcome entry"
    return resources, None


def has_next(bundle: Mapping[str, Any]) -> bool:
    """A ``next`` link with a URL (one without is no link: the page is all there is)."""
    links = bundle.get("link")
    return isinstance(links, list) and any(
        isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str)
        for link in links
    )
