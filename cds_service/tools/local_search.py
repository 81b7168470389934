"""FHIR R4 search over a patient's resources held in memory, as an EHR runs a prefetch template.

Used to build hook requests the way an EHR would (``prefetch_for``, ``everything_prefetch``) and by
the tests' strict FHIR server: reads (``Type/id``) and searches with the parameters prefetch
templates use, matched as FHIR R4 defines token search (§2.1.1.4.9): ``code=c`` matches a coding
with that code in any system, ``code=s|c`` only in system ``s``, commas OR values, parameters AND.
A parameter it does not know raises ``UnsupportedSearch``
(a strict server answers 400), so a template can never be silently widened.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from cds_service.config import PROJECT_ROOT
from cds_service.fixtures import searchset
from cds_service.prefetch.templates import render

#: Search parameter -> the element(s) holding its tokens, per resource type (None: any type).
TOKEN_PATHS: dict[str, tuple[str, ...]] = {
    "code": ("code",),
    "category": ("category",),
    "clinical-status": ("clinicalStatus",),
    "status": ("status",),
    "intent": ("intent",),
}
REFERENCE_PARAMS = {"patient": ("subject", "patient"), "subject": ("subject",)}
IGNORED = {"_count", "_sort"}


class UnsupportedSearch(ValueError):
    """A search parameter or form this server does not support (a strict server answers 400)."""


def run(
    relative: str, resources: Iterable[Mapping[str, Any]]
) -> dict[str, Any] | list[dict[str, Any]] | None:
    """A read: the resource (None: not found). A search: the matching resources, in input order."""
    path, _, query = relative.partition("?")
    items = [dict(r) for r in resources]
    if not query and "/" in path:
        kind, rid = path.split("/", 1)
        return next((r for r in items if r.get("resourceType") == kind and r.get("id") == rid), None)
    params = parse_qsl(query, keep_blank_values=True)
    return [r for r in items if r.get("resourceType") == path and all(matches(r, p, v) for p, v in params)]


def matches(resource: Mapping[str, Any], param: str, value: str) -> bool:
    """Whether ``resource`` satisfies one search parameter (comma-separated values are OR-ed)."""
    name = param.split(":", 1)[0]
    if name in IGNORED:
        return True
    values = _split(value)
    if name in REFERENCE_PARAMS:
        wanted = {v if "/" in v else f"Patient/{v}" for v in values}
        refs = [resource.get(e) for e in REFERENCE_PARAMS[name]]
        return any(isinstance(r, Mapping) and r.get("reference") in wanted for r in refs)
    if name in TOKEN_PATHS:
        codings = [c for element in TOKEN_PATHS[name] for c in _codings(resource.get(element))]
        return any(_token(v, codings) for v in values)
    raise UnsupportedSearch(f"unknown search parameter {name!r}")


def _token(value: str, codings: list[tuple[str | None, str]]) -> bool:
    parts = re.split(r"(?<!\\)\|", value, maxsplit=1)
    if len(parts) == 1:
        return any(code == _unescape(parts[0]) for _, code in codings)
    system, code = _unescape(parts[0]) or None, _unescape(parts[1])
    return any(c == code and s == system for s, c in codings)


def _codings(element: object) -> list[tuple[str | None, str]]:
    """(system, code) pairs of a CodeableConcept, a list of them, or a plain code (``status``)."""
    if isinstance(element, str):
        return [(None, element)]
    concepts = element if isinstance(element, list) else [element]
    out: list[tuple[str | None, str]] = []
    for concept in concepts:
        for coding in (concept.get("coding") or []) if isinstance(concept, Mapping) else []:
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                system = coding.get("system")
                out.append((system if isinstance(system, str) else None, coding["code"]))
    return out


def _split(value: str) -> list[str]:
    return re.split(r"(?<!\\),", value)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def prefetch_for(
    resources: Iterable[Mapping[str, Any]],
    templates: Mapping[str, str] | None = None,
    patient_id: str | None = None,
) -> dict[str, Any]:
    """A service's prefetch as an EHR sends it: each template run against the patient's resources
    (``tools.local_search``, FHIR token search). Default templates: the hip-weakness service's, generic
    profile. The patient is the Patient among ``resources`` unless ``patient_id`` is given."""
    items = list(resources)
    if patient_id is None:
        patient_id = next((str(r["id"]) for r in items if r.get("resourceType") == "Patient"), "unknown")
    context = {"patientId": patient_id, "userId": "Practitioner/example"}
    prefetch: dict[str, Any] = {}
    for key, template in (templates or default_templates()).items():
        relative = render(template, context)
        assert relative is not None, template
        found = run(relative, items)
        prefetch[key] = searchset(found) if isinstance(found, list) else found
    return prefetch


def everything_prefetch(
    resources: Iterable[Mapping[str, Any]], templates: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every resource of the patient supplied at once, each type under the first key that searches it
    (the other keys empty): an EHR that sends more than it is asked for, the reference a narrowed
    prefetch is compared with, and the benchmark's large prefetch."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(str(r["resourceType"]), []).append(r)
    prefetch: dict[str, Any] = {}
    for key, template in (templates or default_templates()).items():
        rtype = template.split("?")[0].split("/")[0]
        if "?" not in template:
            found = by_type.get(rtype)
            prefetch[key] = found[0] if found else None
        else:
            prefetch[key] = searchset(by_type.pop(rtype, []))
    return prefetch


@lru_cache(maxsize=4)
def default_templates(service_id: str = "hip-weakness", profile: str = "generic") -> dict[str, str]:
    """The prefetch templates discovery publishes for a service (shipped rules)."""
    from cds_service.catalog import load_catalog

    return load_catalog(PROJECT_ROOT / "rules", None, profile).service(service_id).prefetch
