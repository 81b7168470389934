"""One PlanDefinition action per rule: trigger, identity, plain-language logic, the condition, the data it
reads, its evidence, its documentation page and the orders its card suggests.

The condition's machine-readable expression is the rule's own ``when`` tree, in the service's rule
language (``RULE_LANGUAGE``; facts and operators at ``GET /rules/vocabulary``): that is exactly what runs.
No FHIRPath or CQL is given, because none would be equivalent: the engine matches codes through system
aliases (OIDs, SNOMED edition URIs, ``https``) and ICD-10-CM spellings, reads status, negated answers and
free-text answers by ``rules/status.yaml``, dates findings relative to the weakness onset with fail-safe
rules for undated records, reads laterality from codes and body sites, and lets rules depend on each
other. An approximation would answer differently from the service, the drift this facade exists to
prevent (docs/fhir-artefacts.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from cds_service.artefacts.activities import suggested_orders
from cds_service.artefacts.common import ROLE_SYSTEM, RULE_LANGUAGE, RULE_SYSTEM, Links, canonical
from cds_service.artefacts.inputs import data_requirements
from cds_service.catalog import Catalog
from cds_service.engine.evaluate import CompiledRule
from cds_service.engine.model import Evidence

Role = Literal["entry", "card", "input"]
ACTION_TYPE = "http://terminology.hl7.org/CodeSystem/action-type"
#: HL7's ConceptMap from CDS Hooks indicator to request priority (cds-hooks-clinical-reasoning IG).
PRIORITY = {"info": "routine", "warning": "urgent", "critical": "stat"}
ROLE_TEXT: dict[Role, str] = {
    "entry": "Entry criterion: every other rule of this service counts only when it is met.",
    "card": "When it fires, this service returns its card.",
    "input": "Evaluated because a rule of this service depends on it; this service shows no card for it.",
}


def rule_action(
    catalog: Catalog,
    compiled: CompiledRule,
    role: Role,
    *,
    hook: str,
    members: frozenset[str],
    patterns: Mapping[str, list[str]],
    links: Links,
) -> dict[str, Any]:
    """The action for ``compiled`` in the plan of a service on ``hook``; ``members``: the rule ids in
    that plan (dependencies on them become ``relatedAction``)."""
    spec = compiled.spec
    policy = catalog.policy
    gated = role != "entry" and spec.pathway in policy.gated_pathways
    action: dict[str, Any] = {
        "id": spec.id,
        "title": spec.name,
        "description": f"{spec.logic.strip()}\n\n{ROLE_TEXT[role]}",
        "code": [
            {
                "coding": [
                    {"system": RULE_SYSTEM, "code": spec.id, "version": spec.version, "display": spec.name}
                ]
            },
            {"coding": [{"system": ROLE_SYSTEM, "code": role}]},
        ],
        "trigger": [{"type": "named-event", "name": hook}],
        "condition": [_condition(spec.logic, _tree(compiled), links, spec.id)],
        "documentation": [*map(_citation, spec.evidence), _page(links, spec.id)],
    }
    if gated:
        gate = {"fact": "rule", "rules": [policy.entry_rule]}
        text = (
            f"Hip weakness is documented (entry rule {policy.entry_rule}): rules/policy.yaml gates the "
            f"{spec.pathway} pathway on it."
        )
        action["condition"].append(_condition(text, gate, links, policy.entry_rule))
    if inputs := data_requirements(compiled.when, patterns):
        action["input"] = inputs
    after = sorted(d for d in compiled.depends_on if d in members)
    if gated and policy.entry_rule not in after:
        after.insert(0, policy.entry_rule)
    if after:
        action["relatedAction"] = [{"actionId": d, "relationship": "after"} for d in after]
    if role == "card":
        _suggestions(catalog, compiled, action)
    return action


def _tree(compiled: CompiledRule) -> Any:
    """The rule's ``when`` exactly as its file writes it (JSON types, no defaults added)."""
    return compiled.spec.when.model_dump(mode="json", by_alias=True, exclude_none=True)


def _condition(text: str, when: Any, links: Links, rule_id: str) -> dict[str, Any]:
    expression = {
        "description": text.strip(),
        "language": RULE_LANGUAGE,
        "expression": json.dumps(when, separators=(",", ":"), ensure_ascii=False),
        "reference": links.rule_page(rule_id),
    }
    return {"kind": "applicability", "expression": expression}


def _citation(evidence: Evidence) -> dict[str, Any]:
    """One evidence item: its label, its note and seed article if any, and its address if it has one."""
    parts = [evidence.label, evidence.note or "", f"Seed article: {evidence.seed}" if evidence.seed else ""]
    artifact: dict[str, Any] = {"type": "citation", "display": evidence.label}
    artifact["citation"] = " ".join(p.strip() for p in parts if p.strip())
    if evidence.url:
        artifact["url"] = evidence.url
    return artifact


def _page(links: Links, rule_id: str) -> dict[str, Any]:
    return {
        "type": "documentation",
        "display": f"Rule {rule_id} on the service: logic tree, codes, card text and evidence",
        "url": links.rule_page(rule_id),
    }


def _suggestions(catalog: Catalog, compiled: CompiledRule, action: dict[str, Any]) -> None:
    """The card's priority and suggestions: one order goes on the action itself, several become
    sub-actions the clinician may pick any of (the card's ``selectionBehavior: any``)."""
    spec = compiled.spec
    indicator = spec.indicator or next((catalog.category(c).indicator for c in spec.recommends), None)
    if indicator:
        action["priority"] = PRIORITY[indicator]
    orders = [_order(catalog, order_id) for order_id in suggested_orders(catalog, spec)]
    if spec.withdraw_drafts:
        orders.append(
            {
                "title": "Remove the drafted order that made the rule fire",
                "type": {"coding": [{"system": ACTION_TYPE, "code": "remove"}]},
            }
        )
    if len(orders) == 1 and "definitionCanonical" in orders[0]:
        action |= {k: v for k, v in orders[0].items() if k in ("type", "definitionCanonical")}
    elif orders:
        action["selectionBehavior"] = "any"
        action["action"] = orders


def _order(catalog: Catalog, order_id: str) -> dict[str, Any]:
    template = catalog.cards.order_templates[order_id]
    return {
        "title": template["code"].get("text", order_id),
        "type": {"coding": [{"system": ACTION_TYPE, "code": "create"}]},
        "priority": template.get("priority", "routine"),
        "definitionCanonical": canonical("ActivityDefinition", order_id),
    }
