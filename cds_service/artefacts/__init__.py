"""The rules and value sets as FHIR R4 knowledge artefacts, generated from the catalog the service runs.

``build_artefacts`` makes, from one ``Catalog``: a ValueSet per value set, an ActivityDefinition per order
a card can suggest, a PlanDefinition per CDS service (one action per rule), and the CapabilityStatement of
the read-only ``/fhir`` facade. The routes (``api/fhir.py``) and ``cds-service export-fhir`` serve the same
objects, so what is published cannot drift from what runs. They describe the rules; the service executes
them (docs/fhir-artefacts.md says what they do not carry).

Layering: this package reads the catalog and the engine's compiled rules; nothing below it imports it.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from cds_service.artefacts.activities import activity_definitions
from cds_service.artefacts.capability import capability_statement
from cds_service.artefacts.common import Links
from cds_service.artefacts.common import validate as check
from cds_service.artefacts.plans import plan_definition
from cds_service.artefacts.store import (
    FhirArtefacts,
    UnknownResource,
    UnsupportedSearch,
    searchset,
    transaction,
)
from cds_service.artefacts.valuesets import valueset
from cds_service.catalog import Catalog

__all__ = [
    "FhirArtefacts",
    "Links",
    "UnknownResource",
    "UnsupportedSearch",
    "build_artefacts",
    "fhir_datetime",
    "searchset",
    "transaction",
]


def fhir_datetime(moment: datetime) -> str:
    """A FHIR instant in UTC to the second: ``2026-11-21T09:30:00Z``."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_artefacts(
    catalog: Catalog, links: Links, generated: datetime, *, validate: bool = False
) -> FhirArtefacts:
    """Every artefact of ``catalog``. ``generated`` stamps the expansions and the CapabilityStatement.
    ``validate``: read each one back through its fhir.resources R4B model first (raises pydantic's
    ValidationError on the first invalid one); the export does, the tests check every resource."""
    stamp = fhir_datetime(generated)
    resources: list[dict[str, Any]] = [valueset(catalog, vs_id, stamp) for vs_id in catalog.valueset_files]
    resources += activity_definitions(catalog)
    resources += [plan_definition(catalog, service, links) for service in catalog.services]
    if validate:
        for resource in resources:
            check(resource)
    index = {(str(r["resourceType"]), str(r["id"])): r for r in resources}
    capability = capability_statement(links, stamp, Counter(resource_type for resource_type, _ in index))
    if validate:
        check(capability)
    return FhirArtefacts(index, capability)
