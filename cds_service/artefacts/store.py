"""The built artefacts, indexed for the ``/fhir`` routes: read by id, search, and the two Bundles (a
searchset for a search, a transaction for ``cds-service export-fhir``).

Search follows FHIR's rules for the parameters it supports (``_id``, ``url``, ``version`` exact; ``name``,
``title`` case-insensitive, starting with the value, or ``:exact`` / ``:contains``; a comma means "or";
empty values are ignored) and refuses any other parameter with a 400 rather than ignoring it: a client
that filters on something unsupported would otherwise receive every resource and believe they match.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from cds_service.artefacts.capability import SEARCH_PARAMS

_STRING_MODIFIERS = ("", "exact", "contains")
_JSON_FORMATS = ("json", "application/json", "application/fhir+json")


class UnknownResource(LookupError):
    """No resource of this type with this id."""

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(f"Unknown {resource_type} {resource_id[:120]!r}; see GET /fhir/{resource_type}")


class UnsupportedSearch(ValueError):
    """A search or operation parameter the facade does not support (the message names it)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class FhirArtefacts:
    """Every resource by (type, id), serialised once; the CapabilityStatement apart (not exported)."""

    resources: Mapping[tuple[str, str], Mapping[str, Any]]
    capability: Mapping[str, Any]
    _encoded: dict[tuple[str, str], bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = {key: orjson.dumps(resource) for key, resource in self.resources.items()}
        object.__setattr__(self, "_encoded", encoded)

    def of_type(self, resource_type: str) -> list[Mapping[str, Any]]:
        return [r for (t, _), r in self.resources.items() if t == resource_type]

    def counts(self) -> dict[str, int]:
        return dict(Counter(resource_type for resource_type, _ in self.resources))

    def read(self, resource_type: str, resource_id: str) -> Mapping[str, Any]:
        try:
            return self.resources[(resource_type, resource_id)]
        except KeyError:
            raise UnknownResource(resource_type, resource_id) from None

    def encoded(self, resource_type: str, resource_id: str) -> bytes:
        """The resource as served (``read`` raises ``UnknownResource`` first)."""
        self.read(resource_type, resource_id)
        return self._encoded[(resource_type, resource_id)]

    def search(
        self, resource_type: str, params: Iterable[tuple[str, str]]
    ) -> tuple[list[Mapping[str, Any]], bool]:
        """The matching resources, and whether only the count was asked for (``_summary=count``)."""
        found = self.of_type(resource_type)
        count_only = False
        for key, value in params:
            name, _, modifier = key.partition(":")
            if value == "" or name == "_count":  # FHIR: ignore empty values; one page holds everything
                continue
            if name == "_format" and value in _JSON_FORMATS:
                continue
            if name == "_summary" and value == "count":
                count_only = True
                continue
            _check(key, name, modifier)
            wanted = value.split(",")
            found = [r for r in found if any(_matches(r, name, modifier, w) for w in wanted)]
        return found, count_only

    def expand(self, params: Iterable[tuple[str, str]], resource_id: str | None = None) -> Mapping[str, Any]:
        """``$expand``: the ValueSet (by id, or by ``url`` at type level) with its precomputed expansion;
        without ``compose`` unless ``includeDefinition=true``, as a terminology server answers."""
        url, definition = None, False
        for key, value in params:
            if key == "url" and resource_id is None:
                url = value
            elif key == "includeDefinition" and value in ("true", "false"):
                definition = value == "true"
            elif key != "_format" or value not in _JSON_FORMATS:
                supported = "includeDefinition" if resource_id else "url, includeDefinition"
                raise UnsupportedSearch(key, f"$expand parameter {key[:40]!r} is not supported ({supported})")
        if resource_id is not None:
            found = self.read("ValueSet", resource_id)
        elif not url:
            raise UnsupportedSearch("url", "$expand needs the value set: its id in the path, or url=")
        else:
            canonical, _, version = url.partition("|")
            matches = [
                r for r in self.of_type("ValueSet") if r["url"] == canonical and version in ("", r["version"])
            ]
            if not matches:
                raise UnknownResource("ValueSet", url)
            found = matches[0]
        return found if definition else {k: v for k, v in found.items() if k != "compose"}

    def knowledge(self) -> list[Mapping[str, Any]]:
        """What is exported: value sets first, then the orders, then the plans that refer to both."""
        order = {"ValueSet": 0, "ActivityDefinition": 1, "PlanDefinition": 2}
        return sorted(self.resources.values(), key=lambda r: order.get(str(r["resourceType"]), 3))


def _check(key: str, name: str, modifier: str) -> None:
    if name not in SEARCH_PARAMS:
        supported = ", ".join([*SEARCH_PARAMS, "_count", "_summary=count", "_format=json"])
        raise UnsupportedSearch(
            key, f"Search parameter {key[:40]!r} is not supported (supported: {supported})"
        )
    allowed = _STRING_MODIFIERS if SEARCH_PARAMS[name][0] == "string" else ("",)
    if modifier not in allowed:
        raise UnsupportedSearch(key, f"Modifier {modifier[:20]!r} is not supported on {name!r}")


def _matches(resource: Mapping[str, Any], name: str, modifier: str, wanted: str) -> bool:
    value = str(resource.get("id" if name == "_id" else name) or "")
    if SEARCH_PARAMS[name][0] != "string":
        return value == wanted
    if modifier == "exact":
        return value == wanted
    if modifier == "contains":
        return wanted.casefold() in value.casefold()
    return value.casefold().startswith(wanted.casefold())


def searchset(
    resource_type: str,
    resources: Sequence[Mapping[str, Any]],
    fhir_base: str,
    self_url: str,
    count_only: bool,
) -> dict[str, Any]:
    """A searchset Bundle: ``fhir_base`` is where ``/fhir`` is reached (absolute)."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": [{"relation": "self", "url": self_url}],
    }
    if resources and not count_only:
        bundle["entry"] = [
            {
                "fullUrl": f"{fhir_base}/{resource_type}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ]
    return bundle


def transaction(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A transaction that PUTs every resource at its id: loading it twice updates, it never duplicates.
    ``fullUrl`` is the canonical URL, which ends in ``<type>/<id>`` as FHIR requires."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": r["url"],
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }
