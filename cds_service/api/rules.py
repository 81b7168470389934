"""``GET /rules``, ``GET /rules/{id}``, ``GET /valuesets/{id}``: every rule and value set, for reviewers.

Public (no credential): cards link here so clinicians can read why a card was shown.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from cds_service.api.deps import StateDep
from cds_service.engine.facts import vocabulary
from cds_service.engine.model import RuleFile, ValueSetFile
from cds_service.registry import RuleSet

router = APIRouter(tags=["Rules"])


def rule_document(ruleset: RuleSet, rule_id: str) -> dict[str, Any]:
    compiled = ruleset.rule(rule_id)
    if compiled is None:
        raise HTTPException(404, f"Unknown rule {rule_id[:64]!r}")
    spec: RuleFile = compiled.spec
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["valuesets"] = sorted(compiled.valuesets)
    doc["categories"] = [
        {
            "code": c,
            "display": ruleset.category(c).display,
            "indicator": spec.indicator or ruleset.category(c).indicator,
        }
        for c in spec.recommends
    ]
    doc["rules_version"] = ruleset.version
    return doc


@router.get("/rules", summary="All rules, their pathways and categories", operation_id="list_rules")
async def list_rules(state: StateDep) -> dict[str, Any]:
    """Every rule with id, version, pathway, plain-language logic and the categories it recommends."""
    rs = state.ruleset
    return {
        "rules_version": rs.version,
        "rules": [rule_document(rs, r.id) for r in rs.rules],
        "valuesets": [
            {"id": v.id, "version": v.version, "title": v.title, "codes": len(v.codes)}
            for v in rs.valueset_files.values()
        ],
        "categories": [c.model_dump(mode="json") for c in rs.categories.categories],
        "policy": rs.policy.model_dump(mode="json"),
    }


@router.get(
    "/rules/vocabulary", summary="Facts and operators rule files may use", operation_id="rule_vocabulary"
)
async def rule_vocabulary() -> dict[str, Any]:
    """What a rule author can write: each fact with its parameters, and the comparison operators."""
    return vocabulary()


@router.get("/rules/{rule_id}", summary="One rule in full", operation_id="get_rule")
async def get_rule(rule_id: str, state: StateDep) -> dict[str, Any]:
    """The rule's logic tree, evidence, card text, orders and value sets."""
    return rule_document(state.ruleset, rule_id)


@router.get("/valuesets/{valueset_id}", summary="One value set with its codes", operation_id="get_valueset")
async def get_valueset(valueset_id: str, state: StateDep) -> dict[str, Any]:
    """Every code (system, code or prefix, display, verification source) of the value set."""
    vs: ValueSetFile | None = state.ruleset.valueset_files.get(valueset_id)
    if vs is None:
        raise HTTPException(404, f"Unknown value set {valueset_id[:64]!r}")
    return vs.model_dump(mode="json", exclude_none=True)
