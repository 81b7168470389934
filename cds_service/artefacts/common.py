"""What every artefact builder shares: canonical URLs, computable names, links back to the service, and
validation against the fhir.resources R4B models.

Canonical URLs are identifiers, not addresses: they stay the same on every deployment (a terminology
server keys value sets on ``url|version``), under the same ``example.org`` base the project's own code
systems already use. Links that must reach *this* service (the CDS Hooks endpoint, a rule's page) are
built from ``CDS_PUBLIC_BASE_URL`` when it is set, and are relative paths otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

CANONICAL_BASE = "http://example.org/fhir/hip-weakness-cds"
PUBLISHER = "Hip weakness CDS service"
FHIR_VERSION = "4.0.1"

#: HL7 extensions and profiles the artefacts use.
CDS_HOOKS_PROFILE = "http://hl7.org/fhir/StructureDefinition/cdshooksserviceplandefinition"
CDS_HOOKS_ENDPOINT = "http://hl7.org/fhir/StructureDefinition/cqf-cdsHooksEndpoint"
FHIR_QUERY_PATTERN = "http://hl7.org/fhir/StructureDefinition/cqf-fhirQueryPattern"
VALUESET_UNCLOSED = "http://hl7.org/fhir/StructureDefinition/valueset-unclosed"

#: Our own: a code a site added (``CDS_EXTRA_VALUESETS_DIR``), and the systems naming rules and roles.
SITE_CODE = f"{CANONICAL_BASE}/StructureDefinition/site-code"
RULE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/rule"
ROLE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/action-role"
#: The media type of the rule language (``when`` trees, facts listed at ``GET /rules/vocabulary``).
RULE_LANGUAGE = "application/vnd.hip-weakness-cds.rule+json"


def canonical(resource_type: str, resource_id: str) -> str:
    return f"{CANONICAL_BASE}/{resource_type}/{resource_id}"


def computable_name(identifier: str) -> str:
    """``hip-weakness-finding`` -> ``HipWeaknessFinding`` (FHIR names start with a capital letter)."""
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", identifier) if part)
    return name if name[:1].isalpha() else f"X{name}"


@dataclass(frozen=True)
class Links:
    """Where this service is reached: ``base`` is ``CDS_PUBLIC_BASE_URL`` (no trailing slash) or ``""``,
    which makes every link a path relative to wherever the service runs."""

    base: str = ""

    def endpoint(self, service_id: str) -> str:
        return f"{self.base}/cds-services/{service_id}"

    def rule_page(self, rule_id: str) -> str:
        return f"{self.base}/rules/{rule_id}"


def validate(resource: Mapping[str, Any]) -> None:
    """Read the resource through its fhir.resources R4B model: raises pydantic's ValidationError when it
    is not valid FHIR, so an artefact nobody can load is never written."""
    get_fhir_model_class(str(resource["resourceType"])).model_validate(resource)
