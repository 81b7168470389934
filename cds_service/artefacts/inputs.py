"""What a rule reads, as FHIR DataRequirements: resource type and value set, from its compiled facts.

Each requirement carries, as a ``cqf-fhirQueryPattern`` extension, the service's prefetch template that
fetches that resource type (read through ``Service.prefetch`` only, however those templates are
computed), which is how the CDS Hooks service PlanDefinition profile says where the data comes from. A
draft order comes in the hook's ``context.draftOrders``, not from a query, so it has no pattern.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cds_service.artefacts.common import FHIR_QUERY_PATTERN, canonical
from cds_service.engine.evaluate import CompiledLeaf, CompiledNode

_OBSERVATION_FACTS = ("coded_value", "latest_score", "score_decline", "quantity", "quantity_drop_percent")
_TYPE = re.compile(r"^\s*([A-Z][A-Za-z]+)(?=[/?]|$)")


def query_patterns(prefetch: Mapping[str, str]) -> dict[str, list[str]]:
    """Resource type -> the prefetch templates that read it (``Condition?patient=...`` -> Condition)."""
    patterns: dict[str, list[str]] = {}
    for template in prefetch.values():
        match = _TYPE.match(template)
        if match:
            patterns.setdefault(match.group(1), []).append(template)
    return patterns


def data_requirements(when: CompiledNode, patterns: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    """One DataRequirement per (resource type, filters) the rule's leaves read, in first-use order."""
    found: dict[str, dict[str, Any]] = {}
    for leaf in _leaves(when):
        for resource_type, filters in _reads(leaf):
            requirement: dict[str, Any] = {"type": resource_type}
            if resource_type in patterns:
                requirement["extension"] = [
                    {"url": FHIR_QUERY_PATTERN, "valueString": p} for p in patterns[resource_type]
                ]
            if filters:
                requirement["codeFilter"] = [
                    {"path": path, "valueSet": canonical("ValueSet", vs)} for path, vs in filters
                ]
            found.setdefault(json.dumps(requirement, sort_keys=True), requirement)
    return list(found.values())


def _leaves(node: CompiledNode) -> Iterator[CompiledLeaf]:
    if node.leaf is not None:
        yield node.leaf
    for child in node.children:
        yield from _leaves(child)


def _reads(leaf: CompiledLeaf) -> list[tuple[str, list[tuple[str, str]]]]:
    """(resource type, [(path, value set)]) pairs for one leaf; facts over other rules read nothing."""
    fact, params = leaf.spec.name, leaf.raw_params
    valuesets = params.get("valueset")
    names = [valuesets] if isinstance(valuesets, str) else list(valuesets or [])
    if fact == "finding":
        types = params.get("resource_types") or ["Condition", "Observation"]
        return [(t, [("code", vs)]) for t in types for vs in names]
    if fact in _OBSERVATION_FACTS:
        answers = [("value", str(params["answers"]))] if fact == "coded_value" else []
        return [("Observation", [("code", vs), *answers]) for vs in names]
    if fact == "medication":
        return [
            (t, [("medication", vs)]) for t in ("MedicationRequest", "MedicationStatement") for vs in names
        ]
    if fact == "draft_order":
        return [("ServiceRequest", [("code", vs)]) for vs in names]
    if fact == "age_years":
        return [("Patient", [])]
    return []  # rule, weakness_onset_days, weakness_bilateral: derived from other rules' findings
