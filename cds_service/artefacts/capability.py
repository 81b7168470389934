"""The facade's CapabilityStatement: what ``/fhir`` serves, read-only, and nothing more.

It is generated with the artefacts, so it lists exactly the resource types, search parameters and the
one operation the routes answer (``GET /fhir/metadata``). It is not exported: it describes this server,
not the knowledge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service import __version__
from cds_service.artefacts.common import CDS_HOOKS_PROFILE, FHIR_VERSION, PUBLISHER, Links, canonical

#: Search parameters every type answers (HL7's definitions), and the result parameters accepted.
SEARCH_PARAMS: dict[str, tuple[str, str]] = {
    "_id": ("token", "http://hl7.org/fhir/SearchParameter/Resource-id"),
    "url": ("uri", "http://hl7.org/fhir/SearchParameter/{type}-url"),
    "name": ("string", "http://hl7.org/fhir/SearchParameter/{type}-name"),
    "title": ("string", "http://hl7.org/fhir/SearchParameter/{type}-title"),
    "version": ("token", "http://hl7.org/fhir/SearchParameter/{type}-version"),
}
EXPAND = "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"
TYPES = ("ValueSet", "PlanDefinition", "ActivityDefinition")


def capability_statement(links: Links, generated: str, counts: Mapping[str, int]) -> dict[str, Any]:
    resources = [_resource(t, counts.get(t, 0)) for t in TYPES]
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "id": "hip-weakness-cds",
        "url": canonical("CapabilityStatement", "hip-weakness-cds"),
        "version": __version__,
        "name": "HipWeaknessCdsKnowledge",
        "title": "Hip weakness CDS service: rules and value sets as FHIR knowledge artefacts",
        "status": "active",
        "experimental": False,
        "date": generated,
        "publisher": PUBLISHER,
        "description": (
            "A read-only FHIR R4 view of the service's rules (PlanDefinition, one per CDS service), the "
            "orders its cards suggest (ActivityDefinition) and its value sets (ValueSet), generated from "
            "rules/ when the service starts. They describe the rules; the service executes them."
        ),
        "kind": "instance",
        "software": {"name": "hip-weakness-cds", "version": __version__},
        "implementation": {"description": "Knowledge artefacts of the hip weakness CDS service"},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Read and search only; JSON (application/fhir+json) only; every search "
                "answers in one page. Errors are OperationOutcomes.",
                "resource": resources,
            }
        ],
    }
    if links.base:
        statement["implementation"]["url"] = f"{links.base}/fhir"
    return statement


def _resource(resource_type: str, count: int) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "type": resource_type,
        "documentation": f"{count} resources.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": False,
        "searchParam": [
            {"name": name, "type": kind, "definition": definition.format(type=resource_type)}
            for name, (kind, definition) in SEARCH_PARAMS.items()
        ],
    }
    if resource_type == "PlanDefinition":
        resource["supportedProfile"] = [CDS_HOOKS_PROFILE]
    if resource_type == "ValueSet":
        resource["operation"] = [{"name": "expand", "definition": EXPAND}]
    return resource
