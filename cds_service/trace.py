"""The evaluation trace as plain JSON: every rule, fired or not, on which facts; what could not be read.

One serialiser for both readers: the explain endpoint (returned to the reviewer who sent the data, with
display texts, every condition of every rule) and the audit trail (stored; ``include_text=False`` drops
free text, which can carry PHI, keeping resource type, id, code system, code, date and value;
``compact=True`` keeps the conditions and facts of the rules that fired or matched and, for the others,
their id, version and outcome: ~4 KB a call instead of ~24 KB, written on every call).
"""

from __future__ import annotations

from typing import Any

from cds_service.engine.evaluate import Evaluation, LeafTrace, RuleResult
from cds_service.engine.records import Record


def evaluation_trace(
    evaluation: Evaluation, rules_version: str, *, include_text: bool = True, compact: bool = False
) -> dict[str, Any]:
    return {
        "today": evaluation.today.isoformat(),
        "rules_version": rules_version,
        "hip_weakness": evaluation.hip_weakness,
        "weakness_onset": evaluation.weakness_onset.iso() if evaluation.weakness_onset else None,
        "red_flag": evaluation.red_flag,
        "categories": {code: [r.rule.id for r in results] for code, results in evaluation.categories.items()},
        "suppressed": [{"category": c, "reason": why} for c, why in evaluation.suppressed],
        "rules": [
            rule_trace(r, include_text) if not compact or r.matched else rule_outcome(r)
            for r in evaluation.results
        ],
        "unreadable": [
            {
                "resource": u.ref(),
                "problem": u.problem,
                "valuesets": sorted(u.valuesets),
                "could_hide_red_flag": any(n.ref == u.ref() and n.red_flag for n in evaluation.notes),
            }
            for u in evaluation.unreadable
        ],
        "notes": [
            {
                "text": n.text if include_text else None,
                "resource": n.ref or None,
                "could_hide_red_flag": n.red_flag,
            }
            for n in evaluation.notes
        ],
        "other_patient_resources": evaluation.other_patient_resources,
    }


def rule_outcome(result: RuleResult) -> dict[str, Any]:
    """A rule that did not match: which one, which version, that it did not fire."""
    spec = result.rule.spec
    return {"id": spec.id, "version": spec.version, "pathway": spec.pathway, "fired": False, "matched": False}


def rule_trace(result: RuleResult, include_text: bool = True) -> dict[str, Any]:
    spec = result.rule.spec
    return {
        "id": spec.id,
        "version": spec.version,
        "pathway": spec.pathway,
        "fired": result.fired,
        "matched": result.matched,
        "recommends": list(spec.recommends),
        "facts": [fact_ref(r, include_text) for r in result.evidence],
        "leaves": [leaf_trace(leaf, include_text) for leaf in result.leaves],
    }


def leaf_trace(leaf: LeafTrace, include_text: bool = True) -> dict[str, Any]:
    value = (
        leaf.value if isinstance(leaf.value, bool | int | float) or leaf.value is None else str(leaf.value)
    )
    return {
        "label": leaf.label,
        "fact": leaf.fact,
        "params": dict(leaf.params),
        "passed": leaf.passed,
        "value": value,
        "facts": [fact_ref(r, include_text) for r in leaf.evidence],
    }


def fact_ref(record: Record, include_text: bool = True) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "resourceType": record.resource_type,
        "id": record.id,
        "system": record.code[0] if record.code else None,
        "code": record.code[1] if record.code else None,
        "date": record.date.iso() if record.date else None,
        "dateSource": record.date_source,
        "valuesets": sorted(record.valuesets),
    }
    if record.number is not None:
        ref["value"] = record.number
    if include_text:
        ref["display"] = record.display
        if record.value_text:
            ref["valueText"] = record.value_text
    return ref
